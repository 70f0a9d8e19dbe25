package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-id/meridian/region"
	"github.com/nats-io/nats.go/jetstream"
)

// Lag is measured by meridian itself, per origin, because a stalled source
// can look healthy in stream info (NATS's source lag reads 0 while it is
// stalled). Every LagInterval the projector asks only what the region's
// compiled credentials allow: its own domain, plus one request per other
// domain that carries no message data.
//
//   - seconds: now − sent_at of the newest heartbeat applied from the origin
//     (every node appends one per second; they travel like events). This is
//     end to end, and it is the signal that catches a stalled source: it
//     grows while everything else reads zero.
//   - events: for each subject zone this region receives from the origin,
//     from the LOCAL inbox stream: the origin stream sequence of the newest
//     copy of that zone's filter in the inbox (its Nats-Stream-Source
//     header) plus what NATS counts as still pending at the origin for that
//     source (StreamInfo.Sources[i].Lag), minus the origin stream sequence
//     of the last message applied. Messages of filters this region does not
//     receive sit between origin sequences, so this is an upper bound that
//     is exact at zero. NATS's count is only as fresh as its last contact
//     with the source, so the events lag is unknown, never zero, when the
//     origin does not answer the probe below, the inbox has no such source,
//     NATS reports an error for it, or NATS has not heard from it (data or
//     its idle heartbeat, every second) for sourceStaleAfter.
//   - reachability: each origin's JetStream domain is asked for its account
//     info ($JS.<domain>.API.INFO: limits and usage, no message data; the
//     only request the compiled permissions allow into another domain, see
//     region/permissions.go). It tells "origin unreachable" from "source
//     stalled" (node/watchdog.go re-establishes only the latter). Origins
//     are probed concurrently, each with its own timeout, so one that hangs
//     delays or fails none of the others.
//
// Reading other origins' streams directly is deliberately not done: the
// message-get API takes its subject filter in the payload, so permission
// to use it would let a region fetch another zone's resident records.

// sourceStaleAfter is how long NATS may go without hearing from a source
// (its sourcing consumer sends an idle heartbeat every second) before the
// source's pending count is no longer taken as the events lag.
const sourceStaleAfter = 5 * time.Second

// minPollTimeout bounds each request of a poll from below, so that a short
// LagInterval (tests) does not turn a slow answer into an outage.
const minPollTimeout = time.Second

// While a reachable origin's source is not working (NATS is setting it up,
// reports an error, or has not heard from it), the poll is repeated every
// settlingInterval instead of every LagInterval, at most settlingPolls
// times in a row: such states usually pass within moments (a source being
// set up after provisioning, or re-established by node/watchdog.go). Until
// they have lasted that long, that origin's lag keeps its previous result
// (unknown before the first): a source still being set up is not reported
// as failing, and its lag is not reported either. OriginLinks always shows
// the latest poll, so the watchdog can act on a failing source at once.
const (
	settlingInterval = 250 * time.Millisecond
	settlingPolls    = 20
)

type lagTracker struct {
	js       jetstream.JetStream
	stream   string
	zones    []string                       // GlobalZone and the region's zone
	regions  []string                       // every origin of cfg.Origins, sorted
	domains  map[string]jetstream.JetStream // by origin region, in its domain (for the probe)
	interval time.Duration
	now      func() int64
	kick     chan struct{} // RefreshLag: poll again soon

	mu struct {
		sync.Mutex
		origins map[string]originPoll
		inbox   *uint64 // inbox stream's last sequence
	}
}

// originPoll is what one poll learnt about one origin.
type originPoll struct {
	// last is, by subject zone, the origin stream's last sequence on that
	// zone's filter as far as this region can tell (see above); nil when
	// err says why the events lag is unknown.
	last map[string]uint64
	err  string
	at   int64
	link OriginLink
}

func newLagTracker(cfg Config) *lagTracker {
	l := &lagTracker{
		js: cfg.JS, stream: cfg.Stream, zones: []string{region.GlobalZone, cfg.Zone},
		regions: slices.Sorted(maps.Keys(cfg.Origins)), domains: map[string]jetstream.JetStream{},
		interval: cfg.LagInterval, now: cfg.Now, kick: make(chan struct{}, 1),
	}
	l.mu.origins = map[string]originPoll{}
	for origin, domain := range cfg.Origins {
		js, err := jetstream.NewWithDomain(cfg.JS.Conn(), domain)
		if err != nil {
			l.mu.origins[origin] = originPoll{err: err.Error(), link: OriginLink{Region: origin, ProbeError: err.Error()}}
			continue
		}
		l.domains[origin] = js
	}
	return l
}

func (l *lagTracker) run(ctx context.Context, log *slog.Logger) {
	t := time.NewTimer(0)
	defer t.Stop()
	settling := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.kick:
			settling = 0
		}
		wait := l.interval
		if l.poll(ctx, log, settling >= settlingPolls) {
			settling = 0
		} else if settling < settlingPolls {
			settling++
			wait = min(wait, settlingInterval)
		}
		t.Reset(wait)
	}
}

// RefreshLag makes the lag poll run again soon and repeat quickly while
// sources settle; node/watchdog.go calls it after re-establishing sources.
func (p *Projector) RefreshLag() {
	select {
	case p.lag.kick <- struct{}{}:
	default:
	}
}

func (l *lagTracker) timeout() time.Duration { return max(l.interval, minPollTimeout) }

// probeResult is the answer of one origin's domain.
type probeResult struct {
	err error
	at  int64
}

// poll probes every origin (concurrently, each with its own timeout) while
// it reads the local inbox, then combines both into each origin's lag. It
// reports false when a reachable origin's source is not working yet; such
// an origin's lag is only published when final is set.
func (l *lagTracker) poll(ctx context.Context, log *slog.Logger, final bool) (settled bool) {
	probes := make([]probeResult, len(l.regions))
	var wg sync.WaitGroup
	for i, origin := range l.regions {
		js, ok := l.domains[origin]
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			probes[i] = l.probe(ctx, js, origin)
		}()
	}
	inbox := l.pollInbox(ctx)
	wg.Wait()

	settled = true
	polls := map[string]originPoll{}
	held := map[string]OriginLink{} // unsettled: only the link is new
	for i, origin := range l.regions {
		if _, ok := l.domains[origin]; !ok {
			continue
		}
		p := l.combine(origin, probes[i], inbox)
		if p.err != "" && p.link.Reachable && p.link.InboxError == "" {
			settled = false
			if !final {
				held[origin] = p.link
				continue
			}
		}
		if p.err != "" && ctx.Err() == nil {
			log.Debug("projector: lag poll", "origin", origin, "err", p.err)
		}
		polls[origin] = p
	}
	if inbox.err != nil && ctx.Err() == nil {
		log.Debug("projector: lag poll of the inbox", "stream", l.stream, "err", inbox.err)
	}
	l.mu.Lock()
	l.mu.inbox = inbox.lastSeq
	maps.Copy(l.mu.origins, polls)
	for origin, link := range held {
		p := l.mu.origins[origin]
		p.link = link
		l.mu.origins[origin] = p
	}
	l.mu.Unlock()
	return settled
}

// probe asks the origin's domain for its account info.
func (l *lagTracker) probe(ctx context.Context, js jetstream.JetStream, origin string) probeResult {
	ctx, cancel := context.WithTimeout(ctx, l.timeout())
	defer cancel()
	_, err := js.AccountInfo(ctx)
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		// What the client makes of "no responders": nobody in that domain
		// is reachable from here.
		err = fmt.Errorf("no JetStream answers in the domain of %s: %w", origin, err)
	}
	return probeResult{err: err, at: l.now()}
}

// inboxPoll is what the local inbox said.
type inboxPoll struct {
	err     error
	lastSeq *uint64
	sources map[originZone]*jetstream.StreamSourceInfo
	// newest is, per (origin, zone), the origin stream sequence of the
	// newest copy in the inbox (0 when there is none yet).
	newest    map[originZone]uint64
	newestErr map[originZone]error
}

func (l *lagTracker) pollInbox(ctx context.Context) inboxPoll {
	ctx, cancel := context.WithTimeout(ctx, l.timeout())
	defer cancel()
	s, err := l.js.Stream(ctx, l.stream)
	if err != nil {
		return inboxPoll{err: fmt.Errorf("inbox %s: %w", l.stream, err)}
	}
	info := s.CachedInfo()
	last := info.State.LastSeq
	ip := inboxPoll{
		lastSeq: &last, sources: map[originZone]*jetstream.StreamSourceInfo{},
		newest: map[originZone]uint64{}, newestErr: map[originZone]error{},
	}
	for _, si := range info.Sources {
		if oz, ok := l.sourceOf(si); ok {
			ip.sources[oz] = si
		}
	}
	for _, oz := range slices.SortedFunc(maps.Keys(ip.sources), cmpOriginZone) {
		filter := region.ZoneFilter(oz.origin, oz.zone)
		m, err := s.GetLastMsgForSubject(ctx, filter)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			ip.newest[oz] = 0
		case err != nil:
			ip.newestErr[oz] = fmt.Errorf("newest copy of %s in %s: %w", filter, l.stream, err)
		default:
			stream, seq := parseSource(firstHeader(m.Header, SourceHeader))
			if stream != region.OriginStream(oz.origin) {
				// Not a sourced copy (or from elsewhere): it tells nothing
				// about the origin stream.
				seq = 0
			}
			ip.newest[oz] = seq
		}
	}
	return ip
}

// sourceOf names the (origin, zone) an inbox source copies, if it is one of
// the filters this region receives from a known origin.
func (l *lagTracker) sourceOf(si *jetstream.StreamSourceInfo) (originZone, bool) {
	for _, origin := range l.regions {
		if si.Name != region.OriginStream(origin) {
			continue
		}
		for _, zone := range l.zones {
			if si.FilterSubject == region.ZoneFilter(origin, zone) {
				return originZone{origin: origin, zone: zone}, true
			}
		}
	}
	return originZone{}, false
}

func cmpOriginZone(a, b originZone) int {
	if c := strings.Compare(a.origin, b.origin); c != 0 {
		return c
	}
	return strings.Compare(a.zone, b.zone)
}

// combine makes one origin's poll out of its probe and the inbox's view.
func (l *lagTracker) combine(origin string, probe probeResult, inbox inboxPoll) originPoll {
	now := l.now()
	link := OriginLink{Region: origin, Reachable: probe.err == nil, ProbedAt: probe.at, InboxPolledAt: now}
	var why []string
	if probe.err != nil {
		link.ProbeError = probe.err.Error()
		why = append(why, "origin unreachable: "+link.ProbeError)
	}
	if inbox.err != nil {
		link.InboxError = inbox.err.Error()
		why = append(why, link.InboxError)
		return originPoll{err: strings.Join(why, "; "), at: now, link: link}
	}
	last := map[string]uint64{}
	for _, zone := range l.zones {
		oz := originZone{origin: origin, zone: zone}
		filter := region.ZoneFilter(origin, zone)
		si, ok := inbox.sources[oz]
		if !ok {
			why = append(why, fmt.Sprintf("inbox %s has no source %s", l.stream, filter))
			continue
		}
		sl := SourceLink{Zone: zone, Filter: filter, Lag: si.Lag, Active: si.Active}
		if si.Error != nil {
			sl.Error = si.Error.Error()
		}
		link.Sources = append(link.Sources, sl)
		switch {
		case sl.Error != "":
			why = append(why, fmt.Sprintf("source %s: %s", filter, sl.Error))
		case si.Active < 0:
			why = append(why, fmt.Sprintf("source %s: NATS has not heard from it yet", filter))
		case si.Active > sourceStaleAfter:
			why = append(why, fmt.Sprintf("source %s: NATS has not heard from it for %s", filter, si.Active.Round(time.Second)))
		case inbox.newestErr[oz] != nil:
			why = append(why, inbox.newestErr[oz].Error())
		default:
			last[zone] = inbox.newest[oz] + si.Lag
		}
	}
	if len(why) > 0 {
		return originPoll{err: strings.Join(why, "; "), at: now, link: link}
	}
	return originPoll{last: last, at: now, link: link}
}

func (l *lagTracker) snapshot() (map[string]originPoll, *uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.mu.origins), l.mu.inbox
}

// OriginLink is what the last lag poll learnt about reaching one origin and
// the inbox's sources of it (node/watchdog.go acts on it).
type OriginLink struct {
	Region string `json:"region"`
	// Reachable: the origin's JetStream domain answered the probe sent at
	// ProbedAt (unix ms); ProbeError says why not.
	Reachable  bool   `json:"reachable"`
	ProbeError string `json:"probe_error,omitempty"`
	ProbedAt   int64  `json:"probed_at_unix_ms,omitempty"`
	// Sources are the inbox's sources of this origin as NATS reported them
	// at InboxPolledAt, by subject zone; InboxError is set when the inbox
	// could not be read.
	Sources       []SourceLink `json:"sources,omitempty"`
	InboxError    string       `json:"inbox_error,omitempty"`
	InboxPolledAt int64        `json:"inbox_polled_at_unix_ms,omitempty"`
}

// SourceLink is one inbox source as NATS reported it.
type SourceLink struct {
	Zone   string `json:"zone"`
	Filter string `json:"filter"`
	// Lag is NATS's count of the source's messages not yet copied, as of
	// its last contact with the source.
	Lag uint64 `json:"lag"`
	// Active is how long ago NATS last heard from the source (data or idle
	// heartbeat); negative when never.
	Active time.Duration `json:"active_ns"`
	Error  string        `json:"error,omitempty"`
}

// OriginLinks returns, per origin (sorted), what the last lag poll learnt
// about reaching it; empty before the first poll.
func (p *Projector) OriginLinks() []OriginLink {
	polls, _ := p.lag.snapshot()
	out := make([]OriginLink, 0, len(polls))
	for _, origin := range slices.Sorted(maps.Keys(polls)) {
		link := polls[origin].link
		link.Region = origin
		link.Sources = slices.Clone(link.Sources)
		out = append(out, link)
	}
	return out
}
