package projector

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/region"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

func linkOf(t *testing.T, p *Projector, origin string) OriginLink {
	t.Helper()
	for _, l := range p.OriginLinks() {
		if l.Region == origin {
			return l
		}
	}
	t.Fatalf("no link for origin %s in %+v", origin, p.OriginLinks())
	return OriginLink{}
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
	if *eu.LagEvents != 0 || eu.PollError != "" {
		t.Errorf("caught-up origin has %d events of lag (poll error %q)", *eu.LagEvents, eu.PollError)
	}
	if eu.LagSeconds == nil || *eu.LagSeconds != 5 {
		t.Errorf("lag seconds %v, want 5 (now − heartbeat sent_at)", eu.LagSeconds)
	}
	if eu.SourceSeq[region.GlobalZone] == 0 || eu.SourceSeq[testZone] == 0 || eu.Heartbeat == nil {
		t.Errorf("origin status %+v", eu)
	}
	if eu.OriginLastSeq[region.GlobalZone] != eu.SourceSeq[region.GlobalZone] || eu.OriginLastSeq[testZone] != eu.SourceSeq[testZone] {
		t.Errorf("origin last seqs %v, want the applied %v", eu.OriginLastSeq, eu.SourceSeq)
	}
	if len(eu.Applied) != 2 || eu.Applied[0].Node != originRegion+"-n1" {
		t.Errorf("applied %+v", eu.Applied)
	}
	// An origin whose domain does not answer has unknown lag, never zero,
	// and is reported unreachable.
	if us.LagEvents != nil || us.LagSeconds != nil {
		t.Errorf("unreachable origin reports lag %v/%v, want unknown", us.LagEvents, us.LagSeconds)
	}
	if !strings.Contains(us.PollError, "origin unreachable") {
		t.Errorf("poll error of the unreachable origin: %q", us.PollError)
	}
	if st.InboxLastSeq == nil || *st.InboxBacklog != 0 || !st.Running {
		t.Errorf("inbox status %+v", st)
	}

	el, ul := linkOf(t, p, originRegion), linkOf(t, p, "us-east")
	if !el.Reachable || el.ProbeError != "" || el.ProbedAt == 0 || len(el.Sources) != 2 {
		t.Errorf("link to the reachable origin %+v", el)
	}
	for _, s := range el.Sources {
		if s.Active < 0 || s.Active > sourceStaleAfter || s.Error != "" || s.Lag != 0 {
			t.Errorf("source %+v of a caught-up origin", s)
		}
	}
	if ul.Reachable || ul.ProbeError == "" || len(ul.Sources) != 0 {
		t.Errorf("link to the unreachable origin %+v", ul)
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
	p2.lag.poll(testCtx(t), slog.New(slog.DiscardHandler), true)
	st = p2.Status()
	if got := st.Origins[0].LagEvents; got == nil || *got != 3 {
		t.Fatalf("lag events %v, want 3 (poll error %q)", got, st.Origins[0].PollError)
	}
	if *st.InboxBacklog != 3 {
		t.Fatalf("inbox backlog %d, want 3", *st.InboxBacklog)
	}
}

// An origin that never answers (a responder that swallows the requests)
// times out on its own: the origins polled with it, before or after it in
// name order, are measured in the same poll.
func TestLagHangingOriginFailsOnlyItself(t *testing.T) {
	w := newWorldWith(t, true)
	id := newID()
	w.append(created(id, "hang@example.org", "Hang"))
	w.waitSourced()

	hang, err := w.nc.Subscribe(region.DomainAPIPrefix("hanging")+".>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Unsubscribe()
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	cfg := w.config()
	cfg.LagInterval = time.Second // the timeout of every request of a poll
	cfg.Origins = map[string]string{"aa-hang": "hanging", originRegion: testDomain, "zz-hang": "hanging"}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.lag.poll(testCtx(t), slog.New(slog.DiscardHandler), true)
	st := p.Status()
	if len(st.Origins) != 3 {
		t.Fatalf("origins %+v", st.Origins)
	}
	for _, o := range st.Origins {
		switch o.Region {
		case originRegion:
			if o.LagEvents == nil || o.PollError != "" {
				t.Errorf("%s: lag %v, poll error %q; a hanging origin failed it", o.Region, o.LagEvents, o.PollError)
			}
		default:
			if o.LagEvents != nil || !strings.Contains(o.PollError, "origin unreachable") {
				t.Errorf("%s: lag %v, poll error %q; want unknown, unreachable", o.Region, o.LagEvents, o.PollError)
			}
		}
	}
}

// A source NATS cannot set up (its origin stream does not exist) has
// unknown events lag even though its origin domain answers and NATS's own
// count reads 0; so does an origin the inbox has no source for.
func TestLagBrokenSourceIsUnknown(t *testing.T) {
	w := newWorldWith(t, true)
	ctx := testCtx(t)
	s, err := w.js.Stream(ctx, w.stream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	for _, zone := range []string{region.GlobalZone, testZone} {
		cfg.Sources = append(cfg.Sources, &jetstream.StreamSource{Name: region.OriginStream("eu-north"), FilterSubject: region.ZoneFilter("eu-north", zone)})
	}
	if _, err := w.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	pc := w.config()
	pc.Origins = map[string]string{originRegion: testDomain, "eu-north": testDomain, "us-east": testDomain}
	p, err := New(pc)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Until a failing source has had time to settle, its lag keeps its
	// previous result (here: none) while the link shows the failure.
	p.lag.poll(ctx, slog.New(slog.DiscardHandler), false)
	for _, o := range p.Status().Origins {
		if o.Region == "eu-north" && (o.PolledAt != 0 || o.PollError != "" || o.LagEvents != nil) {
			t.Errorf("a settling source's origin was published: %+v", o)
		}
	}
	if l := linkOf(t, p, "eu-north"); len(l.Sources) != 2 || (l.Sources[0].Error == "" && l.Sources[0].Active >= 0) {
		t.Errorf("link %+v does not show the failing source", l)
	}
	// The update restarts the inbox's sources: wait until NATS hears from
	// the healthy ones again.
	var st Status
	waitFor(t, "the healthy origin's lag", func() bool {
		p.lag.poll(ctx, slog.New(slog.DiscardHandler), true)
		st = p.Status()
		return len(st.Origins) == 3 && st.Origins[0].Region == originRegion && st.Origins[0].LagEvents != nil
	})
	for _, o := range st.Origins {
		switch o.Region {
		case originRegion:
			if o.LagEvents == nil || *o.LagEvents != 0 {
				t.Errorf("%s: lag %v (%s), want 0", o.Region, o.LagEvents, o.PollError)
			}
		case "eu-north":
			if o.LagEvents != nil || !strings.Contains(o.PollError, "source "+region.ZoneFilter("eu-north", region.GlobalZone)) {
				t.Errorf("%s: lag %v, poll error %q; want unknown, naming the source", o.Region, o.LagEvents, o.PollError)
			}
		case "us-east":
			if o.LagEvents != nil || !strings.Contains(o.PollError, "has no source") {
				t.Errorf("%s: lag %v, poll error %q; want unknown, no source", o.Region, o.LagEvents, o.PollError)
			}
		}
	}
	if l := linkOf(t, p, "eu-north"); !l.Reachable || len(l.Sources) != 2 {
		t.Errorf("link %+v: reachable, with two sources", l)
	}
}
