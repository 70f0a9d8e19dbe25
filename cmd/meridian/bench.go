package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/meridian-id/meridian/bench"
)

func init() {
	register("bench", "measure the backbone beside the raw NATS and Pebble operations beneath it", runBench)
}

// benchFlags maps bench.Config fields to the flags that set them, so that a
// bad value is reported under the flag's name.
var benchFlags = map[string]string{"Events": "--events", "Payload": "--payload"}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", stderr)
	events := fs.Int("events", bench.DefaultEvents, fmt.Sprintf("operations per repetition of each throughput measurement (%d..%d; default with --quick: %d)", bench.MinEvents, bench.MaxEvents, bench.QuickEvents))
	payload := fs.Int("payload", bench.DefaultPayload, fmt.Sprintf("bytes per record and raw message (%d..%d)", bench.MinPayload, bench.MaxPayload))
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	quick := fs.Bool("quick", false, "a CI-sized smoke run (a few seconds)")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	profileDir := fs.String("profile-dir", "", "write a CPU and a heap profile of each measurement step into `dir` (go tool pprof)")
	memoryLimit := memoryLimitFlag(fs, "1GiB")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := applyMemoryLimit(*memoryLimit, benchDefaultMemoryLimit); err != nil {
		return err
	}
	cfg := bench.Config{Events: *events, Payload: *payload, Quick: *quick, ProfileDir: *profileDir}
	if *quick && !flagSet(fs, "events") {
		cfg.Events = 0 // the quick default
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	if *profileDir != "" {
		if err := os.MkdirAll(*profileDir, 0o755); err != nil {
			return fmt.Errorf("--profile-dir: %w", err)
		}
	}
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return benchFlagError(err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(res)
	}
	return res.WriteTable(stdout)
}

// benchFlagError turns the *bench.ConfigErrors about flags' fields into a
// usage error naming each flag.
func benchFlagError(err error) error {
	var msgs []string
	for _, e := range flatten(err) {
		var ce *bench.ConfigError
		if errors.As(e, &ce) {
			if name, ok := benchFlags[ce.Field]; ok {
				msgs = append(msgs, name+": "+ce.Rule)
			}
		}
	}
	if len(msgs) == 0 {
		return err
	}
	return fmt.Errorf("%w: %s", errUsage, strings.Join(msgs, "; "))
}

// flatten lists the errors joined in err (err itself if none are).
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
