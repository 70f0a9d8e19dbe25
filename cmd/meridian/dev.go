package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/meridian-id/meridian/cluster"
)

func init() {
	register("dev", "run three regions (us-east, eu-west, eu-central) on this machine", runDev)
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev", stderr)
	dataDir := fs.String("data", "data/dev", "data `dir`; a restart with the same dir resumes")
	wanDelay := fs.Duration("wan-delay", 0, "one-way delay between regions, e.g. 35ms (simulated in userspace)")
	httpPort := fs.Int("http-port", 7401, "HTTP port of us-east; eu-west and eu-central use the next two (0: let the OS choose)")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	memoryLimit := memoryLimitFlag(fs, "none")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := applyMemoryLimit(*memoryLimit, -1); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return fmt.Errorf("%w: --log-level: %v", errUsage, err)
	}
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := cluster.Start(startCtx, cluster.Config{
		Dir:          *dataDir,
		WANDelay:     *wanDelay,
		HTTPBasePort: *httpPort,
		Logger:       logger,
	})
	if err != nil {
		return err
	}
	for _, r := range cluster.Regions {
		mountMetrics(c.Node(r))
	}
	endpoints := filepath.Join(*dataDir, "endpoints.json")
	if err := c.WriteEndpoints(endpoints); err != nil {
		c.Close()
		return fmt.Errorf("write %s: %w", endpoints, err)
	}
	eps := c.Endpoints()
	fmt.Fprintf(stdout, "meridian dev: three regions running (data in %s", *dataDir)
	if *wanDelay > 0 {
		fmt.Fprintf(stdout, ", %s one-way between regions", *wanDelay)
	}
	fmt.Fprintln(stdout, ")")
	for _, r := range cluster.Regions {
		ep := eps[r]
		fmt.Fprintf(stdout, "  %-10s zone %-2s  http %-24s nats %s (domain %s)\n", r, ep.Zone, ep.HTTP, ep.NATS, ep.JetStream)
	}
	fmt.Fprintf(stdout, "endpoints written to %s\n\ntry:\n", endpoints)
	eu, euc := eps[cluster.Regions[1]].HTTP, eps[cluster.Regions[2]].HTTP
	fmt.Fprintf(stdout, `  curl -s -X POST %s/v1/events -H 'Content-Type: application/json' \
    -d '{"identityId":"0193a1b2-0000-7000-8000-000000000001","homeRegion":"eu-west","identityCreated":{"homeRegion":"eu-west","traits":{"email":"ada@example.eu","name":"Ada"}}}'
  curl -s %s/v1/identities/0193a1b2-0000-7000-8000-000000000001
  curl -s %s/v1/status
`, eu, euc, euc)
	fmt.Fprintln(stdout, "\nCtrl-C stops every region cleanly.")
	<-ctx.Done()
	fmt.Fprintln(stdout, "meridian dev: shutting down")
	return c.Close()
}
