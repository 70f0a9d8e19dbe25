package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/region"
)

func TestPebbleCacheBytesConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  int64
		want int64 // after defaults
		err  string
	}{
		{name: "default", want: DefaultPebbleCacheBytes},
		{name: "explicit", set: 256 << 20, want: 256 << 20},
		{name: "least", set: 1 << 20, want: 1 << 20},
		{name: "below 1 MiB", set: 1<<20 - 1, err: "PebbleCacheBytes: must be 0 (default 67108864) or at least 1048576 (1 MiB), got 1048575"},
		{name: "negative", set: -1, err: "PebbleCacheBytes: must be 0 (default 67108864) or at least 1048576 (1 MiB), got -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{
				Region: "us-east", Policy: region.DefaultDevPolicy(), Dir: t.TempDir(),
				ZoneKeys: map[string]keystore.ZoneKey{"us": {ID: "us-1"}}, HashKey: make([]byte, 32),
				PebbleCacheBytes: tc.set,
			}
			err := cfg.validate()
			switch {
			case tc.err != "":
				if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("validate = %v, want %q", err, tc.err)
				}
			case err != nil:
				t.Fatalf("validate: %v", err)
			case cfg.PebbleCacheBytes != tc.want:
				t.Fatalf("PebbleCacheBytes = %d, want %d", cfg.PebbleCacheBytes, tc.want)
			}
		})
	}
}
