package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/meridian-id/meridian/region"
	"github.com/nats-io/nats.go/jetstream"
)

// Lag is measured by meridian itself, per origin, because a stalled source
// can look healthy in stream info:
//
//   - seconds: now − sent_at of the newest heartbeat applied from the origin
//     (every node appends one per second; they travel like events);
//   - events: for each subject zone this region receives from the origin,
//     the origin stream's last sequence on that zone's filter minus the
//     origin stream sequence of the last message applied from it (the
//     Nats-Stream-Source header of the sourced copy). Messages of filters
//     this region does not receive sit between those sequences, so this is
//     an upper bound that is exact at zero. The last sequences come from
//     the origin's own domain, polled every LagInterval; an origin that
//     does not answer has unknown lag, never zero.

type lagTracker struct {
	js       jetstream.JetStream
	stream   string
	zones    []string
	origins  map[string]jetstream.JetStream // by origin region, in its domain
	interval time.Duration
	now      func() int64

	mu struct {
		sync.Mutex
		origins map[string]originPoll
		inbox   *uint64 // inbox stream's last sequence
	}
}

type originPoll struct {
	last map[string]uint64 // by subject zone
	err  string
	at   int64
}

func newLagTracker(cfg Config) *lagTracker {
	l := &lagTracker{
		js: cfg.JS, stream: cfg.Stream, zones: []string{region.GlobalZone, cfg.Zone},
		origins: map[string]jetstream.JetStream{}, interval: cfg.LagInterval, now: cfg.Now,
	}
	l.mu.origins = map[string]originPoll{}
	for origin, domain := range cfg.Origins {
		js, err := jetstream.NewWithDomain(cfg.JS.Conn(), domain)
		if err != nil {
			l.mu.origins[origin] = originPoll{err: err.Error()}
			continue
		}
		l.origins[origin] = js
	}
	return l
}

func (l *lagTracker) run(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		l.poll(ctx, log)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (l *lagTracker) poll(ctx context.Context, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, l.interval)
	defer cancel()
	var inbox *uint64
	if s, err := l.js.Stream(ctx, l.stream); err == nil {
		v := s.CachedInfo().State.LastSeq
		inbox = &v
	}
	polls := map[string]originPoll{}
	for _, origin := range slices.Sorted(maps.Keys(l.origins)) {
		last, err := l.pollOrigin(ctx, l.origins[origin], origin)
		p := originPoll{last: last, at: l.now()}
		if err != nil {
			if ctx.Err() == nil {
				log.Debug("projector: lag poll", "origin", origin, "err", err)
			}
			p = originPoll{err: err.Error(), at: l.now()}
		}
		polls[origin] = p
	}
	l.mu.Lock()
	l.mu.inbox = inbox
	maps.Copy(l.mu.origins, polls)
	l.mu.Unlock()
}

func (l *lagTracker) pollOrigin(ctx context.Context, js jetstream.JetStream, origin string) (map[string]uint64, error) {
	s, err := js.Stream(ctx, region.OriginStream(origin))
	if err != nil {
		return nil, fmt.Errorf("origin stream %s: %w", region.OriginStream(origin), err)
	}
	last := map[string]uint64{}
	for _, zone := range l.zones {
		m, err := s.GetLastMsgForSubject(ctx, region.ZoneFilter(origin, zone))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			last[zone] = 0
		case err != nil:
			return nil, fmt.Errorf("last message on %s: %w", region.ZoneFilter(origin, zone), err)
		default:
			last[zone] = m.Sequence
		}
	}
	return last, nil
}

func (l *lagTracker) snapshot() (map[string]originPoll, *uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.mu.origins), l.mu.inbox
}
