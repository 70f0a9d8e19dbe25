package main

import (
	"bytes"
	"context"
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "768MiB", want: 768 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "1.5GiB", want: 3 << 29},
		{in: "2gib", want: 2 << 30},
		{in: "1 GiB", want: 1 << 30},
		{in: "500MB", want: 500e6},
		{in: "1TiB", want: 1 << 40},
		{in: "67108864", want: 64 << 20},
		{in: "67108864B", want: 64 << 20},
		{in: "off", want: math.MaxInt64},
		{in: "OFF", want: math.MaxInt64},
		{in: "768", wantErr: `"768" is too small: must be at least 64MiB (a number without a unit is bytes: did you mean 768MiB?)`},
		{in: "10MiB", wantErr: `"10MiB" is too small: must be at least 64MiB, or "off"`},
		{in: "0", wantErr: "too small"},
		{in: "12XB", wantErr: `"12XB": want bytes with an optional unit (B, KiB, MiB, GiB, TiB`},
		{in: "GiB", wantErr: "want bytes"},
		{in: "-1GiB", wantErr: "want bytes"},
		{in: "1..5GiB", wantErr: "want bytes"},
		{in: "NaN", wantErr: "want bytes"},
		{in: "9000000TiB", wantErr: "too large"},
		{in: "", wantErr: "want bytes"},
	} {
		got, err := parseMemoryLimit(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseMemoryLimit(%q) = %d, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseMemoryLimit(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

// A bad --memory-limit is a usage error naming the flag and the rule, on
// every command that has it, before anything starts; it leaves the
// process's limit alone.
func TestMemoryLimitFlagErrors(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--memory-limit", "12XB"}, `meridian bench: usage: --memory-limit: "12XB": want bytes with an optional unit`},
		{[]string{"bench", "--quick", "--memory-limit", "768"}, `--memory-limit: "768" is too small: must be at least 64MiB (a number without a unit is bytes: did you mean 768MiB?)`},
		{[]string{"serve", "--memory-limit", "lots"}, `meridian serve: usage: --memory-limit: "lots": want bytes`},
		{[]string{"dev", "--memory-limit", "-1GiB"}, `meridian dev: usage: --memory-limit: "-1GiB": want bytes`},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 containing %q", tc.args, code, errb.String(), tc.want)
		}
	}
	if after := debug.SetMemoryLimit(-1); after != before {
		t.Fatalf("a refused --memory-limit changed the limit from %d to %d", before, after)
	}
}

// The flag wins over GOMEMLIMIT, which wins over the command's default;
// without any, the limit is left as it is.
func TestApplyMemoryLimitPrecedence(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	for _, tc := range []struct {
		name, flag, env string
		def             int64
		start, want     int64
	}{
		{name: "flag", flag: "768MiB", def: 1 << 30, start: math.MaxInt64, want: 768 << 20},
		{name: "flag over GOMEMLIMIT", flag: "off", env: "512MiB", def: 1 << 30, start: 512 << 20, want: math.MaxInt64},
		{name: "GOMEMLIMIT over default", env: "512MiB", def: 1 << 30, start: 512 << 20, want: 512 << 20},
		{name: "default", def: 1 << 30, start: math.MaxInt64, want: 1 << 30},
		{name: "no default", def: -1, start: math.MaxInt64, want: math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tc.env)
			debug.SetMemoryLimit(tc.start) // what the runtime took from GOMEMLIMIT at start
			got, err := applyMemoryLimit(tc.flag, tc.def)
			if err != nil || got != tc.want || debug.SetMemoryLimit(-1) != tc.want {
				t.Fatalf("applyMemoryLimit(%q, %d) with GOMEMLIMIT=%q = %d, %v (runtime %d); want %d", tc.flag, tc.def, tc.env, got, err, debug.SetMemoryLimit(-1), tc.want)
			}
		})
	}
}
