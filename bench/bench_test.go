package bench_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/bench"
)

// TestQuick runs the CI smoke benchmark in process and checks what CI
// checks of `meridian bench --quick --json`: one JSON object holding every
// field of the contract, none of them zero. Figures are not
// asserted (speed targets are read from the output, never timed in tests).
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three regions and runs every measurement; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.Run(ctx, bench.Config{Quick: true, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"append_per_s", "raw_pebble_sync_per_s", "ship_per_s", "raw_js_publish_msgid_per_s",
		"e2e_per_s", "raw_sourcing_per_s", "e2e_p50_ms", "e2e_p99_ms",
		"raw_sourcing_p50_ms", "raw_sourcing_p99_ms", "replay_per_s", "raw_consume_per_s",
		"get_p50_us", "get_p99_us", "peak_rss_mb",
	}
	for _, name := range want {
		v, ok := obj[name].(float64)
		switch {
		case !ok:
			t.Errorf("%s: missing or not a number in %s", name, b)
		case v <= 0:
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	if n := res.Numbers(); len(n) != len(want) {
		t.Errorf("Numbers() has %d fields, the contract %d", len(n), len(want))
	}
	for _, f := range []string{"append_ratio", "ship_ratio", "e2e_ratio", "e2e_p99_excess_ms", "replay_ratio", "cores", "events", "payload", "go_version", "date"} {
		if _, ok := obj[f]; !ok {
			t.Errorf("%s: missing", f)
		}
	}
	if res.E2EDefinition != "applied" {
		t.Errorf("e2e_definition = %q, want applied", res.E2EDefinition)
	}
	var table strings.Builder
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "append") {
		t.Errorf("table lacks the append row:\n%s", table.String())
	}
}

// TestConfigErrors: every bad value is refused with an error naming its
// field, before anything starts.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   bench.Config
		field string
	}{
		{"events negative", bench.Config{Events: -1}, "Events"},
		{"events too few", bench.Config{Events: bench.MinEvents - 1}, "Events"},
		{"payload too small", bench.Config{Payload: 10}, "Payload"},
		{"payload too large", bench.Config{Payload: bench.MaxPayload + 1}, "Payload"},
		{"reps below three", bench.Config{Reps: 2}, "Reps"},
		{"rate negative", bench.Config{Rate: -5}, "Rate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bench.Run(context.Background(), tc.cfg)
			var ce *bench.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("err = %v, want a *ConfigError about %s", err, tc.field)
			}
			if !errors.Is(err, bench.ErrInvalidConfig) {
				t.Errorf("err does not wrap ErrInvalidConfig: %v", err)
			}
		})
	}
}
