package cluster

import (
	"context"
	"strings"
	"testing"
)

// Bad values are refused before anything starts, naming the field and
// the rule.
func TestStartConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no dir", Config{}, "cluster: Config.Dir: required"},
		{"negative WAN delay", Config{WANDelay: -1}, "cluster: Config.WANDelay: must not be negative"},
		{"bad HTTP port", Config{HTTPBasePort: 70000}, "cluster: Config.HTTPBasePort: must be 0 or a port below"},
		{"pebble cache below 1 MiB", Config{PebbleCacheBytes: 4096}, "cluster: Config.PebbleCacheBytes: must be 0 (the node's default, 67108864) or at least 1 MiB, got 4096"},
		{"negative pebble cache", Config{PebbleCacheBytes: -1}, "cluster: Config.PebbleCacheBytes: must be 0 (the node's default, 67108864) or at least 1 MiB, got -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name != "no dir" {
				tc.cfg.Dir = t.TempDir()
			}
			c, err := Start(context.Background(), tc.cfg)
			if err == nil {
				c.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
