package node

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/region"
)

// The watchdog's decisions, tick by tick: threshold 2 s, the origin
// reachable and the projector consuming unless a step says otherwise.
func TestWatchdogDecide(t *testing.T) {
	const th = 2_000
	type step struct {
		now        int64
		hbSent     int64 // newest heartbeat's sent_at; 0 none
		hbApplied  int64
		unreach    bool  // last probe failed
		probedAgo  int64 // ms since the last probe (default 100)
		sourceErr  string
		notConsume bool
		want       bool // re-establish now
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"fresh heartbeats: nothing", []step{
			{now: 10_000, hbSent: 9_500, hbApplied: 9_600},
			{now: 20_000, hbSent: 19_000, hbApplied: 19_100},
		}},
		{"stalled and reachable: at once, then spaced, doubling", []step{
			{now: 1_000, hbSent: 900, hbApplied: 950},
			{now: 3_500, hbSent: 900, hbApplied: 950, want: true},
			{now: 4_000, hbSent: 900, hbApplied: 950},
			{now: 5_499, hbSent: 900, hbApplied: 950},
			{now: 5_500, hbSent: 900, hbApplied: 950, want: true},  // +2 s
			{now: 8_000, hbSent: 900, hbApplied: 950},              // next at +4 s
			{now: 9_500, hbSent: 900, hbApplied: 950, want: true},  // +4 s
			{now: 17_499, hbSent: 900, hbApplied: 950},             // next at +8 s
			{now: 17_500, hbSent: 900, hbApplied: 950, want: true}, // +8 s
		}},
		{"spacing caps at 8 thresholds", []step{
			{now: 3_000, want: true},
			{now: 5_000, want: true},
			{now: 9_000, want: true},
			{now: 17_000, want: true},
			{now: 33_000, want: true},
			{now: 48_999},
			{now: 49_000, want: true}, // +16 s = 8 × 2 s
			{now: 65_000, want: true},
		}},
		{"a heartbeat after the attempt resets the spacing", []step{
			{now: 3_000, want: true},
			{now: 5_000, want: true},                                  // next at +4 s
			{now: 5_500, hbSent: 5_400, hbApplied: 5_450},             // it worked
			{now: 9_000, hbSent: 5_400, hbApplied: 5_450, want: true}, // stalled again: +2 s spacing again
			{now: 11_000, hbSent: 5_400, hbApplied: 5_450, want: true},
		}},
		{"unreachable origin: left to NATS", []step{
			{now: 5_000, unreach: true},
			{now: 9_000, unreach: true},
			{now: 9_100, want: true},
		}},
		{"stale probe: not known to be reachable", []step{
			{now: 5_000, probedAgo: 2_001},
			{now: 5_100, want: true},
		}},
		{"projector behind or stopped: not a source problem", []step{
			{now: 5_000, notConsume: true},
			{now: 5_100, want: true},
		}},
		{"a failing source: at once, even before the threshold", []step{
			{now: 500, sourceErr: "stream not found"},
		}},
	}
	cases[len(cases)-1].steps[0].want = true
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var w sourceWatchdog
			for i, s := range c.steps {
				if s.probedAgo == 0 {
					s.probedAgo = 100
				}
				tick := watchTick{now: s.now, threshold: th, consuming: !s.notConsume, origins: []watchOrigin{{
					region: "us-east", heartbeatSent: s.hbSent, heartbeatApplied: s.hbApplied,
					reachable: !s.unreach, probedAt: s.now - s.probedAgo, sourceErr: s.sourceErr,
				}}}
				if i == 0 {
					// The watchdog's baseline for an origin never heard from
					// is its first tick; start every case at 0.
					w.mu.started = 1
				}
				w.mu.Lock()
				got := w.decideLocked(tick)
				w.mu.Unlock()
				if (len(got) == 1) != s.want || (len(got) == 1 && got[0].origin != "us-east") {
					t.Fatalf("step %d (now %d): actions %+v, want re-establish %v", i, s.now, got, s.want)
				}
			}
		})
	}
}

// Several origins are decided independently, and counts are per origin.
func TestWatchdogPerOrigin(t *testing.T) {
	var w sourceWatchdog
	w.mu.started = 1
	tick := watchTick{now: 5_000, threshold: 2_000, consuming: true, origins: []watchOrigin{
		{region: "eu-central", heartbeatSent: 4_900, heartbeatApplied: 4_950, reachable: true, probedAt: 4_900},
		{region: "eu-west", heartbeatSent: 1_000, heartbeatApplied: 1_050, reachable: true, probedAt: 4_900},
		{region: "us-east", heartbeatSent: 1_000, heartbeatApplied: 1_050, reachable: false, probedAt: 4_900},
	}}
	w.mu.Lock()
	got := w.decideLocked(tick)
	w.mu.Unlock()
	var origins []string
	for _, a := range got {
		origins = append(origins, a.origin)
	}
	if !slices.Equal(origins, []string{"eu-west"}) {
		t.Fatalf("re-establish %v, want [eu-west]", origins)
	}
	w.counted("eu-west")
	counts := w.counts()
	if counts["eu-west"] != 1 || counts["eu-central"] != 0 || counts["us-east"] != 0 || len(counts) != 3 {
		t.Fatalf("counts %v", counts)
	}
}

func TestSourceStallAfterConfig(t *testing.T) {
	base := func() Config {
		return Config{
			Region: "us-east", Policy: region.DefaultDevPolicy(), Dir: t.TempDir(),
			ZoneKeys: map[string]keystore.ZoneKey{"us": {ID: "us-1"}}, HashKey: make([]byte, 32),
		}
	}
	cases := []struct {
		name           string
		heartbeat, set time.Duration
		want           time.Duration // after defaults
		err            string
	}{
		{name: "default", want: DefaultSourceStallAfter},
		{name: "default follows slow heartbeats", heartbeat: 5 * time.Second, want: 15 * time.Second},
		{name: "explicit", heartbeat: 100 * time.Millisecond, set: 2 * time.Second, want: 2 * time.Second},
		{name: "disabled", set: -1, want: -1},
		{name: "not above the heartbeat interval", heartbeat: 2 * time.Second, set: 2 * time.Second, err: "SourceStallAfter: must exceed HeartbeatInterval"},
		{name: "heartbeats disabled, watchdog explicit", heartbeat: -1, set: time.Second, want: time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			cfg.HeartbeatInterval, cfg.SourceStallAfter = c.heartbeat, c.set
			err := cfg.validate()
			switch {
			case c.err != "":
				if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("validate = %v, want %q", err, c.err)
				}
			case err != nil:
				t.Fatalf("validate: %v", err)
			case cfg.SourceStallAfter != c.want:
				t.Fatalf("SourceStallAfter = %v, want %v", cfg.SourceStallAfter, c.want)
			}
		})
	}
}
