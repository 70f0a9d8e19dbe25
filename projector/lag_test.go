package projector

import (
	"log/slog"
	"testing"

	"github.com/meridian-id/meridian/region"
)

// waitSourced waits until the inbox holds as many messages as the origin.
func (w *world) waitSourced() {
	w.t.Helper()
	ctx := testCtx(w.t)
	waitFor(w.t, "sourcing", func() bool {
		o, err1 := w.js.Stream(ctx, region.OriginStream(originRegion))
		i, err2 := w.js.Stream(ctx, w.stream)
		return err1 == nil && err2 == nil && o.CachedInfo().State.Msgs == i.CachedInfo().State.Msgs
	})
}

func TestLagPerOrigin(t *testing.T) {
	w := newWorldWith(t, true)
	id := newID()
	w.append(created(id, "lag@example.org", "Lag"), grant(id, "r"))
	if _, err := w.origin.w.AppendHeartbeat(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	w.ship(w.origin)
	w.waitSourced()

	p := w.start(func(c *Config) {
		c.Origins = map[string]string{originRegion: testDomain, "us-east": "no-such-domain"}
	})
	w.sync(p)
	w.now.Add(5_000)

	var st Status
	waitFor(t, "a lag poll", func() bool {
		st = p.Status()
		return len(st.Origins) == 2 && st.Origins[0].LagEvents != nil && st.Origins[1].PollError != ""
	})
	eu, us := st.Origins[0], st.Origins[1]
	if eu.Region != originRegion || us.Region != "us-east" {
		t.Fatalf("origins %+v", st.Origins)
	}
	if *eu.LagEvents != 0 {
		t.Errorf("caught-up origin has %d events of lag", *eu.LagEvents)
	}
	if eu.LagSeconds == nil || *eu.LagSeconds != 5 {
		t.Errorf("lag seconds %v, want 5 (now − heartbeat sent_at)", eu.LagSeconds)
	}
	if eu.SourceSeq[region.GlobalZone] == 0 || eu.SourceSeq[testZone] == 0 || eu.Heartbeat == nil {
		t.Errorf("origin status %+v", eu)
	}
	if len(eu.Applied) != 2 || eu.Applied[0].Node != originRegion+"-n1" {
		t.Errorf("applied %+v", eu.Applied)
	}
	if us.LagEvents != nil || us.LagSeconds != nil {
		t.Errorf("unreachable origin reports lag %v/%v, want unknown", us.LagEvents, us.LagSeconds)
	}
	if st.InboxLastSeq == nil || *st.InboxBacklog != 0 || !st.Running {
		t.Errorf("inbox status %+v", st)
	}

	// Behind: the projector is down while the origin moves on.
	p.Close()
	w.append(grant(id, "a"), grant(id, "b"), grant(id, "c"))
	w.waitSourced()
	cfg := w.config()
	p2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	p2.lag.poll(testCtx(t), slog.New(slog.DiscardHandler))
	st = p2.Status()
	if got := st.Origins[0].LagEvents; got == nil || *got != 3 {
		t.Fatalf("lag events %v, want 3", got)
	}
	if *st.InboxBacklog != 3 {
		t.Fatalf("inbox backlog %d, want 3", *st.InboxBacklog)
	}
}
