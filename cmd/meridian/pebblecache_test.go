package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestParsePebbleCache(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "", want: 0},
		{in: "64MiB", want: 64 << 20},
		{in: "1.5GiB", want: 3 << 29},
		{in: "256 mib", want: 256 << 20},
		{in: "100MB", want: 100e6},
		{in: "1048576", want: 1 << 20},
		{in: "1MiB", want: 1 << 20},
		{in: "64", wantErr: `--pebble-cache: "64" is too small: must be at least 1MiB (a number without a unit is bytes: did you mean 64MiB?)`},
		{in: "512KiB", wantErr: `--pebble-cache: "512KiB" is too small: must be at least 1MiB`},
		{in: "0", wantErr: "too small"},
		{in: "2TiB", wantErr: `--pebble-cache: "2TiB" is not a size: want bytes with an optional unit`},
		{in: "1025GiB", wantErr: `"1025GiB" is too large: want at most 1TiB`},
		{in: "-1MiB", wantErr: "is not a size"},
		{in: "MiB", wantErr: "is not a size"},
		{in: "off", wantErr: "is not a size"},
		{in: "NaN", wantErr: "is not a size"},
	} {
		got, err := parsePebbleCache(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parsePebbleCache(%q) = %d, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parsePebbleCache(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

// A bad --pebble-cache is a usage error naming the flag and the rule,
// before anything is read or started.
func TestPebbleCacheFlagError(t *testing.T) {
	var out, errb bytes.Buffer
	args := []string{"serve", "--policy", "/nonexistent", "--region", "eu-west", "--data", t.TempDir(), "--keys", "/nonexistent", "--pebble-cache", "64"}
	code := run(context.Background(), args, &out, &errb)
	want := `meridian serve: usage: --pebble-cache: "64" is too small: must be at least 1MiB`
	if code != 2 || !strings.Contains(errb.String(), want) {
		t.Fatalf("run(%q) = %d, stderr %q; want 2 containing %q", args, code, errb.String(), want)
	}
}
