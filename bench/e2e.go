package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/projector"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
)

// e2e drives appends through the origin node's writer and waits for them
// to be applied in the remote region's read model.
type e2e struct {
	w      *writer.Writer
	origin string // region of w
	node   string // node id of w
	remote *projector.Projector
	// Streams along the way (origin stream in the origin's domain, inbox
	// in the remote's), watched to split the time into stages.
	originJS, remoteJS jetstream.JetStream
	originStream       string
	inboxStream        string
	wl                 *workload
	ids                []string
}

func (e *e2e) token(seqs map[string]uint64) *meridianv1.ConsistencyToken {
	return &meridianv1.ConsistencyToken{OriginRegion: e.origin, OriginNode: e.node, Sequences: seqs}
}

// e2eStages is when (since the first append) the last event of a
// throughput run was acknowledged, stored in the origin stream, stored in
// the remote inbox, and applied.
type e2eStages struct {
	appended, shipped, arrived, applied time.Duration
}

// throughput appends n events from callers goroutines and returns events/s
// from the first append to the last event applied remotely, and the
// stages.
func (e *e2e) throughput(ctx context.Context, callers, n int) (float64, e2eStages, error) {
	var st e2eStages
	records := uint64(n * e.wl.recordsPerEvent)
	watch, err := e.watchStages(ctx, records)
	if err != nil {
		return 0, st, err
	}
	var mu sync.Mutex
	last := map[string]uint64{}
	start := time.Now()
	_, err = runAppends(ctx, e.w, callers, n, func(i int) *meridianv1.Event {
		return e.wl.update(e.ids[i%len(e.ids)])
	}, func(res *writer.Result) {
		mu.Lock()
		defer mu.Unlock()
		for z, s := range res.Sequences {
			last[z] = max(last[z], s)
		}
	})
	if err != nil {
		watch.stop()
		return 0, st, err
	}
	st.appended = time.Since(start)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := e.remote.WaitApplied(wctx, e.token(last)); err != nil {
		watch.stop()
		return 0, st, fmt.Errorf("bench: e2e: %w", err)
	}
	st.applied = time.Since(start)
	// A stage the watch had no poll left to see happened by the time the
	// events were applied.
	shipped, arrived := watch.stop()
	st.shipped, st.arrived = st.applied, st.applied
	if !shipped.IsZero() {
		st.shipped = min(shipped.Sub(start), st.applied)
	}
	if !arrived.IsZero() {
		// One poll can see both streams grown; keep the stages ordered.
		st.arrived = max(min(arrived.Sub(start), st.applied), st.shipped)
	}
	return float64(n) / st.applied.Seconds(), st, nil
}

// stageWatch polls the origin stream and the remote inbox for the moment
// each has grown by the run's records. Heartbeats land in both streams
// too, so a stage can read a few milliseconds early; it never reads late
// by more than the poll interval.
type stageWatch struct {
	cancel           context.CancelFunc
	done             chan struct{}
	shipped, arrived time.Time
}

const stagePoll = 5 * time.Millisecond

func (e *e2e) watchStages(ctx context.Context, records uint64) (*stageWatch, error) {
	lastSeq := func(js jetstream.JetStream, name string) (uint64, error) {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return 0, err
		}
		return s.CachedInfo().State.LastSeq, nil
	}
	o0, err := lastSeq(e.originJS, e.originStream)
	if err != nil {
		return nil, fmt.Errorf("bench: e2e: %w", err)
	}
	i0, err := lastSeq(e.remoteJS, e.inboxStream)
	if err != nil {
		return nil, fmt.Errorf("bench: e2e: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &stageWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(stagePoll)
		defer t.Stop()
		for w.shipped.IsZero() || w.arrived.IsZero() {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if w.shipped.IsZero() {
				if s, err := lastSeq(e.originJS, e.originStream); err == nil && s >= o0+records {
					w.shipped = time.Now()
				}
			}
			if w.arrived.IsZero() {
				if s, err := lastSeq(e.remoteJS, e.inboxStream); err == nil && s >= i0+records {
					w.arrived = time.Now()
				}
			}
		}
	}()
	return w, nil
}

// stop ends the watch and returns what it saw (zero times if a stage was
// not seen).
func (w *stageWatch) stop() (shipped, arrived time.Time) {
	w.cancel()
	<-w.done
	return w.shipped, w.arrived
}

// latencyRun is one paced run: the sorted durations from each append's
// acknowledgement to the event being applied remotely, and, split by
// stage, to both of its records being stored in the origin stream and in
// the remote inbox.
type latencyRun struct {
	applied, shipped, arrived []time.Duration
}

// latency appends n events at rate per second, each waited for in the
// remote read model by its own goroutine.
func (e *e2e) latency(ctx context.Context, n, rate int) (latencyRun, error) {
	var run latencyRun
	base := time.Now()
	origin, err := followIDs(ctx, e.originJS, e.originStream, base)
	if err != nil {
		return run, err
	}
	defer origin.stop()
	inbox, err := followIDs(ctx, e.remoteJS, e.inboxStream, base)
	if err != nil {
		return run, err
	}
	defer inbox.stop()
	acked := make([]int64, n)
	ids := make([]string, n)
	run.applied = make([]time.Duration, n)
	err = pace(ctx, rate, n, func(ctx context.Context, i int) error {
		res, err := e.w.Append(ctx, e.wl.update(e.ids[i%len(e.ids)]))
		if err != nil {
			return err
		}
		acked[i], ids[i] = int64(time.Since(base)), res.EventIDs[0]
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := e.remote.WaitApplied(wctx, e.token(res.Sequences)); err != nil {
			return err
		}
		run.applied[i] = time.Since(base) - time.Duration(acked[i])
		return nil
	})
	if err != nil {
		return run, fmt.Errorf("bench: e2e latency: %w", err)
	}
	// Applied implies stored in both streams; the followers may still be
	// a delivery behind.
	stage := func(c *idClock) ([]time.Duration, error) {
		out := make([]time.Duration, n)
		for i, id := range ids {
			at, err := c.wait(ctx, []string{id + ":g", id + ":r"}, 10*time.Second)
			if err != nil {
				return nil, err
			}
			out[i] = time.Duration(max(0, at-acked[i]))
		}
		slices.Sort(out)
		return out, nil
	}
	if run.shipped, err = stage(origin); err != nil {
		return run, err
	}
	if run.arrived, err = stage(inbox); err != nil {
		return run, err
	}
	slices.Sort(run.applied)
	return run, nil
}

// carry appends up to limit events at rate per second until ctx ends, each
// one waited for in the remote read model, without the stage followers:
// the load the backbone puts on the machine while it carries that rate,
// under which the raw sourcing latency is measured again
// (raw_sourcing_loaded_*). It returns the number of events carried.
func (e *e2e) carry(ctx context.Context, rate, limit int) (int, error) {
	var n atomic.Int64
	err := pace(ctx, rate, limit, func(ctx context.Context, i int) error {
		res, err := e.w.Append(ctx, e.wl.update(e.ids[i%len(e.ids)]))
		if err != nil {
			return err
		}
		if err := e.remote.WaitApplied(ctx, e.token(res.Sequences)); err != nil {
			return err
		}
		n.Add(1)
		return nil
	})
	if ctx.Err() != nil {
		err = nil // the measurement beside it is over
	}
	return int(n.Load()), err
}

// loadedSourcingLatency measures the raw sourcing latency (k messages at
// rate) while the backbone carries rate events/s beside it.
func (e *e2e) loadedSourcingLatency(ctx context.Context, src *sourcing, k, rate int) ([]time.Duration, error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type carried struct {
		n   int
		err error
	}
	done := make(chan carried, 1)
	go func() {
		// Twice the measurement's own schedule and a second more: the
		// load outlasts it (pace buffers one slot per event, so not
		// unbounded).
		n, err := e.carry(cctx, rate, 2*k+rate)
		done <- carried{n, err}
	}()
	lat, err := src.latency(ctx, k, rate)
	cancel()
	c := <-done
	if err == nil && c.err != nil {
		err = fmt.Errorf("bench: load beside raw sourcing: %w", c.err)
	}
	if err == nil && c.n == 0 {
		err = fmt.Errorf("bench: load beside raw sourcing: no event carried")
	}
	return lat, err
}

// idClock follows a stream with an ordered consumer and records when each
// message id (Nats-Msg-Id) first became readable, in ns since base.
type idClock struct {
	base time.Time
	cc   jetstream.ConsumeContext
	mu   struct {
		sync.Mutex
		at     map[string]int64
		notify chan struct{}
	}
}

func followIDs(ctx context.Context, js jetstream.JetStream, stream string, base time.Time) (*idClock, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("bench: follow %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: follow %s: %w", stream, err)
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   info.State.LastSeq + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: follow %s: %w", stream, err)
	}
	c := &idClock{base: base}
	c.mu.at = map[string]int64{}
	c.mu.notify = make(chan struct{})
	if c.cc, err = cons.Consume(c.seen); err != nil {
		return nil, fmt.Errorf("bench: follow %s: %w", stream, err)
	}
	return c, nil
}

func (c *idClock) seen(m jetstream.Msg) {
	now := int64(time.Since(c.base))
	id := m.Headers().Get(jetstream.MsgIDHeader)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.mu.at[id]; !ok {
		c.mu.at[id] = now
		close(c.mu.notify)
		c.mu.notify = make(chan struct{})
	}
}

// wait returns the latest arrival of ids, once all have arrived.
func (c *idClock) wait(ctx context.Context, ids []string, timeout time.Duration) (int64, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		c.mu.Lock()
		latest, missing, next := int64(0), "", c.mu.notify
		for _, id := range ids {
			at, ok := c.mu.at[id]
			if !ok {
				missing = id
				break
			}
			latest = max(latest, at)
		}
		c.mu.Unlock()
		if missing == "" {
			return latest, nil
		}
		select {
		case <-next:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
			return 0, fmt.Errorf("bench: message %s not seen within %s", missing, timeout)
		}
	}
}

func (c *idClock) stop() { c.cc.Stop() }
