package projector

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Projector consumes a region's inbox into its read model and answers
// queries from it. It is safe for concurrent use.
type Projector struct {
	cfg Config
	eng *engine
	lag *lagTracker

	mu struct {
		sync.RWMutex // readers hold it shared so Close waits for them
		started      bool
		closed       bool
		cancel       context.CancelFunc
	}
	wg   sync.WaitGroup
	done chan struct{} // closed by Close

	running        atomic.Bool
	consumerStarts atomic.Uint64
	lastErr        atomic.Pointer[errorAt]
	gets           atomic.Uint64
	waiting        atomic.Int64  // callers inside WaitApplied
	gaps           atomic.Uint64 // inbox messages removed before being applied

	// Model swaps (swap.go).
	pause     pauser
	swapMu    sync.Mutex
	switching atomic.Bool
}

type errorAt struct {
	err string
	at  int64
}

// New validates cfg, applies defaults and opens the read model in
// cfg.Dir. It finishes key destruction of erasures that committed before a
// crash. Nothing is consumed until Start.
func New(cfg Config) (*Projector, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if outcome, err := RecoverSwap(cfg.Dir); err != nil {
		return nil, err
	} else if outcome != "" {
		cfg.Logger.Warn("projector: settled a model swap a crash interrupted", "dir", cfg.Dir, "outcome", outcome)
	}
	eng, err := openEngine(engineConfig{
		dir: cfg.Dir, keys: cfg.Keys, merger: cfg.Merger, zone: cfg.Zone,
		zoneKeys: cfg.ZoneKeys, now: cfg.Now, log: cfg.Logger, shards: cfg.ApplyWorkers, cache: cfg.CacheEntries,
		store: cfg.storeOptions(),
	})
	if err != nil {
		return nil, err
	}
	p := &Projector{cfg: cfg, eng: eng, done: make(chan struct{})}
	p.lag = newLagTracker(cfg)
	return p, nil
}

// Start starts consuming the inbox from the stored sequence + 1, and
// polling origin streams for lag, in goroutines that Close stops. It
// returns at once; a NATS outage is retried in the background (see
// Status).
func (p *Projector) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.mu.closed:
		return ErrClosed
	case p.mu.started:
		return ErrStarted
	}
	p.mu.started = true
	ctx, cancel := context.WithCancel(ctx)
	p.mu.cancel = cancel
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.run(ctx)
	}()
	go func() {
		defer p.wg.Done()
		p.lag.run(ctx, p.cfg.Logger)
	}()
	return nil
}

// Close stops the goroutines, waits for them and for running queries, and
// closes the read model. The batch being applied is abandoned (it was not
// committed) and re-applied by the next start.
func (p *Projector) Close() error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.mu.closed = true
	if p.mu.cancel != nil {
		p.mu.cancel()
	}
	close(p.done)
	p.mu.Unlock()
	p.wg.Wait()
	return p.eng.close()
}

// open takes the read side of the close lock; callers defer p.mu.RUnlock.
func (p *Projector) open() error {
	p.mu.RLock()
	if p.mu.closed {
		p.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// run consumes until ctx ends, starting over from the stored position
// after any failure, with a doubling backoff reset by progress.
func (p *Projector) run(ctx context.Context) {
	backoff := p.cfg.RetryBackoff
	for {
		cctx, ok := p.pause.begin(ctx) // waits while a swap has paused consumption
		if !ok {
			return
		}
		before := p.eng.inboxSeqSnapshot()
		err := p.consume(cctx)
		p.running.Store(false)
		paused := p.pause.end()
		if ctx.Err() != nil {
			return
		}
		if paused && cctx.Err() != nil {
			continue
		}
		p.lastErr.Store(&errorAt{err: err.Error(), at: p.cfg.Now()})
		if p.eng.inboxSeqSnapshot() != before {
			backoff = p.cfg.RetryBackoff
		}
		p.cfg.Logger.Warn("projector: inbox consumption stopped; restarting from the stored position",
			"stream", p.cfg.Stream, "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
}

func (p *Projector) consume(ctx context.Context) error {
	_, seq, _, _ := p.eng.snapshot()
	s, err := p.cfg.JS.Stream(ctx, p.cfg.Stream)
	if err != nil {
		return fmt.Errorf("projector: inbox %s: %w", p.cfg.Stream, err)
	}
	switch st := s.CachedInfo().State; {
	case st.LastSeq < seq:
		// Consuming on would wait for sequences the model already has and
		// silently skip the new stream's first ones.
		return &StreamResetError{Stream: p.cfg.Stream, Applied: seq, LastSeq: st.LastSeq}
	case st.Msgs > 0 && st.FirstSeq > seq+1:
		p.cfg.Logger.Error("projector: inbox messages were removed before being applied",
			"stream", p.cfg.Stream, "from", seq+1, "to", st.FirstSeq-1)
		p.gaps.Add(st.FirstSeq - seq - 1)
	}
	cons, err := p.cfg.JS.OrderedConsumer(ctx, p.cfg.Stream, orderedFrom(seq+1))
	if err != nil {
		return fmt.Errorf("projector: consumer on %s from seq %d: %w", p.cfg.Stream, seq+1, err)
	}
	p.consumerStarts.Add(1)
	p.running.Store(true)
	return pump(ctx, cons, p.cfg.BatchSize, p.cfg.Logger, func(msgs []inMsg) (bool, error) {
		return false, p.eng.process(msgs)
	})
}

func orderedFrom(seq uint64) jetstream.OrderedConsumerConfig {
	if seq <= 1 {
		return jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	}
	return jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq}
}

// Quarantined lists the inbox messages that could never be applied, in
// inbox order.
func (p *Projector) Quarantined() ([]QuarantineRecord, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	defer p.mu.RUnlock()
	return p.eng.store.quarantined()
}
