package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/meridian-id/meridian/node"
	"github.com/meridian-id/meridian/region"
)

func init() {
	register("serve", "run one regional node (writer, log, shipper, projector, HTTP API)", runServe)
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	policyPath := fs.String("policy", "", "residency policy JSON `file` (required)")
	regionName := fs.String("region", "", "region this node serves (required)")
	dataDir := fs.String("data", "", "data `dir` of the node (required)")
	natsURL := fs.String("nats", "", "NATS URL of the region (default: the policy's nats_url)")
	creds := fs.String("creds", "", "NATS credentials `file` (optional)")
	keysPath := fs.String("keys", "", "key `file` with hash_key and zone_keys (required)")
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP listen `address`")
	nodeID := fs.String("node-id", "", "node id (default: remembered in the data dir)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	keyCache := fs.Int("key-cache", 0, "identities whose data keys the key store caches in memory (0: keystore.DefaultCacheEntries; negative: no cache)")
	memoryLimit := memoryLimitFlag(fs, "none")
	pebbleCache := pebbleCacheFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cacheBytes, err := parsePebbleCache(*pebbleCache)
	if err != nil {
		return err
	}
	memLimit, err := applyMemoryLimit(*memoryLimit, -1)
	if err != nil {
		return err
	}
	for _, req := range []struct{ name, val string }{{"policy", *policyPath}, {"region", *regionName}, {"data", *dataDir}, {"keys", *keysPath}} {
		if req.val == "" {
			return fmt.Errorf("%w: --%s is required", errUsage, req.name)
		}
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return fmt.Errorf("%w: --log-level: %v", errUsage, err)
	}
	b, err := os.ReadFile(*policyPath)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	policy, err := region.LoadPolicyJSON(b)
	if err != nil {
		return fmt.Errorf("policy %s: %w", *policyPath, err)
	}
	sec, err := loadKeyFile(*keysPath)
	if err != nil {
		return err
	}
	var opts []nats.Option
	if *creds != "" {
		opts = append(opts, nats.UserCredentials(*creds))
	}
	n, err := node.Start(ctx, node.Config{
		Region:      *regionName,
		Policy:      policy,
		Dir:         *dataDir,
		NodeID:      *nodeID,
		NATSURL:     *natsURL,
		NATSOptions: opts,
		HTTPAddr:    *httpAddr,
		ZoneKeys:    sec.zoneKeys,
		HashKey:     sec.hashKey,
		Logger:      logger,

		KeyCacheEntries:  *keyCache,
		PebbleCacheBytes: cacheBytes,
	})
	if err != nil {
		return err
	}
	mountMetrics(n)
	logger.Info("serving", "memory_limit", memoryLimitString(memLimit),
		"pebble_budget", fmt.Sprintf("%.0fMiB", float64(n.PebbleBudget())/(1<<20)))
	fmt.Fprintf(stdout, "meridian node %s serving region %s on %s\n", n.ID(), n.Region(), n.URL())
	<-ctx.Done()
	logger.Info("shutting down")
	return n.Close()
}
