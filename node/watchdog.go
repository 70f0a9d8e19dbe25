package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/projector"
	"github.com/meridian-id/meridian/region"
)

// The source watchdog re-establishes the inbox sources of an origin that
// stopped moving. NATS sets up a failed source's consumer again only after
// 10 s times its failures (up to 2 min), and a source can stall while its
// lag reads 0; meridian's own signal is the heartbeat every origin node
// writes each second. Each tick the watchdog reads the projector's view of
// every origin: the age of the newest heartbeat applied from it (end to
// end), whether its JetStream domain answered the last probe, and what
// NATS says of the inbox's sources of it. An origin whose heartbeats are
// older than SourceStallAfter, or whose source NATS reports failing, while
// its domain answers, gets its sources removed from the inbox and added
// back: NATS then sets them up at once, each resuming from the position the
// inbox stored for it (nothing is skipped; repeats fall in the duplicate
// window). Attempts on one origin are SourceStallAfter apart, doubling up
// to 8× while they bring no new heartbeat (an origin whose node is down
// but whose NATS answers looks stalled too, and needs no churn).
//
// An unreachable origin is left to NATS: there is nothing to reconnect to.
// Nor do old heartbeats count while the projector is behind on the inbox or
// not consuming it: they may then be waiting in the inbox, and the sources
// are not the problem.

// watchMaxBackoff caps the doubling of the spacing between attempts, in
// multiples of SourceStallAfter.
const watchMaxBackoff = 8

// sourceWatchdog is the watchdog's state, kept on the Node for Status.
type sourceWatchdog struct {
	mu struct {
		sync.Mutex
		// started is when the watchdog first saw replication running: the
		// baseline of an origin never heard from.
		started int64
		origins map[string]*originWatch
	}
}

// originWatch is the watchdog's memory of one origin.
type originWatch struct {
	next        int64 // unix ms before which no attempt is made
	backoff     int64 // ms until the attempt after the next one
	lastAttempt int64 // unix ms; 0 when never
	count       uint64
}

// watchOrigin is what a tick knows about one origin (from the projector).
type watchOrigin struct {
	region string
	// heartbeatSent and heartbeatApplied are the newest heartbeat's
	// sent_at (origin clock) and applied_at (local clock); 0 when none.
	heartbeatSent, heartbeatApplied int64
	// reachable: the last probe, at probedAt, was answered.
	reachable bool
	probedAt  int64
	// sourceErr is an error NATS reports for one of the origin's sources.
	sourceErr string
}

// watchTick is everything one decision needs.
type watchTick struct {
	now       int64
	threshold int64 // ms
	// consuming: the projector runs and is not behind on the inbox.
	consuming bool
	origins   []watchOrigin
}

// watchAction is one origin to re-establish, and why.
type watchAction struct {
	origin string
	reason string
}

// decideLocked is the watchdog's pure core: which origins to re-establish
// now. It updates the per-origin spacing; the caller counts successes.
func (w *sourceWatchdog) decideLocked(t watchTick) []watchAction {
	if w.mu.origins == nil {
		w.mu.origins = map[string]*originWatch{}
	}
	if w.mu.started == 0 {
		w.mu.started = t.now
	}
	var out []watchAction
	for _, o := range t.origins {
		ow := w.mu.origins[o.region]
		if ow == nil {
			ow = &originWatch{backoff: t.threshold}
			w.mu.origins[o.region] = ow
		}
		if ow.lastAttempt > 0 && o.heartbeatApplied > ow.lastAttempt {
			// The last attempt (or NATS) brought the origin back.
			ow.backoff = t.threshold
		}
		age := t.now - max(o.heartbeatSent, w.mu.started)
		var reason string
		switch {
		case !o.reachable || t.now-o.probedAt > t.threshold:
			continue // unreachable, or not known to be reachable now
		case o.sourceErr != "":
			reason = "NATS reports the source failing: " + o.sourceErr
		case !t.consuming:
			continue
		case age > t.threshold:
			reason = fmt.Sprintf("no heartbeat for %s", time.Duration(age)*time.Millisecond)
		default:
			continue
		}
		if t.now < ow.next {
			continue
		}
		ow.lastAttempt = t.now
		ow.next = t.now + ow.backoff
		ow.backoff = min(2*ow.backoff, watchMaxBackoff*t.threshold)
		out = append(out, watchAction{origin: o.region, reason: reason})
	}
	return out
}

// counted records a successful re-establishment.
func (w *sourceWatchdog) counted(origin string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ow := w.mu.origins[origin]; ow != nil {
		ow.count++
	}
}

// counts returns the re-establishments per origin seen so far.
func (w *sourceWatchdog) counts() map[string]uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]uint64, len(w.mu.origins))
	for origin, ow := range w.mu.origins {
		out[origin] = ow.count
	}
	return out
}

// watchSources runs the watchdog until ctx ends.
func (n *Node) watchSources(ctx context.Context) {
	tick := min(max(n.cfg.SourceStallAfter/4, 100*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ready, _ := n.Ready(); !ready {
			continue
		}
		in := n.watchInput()
		n.watchdog.mu.Lock()
		actions := n.watchdog.decideLocked(in)
		n.watchdog.mu.Unlock()
		for _, a := range actions {
			if err := n.reestablishSources(ctx, a.origin); err != nil {
				if ctx.Err() == nil {
					n.cfg.Logger.Error("re-establishing inbox sources of an origin failed",
						"region", n.cfg.Region, "origin", a.origin, "reason", a.reason, "err", err)
				}
				continue
			}
			n.watchdog.counted(a.origin)
			n.proj.RefreshLag() // show the sources settling, not the last poll's failure
			n.cfg.Logger.Warn("re-established inbox sources of an origin",
				"region", n.cfg.Region, "origin", a.origin, "reason", a.reason)
		}
	}
}

// watchInput reads the projector's view of every origin.
func (n *Node) watchInput() watchTick {
	st := n.proj.Status()
	in := watchTick{
		now:       n.cfg.Now(),
		threshold: n.cfg.SourceStallAfter.Milliseconds(),
		consuming: st.Running && st.InboxBacklog != nil && *st.InboxBacklog == 0,
	}
	hbs := map[string]*projector.Heartbeat{}
	for _, o := range st.Origins {
		hbs[o.Region] = o.Heartbeat
	}
	for _, l := range n.proj.OriginLinks() {
		if len(inboxSourcesOf(n.plan, l.Region)) == 0 {
			continue // not an origin this inbox sources
		}
		wo := watchOrigin{region: l.Region, reachable: l.Reachable && l.InboxError == "", probedAt: l.ProbedAt}
		if hb := hbs[l.Region]; hb != nil {
			wo.heartbeatSent, wo.heartbeatApplied = hb.SentAtUnixMs, hb.AppliedAtUnixMs
		}
		for _, s := range l.Sources {
			if s.Error != "" {
				wo.sourceErr = s.Filter + ": " + s.Error
				break
			}
		}
		in.origins = append(in.origins, wo)
	}
	return in
}

// inboxSourcesOf returns the plan's inbox sources of one origin.
func inboxSourcesOf(plan *region.RegionPlan, origin string) []*jetstream.StreamSource {
	var out []*jetstream.StreamSource
	for _, s := range plan.Inbox.Sources {
		if s.Name == region.OriginStream(origin) {
			c := *s
			if s.External != nil {
				ext := *s.External
				c.External = &ext
			}
			out = append(out, &c)
		}
	}
	return out
}

// reestablishSources updates the region's inbox without the origin's
// sources, then with them again (as compiled), so that NATS sets them up
// afresh. When they are the inbox's only sources they are cycled one at a
// time, because a stream left with no sources and no subjects would be
// given a subject of its own.
func (n *Node) reestablishSources(ctx context.Context, origin string) error {
	want := inboxSourcesOf(n.plan, origin)
	if len(want) == 0 {
		return fmt.Errorf("node: inbox %s sources nothing from %s", n.plan.Inbox.Name, origin)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := retryOffline(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return n.js.Stream(ctx, n.plan.Inbox.Name)
	})
	if err != nil {
		return fmt.Errorf("node: inbox %s: %w", n.plan.Inbox.Name, err)
	}
	cfg := s.CachedInfo().Config
	meta := map[string]string{}
	for k, v := range cfg.Metadata {
		// The server owns _nats.* and derives it again (as provisioning does).
		if !strings.HasPrefix(k, "_nats.") {
			meta[k] = v
		}
	}
	cfg.Metadata = meta
	var keep []*jetstream.StreamSource
	for _, src := range cfg.Sources {
		if src.Name != region.OriginStream(origin) {
			keep = append(keep, src)
			continue
		}
		// Keep where a re-seed set the source to start in a recreated
		// origin (ops/reseedcontinue.go): NATS uses it when it finds the
		// origin recreated, which would otherwise mean from its start.
		for _, w := range want {
			if w.FilterSubject == src.FilterSubject {
				w.OptStartSeq = src.OptStartSeq
			}
		}
	}
	full := append(slices.Clone(keep), want...)
	var steps [][]*jetstream.StreamSource
	if len(keep) > 0 {
		steps = [][]*jetstream.StreamSource{keep, full}
	} else {
		for i := range want {
			steps = append(steps, slices.Delete(slices.Clone(full), i, i+1), full)
		}
	}
	for _, sources := range steps {
		cfg.Sources = sources
		if _, err := retryOffline(ctx, func(ctx context.Context) (jetstream.Stream, error) {
			return n.js.UpdateStream(ctx, cfg)
		}); err != nil {
			return fmt.Errorf("node: update %s (%d sources): %w", cfg.Name, len(sources), err)
		}
	}
	return nil
}

// codeStreamOffline is the server's "stream is offline" (10118), answered
// for a while after a restart.
const codeStreamOffline jetstream.ErrorCode = 10118

// retryOffline calls fn until it succeeds, fails for another reason than
// the stream being offline or nobody answering, or ctx ends, backing off
// from 50 ms to 1 s.
func retryOffline[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	wait := 50 * time.Millisecond
	for {
		v, err := fn(ctx)
		var jerr jetstream.JetStreamError
		offline := errors.As(err, &jerr) && jerr.APIError() != nil && jerr.APIError().ErrorCode == codeStreamOffline
		if err == nil || !(offline || errors.Is(err, nats.ErrNoResponders)) {
			return v, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}
