package eventlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The shipper moves the log into the region's JetStream origin stream.
//
// One goroutine (Run) reads the log from the shipper's checkpoint and
// publishes each record asynchronously with Nats-Msg-Id = its record id,
// keeping at most Window publishes unsettled. The client's ack callbacks
// mark each publish acked or failed in a ring indexed by sequence; the loop
// retires the contiguous acked prefix, which is the only thing the
// checkpoint may move over, and hands it every CheckpointInterval to a
// persister goroutine, so that publishing never waits for the checkpoint's
// fsync (stopping and failure handling persist synchronously). On any
// failure (a failed ack, a publish error, an ack older than AckTimeout) it
// drops everything unsettled, backs off, and re-sends from the first
// unacknowledged record: JetStream's duplicate window discards what had
// in fact arrived. A crash re-sends at most the window plus the unpersisted
// checkpoint lag, with the same outcome.

// Stalls: the shipper publishes through a JetStream context of its own
// whose max pending equals Window, and never has more than Window
// publishes unsettled, so the client's "too many outstanding async
// published messages" stall cannot occur; if it did, it would be handled
// like any publish failure (back off, re-send), never as a hard stop.

// SeqHeader is the message header carrying the record's log sequence
// (decimal), so that consumers can see it without decoding the payload.
const SeqHeader = "Meridian-Seq"

// Shipper defaults, applied to zero-valued ShipperConfig fields.
const (
	DefaultShipperCheckpoint = "shipper"
	// DefaultShipperWindow is the number of unsettled async publishes,
	// close to the client's own default (4000). A sweep of 256..16384 on 2
	// (shared) cores showed no difference beyond noise against a local
	// server; the margin is for a server a round trip away.
	DefaultShipperWindow = 4096
	// MaxShipperWindow bounds Window (and the ring the shipper allocates).
	MaxShipperWindow = 1 << 16
	// DefaultShipperBatchRead is the number of records read per refill.
	DefaultShipperBatchRead = 512
	// DefaultShipperAckTimeout is how long a publish may stay unacknowledged
	// before the shipper treats the window as failed and re-sends.
	DefaultShipperAckTimeout = 5 * time.Second
	// DefaultShipperCheckpointInterval is how often a moved checkpoint is
	// persisted (each persist is a synced log write).
	DefaultShipperCheckpointInterval = 50 * time.Millisecond
	DefaultShipperBackoffMin         = 20 * time.Millisecond
	DefaultShipperBackoffMax         = 5 * time.Second
	// DefaultShipperDrainTimeout bounds how long a stopping shipper waits
	// for the acks of what it already sent.
	DefaultShipperDrainTimeout = 2 * time.Second
)

var (
	// ErrShipperClosed is returned by Run, Start and Close after Close.
	ErrShipperClosed = errors.New("eventlog: shipper closed")
	// ErrShipperRunning is returned by Run and Start while the shipper runs.
	ErrShipperRunning = errors.New("eventlog: shipper already running")
	// ErrUnroutable is wrapped by *RouteError.
	ErrUnroutable = errors.New("eventlog: record cannot be routed")
	// ErrWrongStream is wrapped by *WrongStreamError.
	ErrWrongStream = errors.New("eventlog: record stored in the wrong stream")
	// ErrAckTimeout is recorded (LastError) when a publish stayed
	// unacknowledged for longer than ShipperConfig.AckTimeout.
	ErrAckTimeout = errors.New("eventlog: shipper: ack timeout")
)

// RouteError is a hard stop: the record at Seq could not be mapped to a
// subject and message id. The shipper never skips a record, so it stops
// with its checkpoint below Seq.
type RouteError struct {
	Seq uint64
	Err error
}

func (e *RouteError) Error() string {
	return fmt.Sprintf("eventlog: shipper: route record at seq %d: %v", e.Seq, e.Err)
}

// Unwrap returns both ErrUnroutable and the route function's error.
func (e *RouteError) Unwrap() []error { return []error{ErrUnroutable, e.Err} }

// WrongStreamError is a hard stop: JetStream stored the record at Seq in a
// stream other than the configured origin stream (a routing or
// provisioning mistake that retrying cannot fix).
type WrongStreamError struct {
	Seq       uint64
	Subject   string
	Got, Want string
}

func (e *WrongStreamError) Error() string {
	return fmt.Sprintf("eventlog: shipper: record at seq %d (subject %q) was stored in stream %q, want %q", e.Seq, e.Subject, e.Got, e.Want)
}

func (e *WrongStreamError) Unwrap() error { return ErrWrongStream }

// ShipperConfig configures a Shipper. Log, JS, Stream and Route are
// required; the rest have defaults.
type ShipperConfig struct {
	// Log is the log to ship. The shipper does not close it.
	Log *Log
	// JS provides the NATS connection (JS.Conn()). The shipper publishes
	// through a JetStream context of its own on that connection, so that
	// its window, ack callbacks and cleanup do not mix with other users of
	// JS.
	JS jetstream.JetStream
	// Stream is the origin stream the records must land in; an ack from
	// another stream is a hard stop (*WrongStreamError). Also names the
	// shipper in logs and metrics.
	Stream string
	// Route maps a record to its subject and message id (Nats-Msg-Id). It
	// runs on the shipper goroutine, must not modify rec.Data, and must be
	// deterministic: a record that cannot be routed stops the shipper with
	// a *RouteError naming its sequence.
	Route func(rec Record) (subject, msgID string, err error)

	// Checkpoint names the shipper's checkpoint in the log (default
	// DefaultShipperCheckpoint). It also holds back retention.
	Checkpoint string
	// Window bounds the unsettled async publishes (default
	// DefaultShipperWindow, at most MaxShipperWindow).
	Window int
	// BatchRead is the most records published per refill between two looks
	// at the acks (default DefaultShipperBatchRead).
	BatchRead int
	// AckTimeout is how long a publish may stay unacknowledged (default
	// DefaultShipperAckTimeout).
	AckTimeout time.Duration
	// CheckpointInterval is the most time a moved checkpoint stays
	// unpersisted while shipping (default DefaultShipperCheckpointInterval).
	// A caught-up shipper persists at once.
	CheckpointInterval time.Duration
	// BackoffMin and BackoffMax bound the exponential, jittered backoff
	// after a failure (defaults DefaultShipperBackoffMin/Max).
	BackoffMin, BackoffMax time.Duration
	// DrainTimeout bounds the wait for outstanding acks when the shipper
	// stops (default DefaultShipperDrainTimeout).
	DrainTimeout time.Duration
	// Logger receives failures and state changes (default: discarded).
	Logger *slog.Logger
}

func (c *ShipperConfig) setDefaults() {
	if c.Checkpoint == "" {
		c.Checkpoint = DefaultShipperCheckpoint
	}
	if c.Window == 0 {
		c.Window = DefaultShipperWindow
	}
	if c.BatchRead == 0 {
		c.BatchRead = DefaultShipperBatchRead
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultShipperAckTimeout
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultShipperCheckpointInterval
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultShipperBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultShipperBackoffMax
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultShipperDrainTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// validate checks a defaulted config.
func (c *ShipperConfig) validate() error {
	pos := func(field string, d time.Duration) error {
		if d < 0 {
			return argErr("ShipperConfig."+field, fmt.Sprintf("must be > 0, got %s", d))
		}
		return nil
	}
	switch {
	case c.Log == nil:
		return argErr("ShipperConfig.Log", "must not be nil")
	case c.JS == nil:
		return argErr("ShipperConfig.JS", "must not be nil")
	case c.JS.Conn() == nil:
		return argErr("ShipperConfig.JS", "must have a NATS connection")
	case c.Stream == "":
		return argErr("ShipperConfig.Stream", "must not be empty")
	case c.Route == nil:
		return argErr("ShipperConfig.Route", "must not be nil")
	case c.Window < 1 || c.Window > MaxShipperWindow:
		return argErr("ShipperConfig.Window", fmt.Sprintf("must be in [1, %d], got %d", MaxShipperWindow, c.Window))
	case c.BatchRead < 1:
		return argErr("ShipperConfig.BatchRead", fmt.Sprintf("must be >= 1, got %d", c.BatchRead))
	case c.BackoffMax < c.BackoffMin:
		return argErr("ShipperConfig.BackoffMax", fmt.Sprintf("must be >= BackoffMin (%s), got %s", c.BackoffMin, c.BackoffMax))
	}
	if err := validCheckpointName(c.Checkpoint); err != nil {
		return argErr("ShipperConfig.Checkpoint", err.(*ArgError).Rule)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"AckTimeout", c.AckTimeout}, {"CheckpointInterval", c.CheckpointInterval},
		{"BackoffMin", c.BackoffMin}, {"BackoffMax", c.BackoffMax}, {"DrainTimeout", c.DrainTimeout},
	} {
		if err := pos(f.name, f.d); err != nil {
			return err
		}
	}
	return nil
}

// ShipperMetrics is a snapshot of a Shipper's counters (since NewShipper).
type ShipperMetrics struct {
	Stream           string
	Running          bool
	Shipped          uint64 // every record <= Shipped is acknowledged by JetStream (in memory)
	Persisted        uint64 // the checkpoint last written to the log
	LastSeq          uint64 // the log's head
	Backlog          uint64 // LastSeq - Shipped
	Published        uint64 // publishes sent, re-sends included
	Acked            uint64 // acks retired in order (re-sends included)
	Duplicates       uint64 // acks JetStream flagged as duplicates (re-sends it dropped)
	InFlight         int    // publishes sent and not yet retired
	MaxInFlight      int    // highest InFlight seen; never above the window
	PublishErrs      uint64 // publishes that failed (error ack, send error, timeout)
	AckTimeouts      uint64 // windows given up because an ack was older than AckTimeout
	Backoffs         uint64 // failure episodes (each followed by a backoff and a re-send)
	LastError        error  // the last failure, nil if none
	LastErrorAt      time.Time
	CheckpointWrites uint64 // checkpoint writes to the log
	Reconnects       uint64 // reconnects of the NATS connection (shared with its other users)
}

// Shipper ships a Log into a JetStream stream. Create it with NewShipper;
// run it with Start/Close (owned goroutine) or Run (caller's goroutine).
type Shipper struct {
	cfg ShipperConfig

	running  atomic.Bool
	closed   atomic.Bool
	progress atomic.Pointer[chan struct{}] // closed and replaced when Shipped moves (if waited on) or Run ends
	waiters  atomic.Int32                  // WaitShipped calls in progress

	mu struct {
		sync.Mutex
		cancel  context.CancelFunc
		done    chan struct{}
		runErr  error // what Run returned (hard stops only)
		lastErr error
		lastAt  time.Time
	}

	m struct {
		shipped, persisted, published, acked, dups atomic.Uint64
		pubErrs, timeouts, backoffs, cps           atomic.Uint64
		inflight, maxInflight                      atomic.Int64
	}
}

// NewShipper validates cfg and returns a stopped Shipper.
func NewShipper(cfg ShipperConfig) (*Shipper, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cp, err := cfg.Log.Checkpoint(cfg.Checkpoint)
	if err != nil {
		return nil, fmt.Errorf("eventlog: shipper: %w", err)
	}
	s := &Shipper{cfg: cfg}
	s.m.shipped.Store(cp)
	s.m.persisted.Store(cp)
	ch := make(chan struct{})
	s.progress.Store(&ch)
	return s, nil
}

// Start runs the shipper in a goroutine it owns, under a context derived
// from ctx, until Close (or a hard stop, reported by Done and Err). After a
// stop it may be started again; Close is final.
func (s *Shipper) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrShipperClosed
	}
	if s.mu.done != nil {
		select {
		case <-s.mu.done: // stopped by a hard stop or its context: may start again
			s.mu.cancel()
		default:
			return ErrShipperRunning
		}
	}
	if s.running.Load() {
		return ErrShipperRunning
	}
	ctx, cancel := context.WithCancel(ctx)
	s.mu.cancel, s.mu.done = cancel, make(chan struct{})
	done := s.mu.done
	go func() {
		defer close(done)
		_ = s.run(ctx) // its error is kept for Err and Close
	}()
	return nil
}

// Done is closed when the goroutine launched by Start has returned (after
// Close, a cancelled context or a hard stop); nil before Start.
func (s *Shipper) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.done
}

// Err returns the hard-stop error that ended the shipper, if any.
func (s *Shipper) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.runErr
}

// Close stops what Start started, waits for its goroutine (which drains
// outstanding acks for at most DrainTimeout and persists the checkpoint),
// and returns its hard-stop error if it had one. Later calls return
// ErrShipperClosed.
func (s *Shipper) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return ErrShipperClosed
	}
	s.mu.Lock()
	cancel, done := s.mu.cancel, s.mu.done
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	<-done
	return s.Err()
}

// WaitShipped returns nil once every record <= seq is acknowledged by
// JetStream, ctx.Err() if ctx ends first, and the hard-stop error if the
// shipper stops with one first.
func (s *Shipper) WaitShipped(ctx context.Context, seq uint64) error {
	// Counted before reading Shipped, so that an advance either is seen
	// here or sees the waiter and signals.
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	for {
		ch := *s.progress.Load()
		if s.m.shipped.Load() >= seq {
			return nil
		}
		if err := s.Err(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Metrics returns a snapshot of the shipper's counters.
func (s *Shipper) Metrics() ShipperMetrics {
	m := ShipperMetrics{
		Stream:           s.cfg.Stream,
		Running:          s.running.Load(),
		Shipped:          s.m.shipped.Load(),
		Persisted:        s.m.persisted.Load(),
		LastSeq:          s.cfg.Log.LastSeq(),
		Published:        s.m.published.Load(),
		Acked:            s.m.acked.Load(),
		Duplicates:       s.m.dups.Load(),
		InFlight:         int(s.m.inflight.Load()),
		MaxInFlight:      int(s.m.maxInflight.Load()),
		PublishErrs:      s.m.pubErrs.Load(),
		AckTimeouts:      s.m.timeouts.Load(),
		Backoffs:         s.m.backoffs.Load(),
		CheckpointWrites: s.m.cps.Load(),
		Reconnects:       s.cfg.JS.Conn().Stats().Reconnects,
	}
	if m.LastSeq > m.Shipped {
		m.Backlog = m.LastSeq - m.Shipped
	}
	s.mu.Lock()
	m.LastError, m.LastErrorAt = s.mu.lastErr, s.mu.lastAt
	s.mu.Unlock()
	return m
}

func (s *Shipper) noteError(err error) {
	s.mu.Lock()
	s.mu.lastErr, s.mu.lastAt = err, time.Now()
	s.mu.Unlock()
}

func (s *Shipper) signalProgress() {
	ch := make(chan struct{})
	old := s.progress.Swap(&ch)
	close(*old)
}

// Run ships until ctx ends (then it drains, persists the checkpoint and
// returns nil) or a hard stop: a *RouteError, a *WrongStreamError, a log
// that cannot be read (corrupt or trimmed records, closed log) or a closed
// NATS connection. NATS failures are not hard stops: they are retried with
// backoff. Only one Run may be active at a time; Start is Run in an owned
// goroutine.
func (s *Shipper) Run(ctx context.Context) error {
	if s.closed.Load() {
		return ErrShipperClosed
	}
	return s.run(ctx)
}

func (s *Shipper) run(ctx context.Context) (err error) {
	if !s.running.CompareAndSwap(false, true) {
		return ErrShipperRunning
	}
	s.mu.Lock()
	s.mu.runErr = nil
	s.mu.Unlock()
	defer func() {
		if err != nil {
			s.noteError(err)
			s.cfg.Logger.Error("shipper stopped", "stream", s.cfg.Stream, "shipped", s.m.shipped.Load(), "err", err)
			s.mu.Lock()
			s.mu.runErr = err
			s.mu.Unlock()
		}
		s.running.Store(false)
		s.signalProgress()
	}()

	r, err := s.newShipRun()
	if err != nil {
		return err
	}
	defer r.stop()
	s.cfg.Logger.Info("shipper started", "stream", s.cfg.Stream, "checkpoint", r.shipped, "last_seq", s.cfg.Log.LastSeq())
	return r.loop(ctx)
}

// Flight states, set by the ack callbacks (pending -> one of the others).
const (
	shipPending uint32 = iota
	shipAcked
	shipDuplicate
	shipFailed
	shipWrongStream
)

// shipFlight is one publish. The client hands &msg back to the callbacks,
// which find the flight by the sequence in its header and check the
// pointer, so a late callback from an abandoned attempt never settles a
// newer one.
//
// Acknowledged flights are reused (the client is done with a message once
// it has delivered its ack): the header map is built once per flight and
// its values are slices of hv, so a reused flight only rewrites hv.
// Abandoned flights are never reused, since callbacks for them may still
// be on their way.
type shipFlight struct {
	msg    nats.Msg
	hv     [2]string // header values, one allocation with the flight
	seq    uint64
	sent   int64 // unix nanos of the refill that sent it
	state  atomic.Uint32
	stream string // the stream of a shipWrongStream ack
}

// shipRun is the state of one Run.
type shipRun struct {
	s    *Shipper
	cfg  *ShipperConfig
	nc   *nats.Conn
	js   jetstream.JetStream // private publishing context
	ring []atomic.Pointer[shipFlight]
	mask uint64
	rd   *Reader

	head, next  uint64 // flights in [head, next) by sequence; inflight = next-head
	shipped     uint64 // acked prefix (== checkpoint in memory)
	persisted   uint64 // the last checkpoint handed to the persister (or written)
	lastPersist time.Time

	// The persister goroutine writes the checkpoint (a synced log write)
	// off the publishing loop: the loop hands it the acknowledged prefix
	// (cpWant) and never waits for the fsync. cp.written only grows, and
	// only to values of shipped, so the durable checkpoint never passes an
	// unacknowledged record.
	cpWant atomic.Uint64
	cpKick chan struct{} // cap 1
	cpErr  atomic.Pointer[error]
	cp     struct {
		sync.Mutex // held while writing: writes are serialised
		written    uint64
	}

	free    []*shipFlight // acknowledged flights for reuse
	held    *Record       // a record read but not yet published (copied)
	stopErr error         // hard stop once the window has drained (route, read)
	slab    []byte

	wake    chan struct{} // cap 1: a callback settled a flight
	failErr atomic.Pointer[error]
	fails   int // consecutive failure episodes without progress, for backoff

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (s *Shipper) newShipRun() (*shipRun, error) {
	cfg := &s.cfg
	cp, err := cfg.Log.Checkpoint(cfg.Checkpoint)
	if err != nil {
		return nil, fmt.Errorf("eventlog: shipper: %w", err)
	}
	cps, err := cfg.Log.Checkpoints()
	if err != nil {
		return nil, fmt.Errorf("eventlog: shipper: %w", err)
	}
	if _, ok := cps[cfg.Checkpoint]; !ok {
		// Registering the checkpoint holds retention back from records
		// this shipper has not shipped yet.
		if err := cfg.Log.SetCheckpoint(cfg.Checkpoint, 0); err != nil {
			return nil, fmt.Errorf("eventlog: shipper: register checkpoint: %w", err)
		}
	}
	size := 1 << bits.Len(uint(cfg.Window-1))
	r := &shipRun{
		s:         s,
		cfg:       cfg,
		nc:        cfg.JS.Conn(),
		ring:      make([]atomic.Pointer[shipFlight], size),
		free:      make([]*shipFlight, 0, size),
		mask:      uint64(size - 1),
		head:      cp + 1,
		next:      cp + 1,
		shipped:   cp,
		persisted: cp,
		wake:      make(chan struct{}, 1),
		cpKick:    make(chan struct{}, 1),
	}
	r.js, err = jetstream.New(r.nc,
		jetstream.WithPublishAsyncMaxPending(cfg.Window),
		jetstream.WithPublishAsyncAckHandler(r.onAck),
		jetstream.WithPublishAsyncErrHandler(r.onErr),
	)
	if err != nil {
		return nil, fmt.Errorf("eventlog: shipper: %w", err)
	}
	s.m.shipped.Store(cp)
	s.m.persisted.Store(cp)
	s.m.inflight.Store(0)
	r.rd = cfg.Log.NewReader(r.next)
	r.lastPersist = time.Now()
	r.cp.written = cp

	var wctx context.Context
	wctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(1)
	go r.persistLoop(wctx)
	return r, nil
}

// persistLoop is the persister goroutine: it writes the newest checkpoint
// the loop handed it, one write at a time. A failed write is reported to
// the loop (which stops: the log is closed or failed).
func (r *shipRun) persistLoop(ctx context.Context) {
	defer r.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.cpKick:
		}
		if err := r.writeCheckpoint(r.cpWant.Load()); err != nil {
			r.cpErr.CompareAndSwap(nil, &err)
			r.notify()
			return
		}
	}
}

// writeCheckpoint persists seq (an acknowledged prefix) unless a checkpoint
// at or past it is already written.
func (r *shipRun) writeCheckpoint(seq uint64) error {
	r.cp.Lock()
	defer r.cp.Unlock()
	if seq <= r.cp.written {
		return nil
	}
	if err := r.cfg.Log.SetCheckpoint(r.cfg.Checkpoint, seq); err != nil {
		return fmt.Errorf("eventlog: shipper: persist checkpoint %d: %w", seq, err)
	}
	r.cp.written = seq
	r.s.m.persisted.Store(seq)
	r.s.m.cps.Add(1)
	return nil
}

func (r *shipRun) stop() {
	r.cancel()
	r.wg.Wait()
	for s := r.head; s < r.next; s++ {
		r.ring[s&r.mask].Store(nil)
	}
	r.js.CleanupPublisher()
	_ = r.rd.Close()
	r.s.m.inflight.Store(0)
}

func (r *shipRun) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// flightOf finds the current flight of a message handed back by the client.
func (r *shipRun) flightOf(m *nats.Msg) *shipFlight {
	v := m.Header[SeqHeader]
	if len(v) != 1 {
		return nil
	}
	seq, err := strconv.ParseUint(v[0], 10, 64)
	if err != nil {
		return nil
	}
	f := r.ring[seq&r.mask].Load()
	if f == nil || &f.msg != m {
		return nil
	}
	return f
}

// onAck runs on the client's ack goroutine: it must not block.
func (r *shipRun) onAck(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
	f := r.flightOf(m)
	if f == nil {
		return
	}
	st := shipAcked
	if ack.Stream != r.cfg.Stream {
		f.stream = ack.Stream // published by the CAS below
		st = shipWrongStream
	} else if ack.Duplicate {
		st = shipDuplicate
	}
	if f.state.CompareAndSwap(shipPending, st) {
		r.notify()
	}
}

// onErr runs on a client goroutine (or inside CleanupPublisher).
func (r *shipRun) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	f := r.flightOf(m)
	if f == nil {
		return
	}
	if f.state.CompareAndSwap(shipPending, shipFailed) {
		r.s.m.pubErrs.Add(1)
		err = fmt.Errorf("eventlog: shipper: publish seq %d to %s: %w", f.seq, r.cfg.Stream, err)
		r.failErr.CompareAndSwap(nil, &err)
		r.notify()
	}
}

// loop is the body of Run.
func (r *shipRun) loop(ctx context.Context) error {
	tick := time.NewTicker(max(min(r.cfg.CheckpointInterval, r.cfg.AckTimeout/4), time.Millisecond))
	defer tick.Stop()
	for {
		if err := r.collect(); err != nil {
			return r.finish(err)
		}
		if ctx.Err() != nil {
			return r.finish(r.stopErr) // a pending hard stop is still reported
		}
		if err := r.checkFailure(); err != nil {
			if err := r.recover(ctx, err); err != nil {
				return r.finish(err)
			}
			continue
		}
		if r.stopErr != nil && r.head == r.next {
			return r.finish(r.stopErr)
		}
		if err := r.maybePersist(false); err != nil {
			return r.finish(err)
		}
		n, err := r.fill()
		if err != nil {
			// A send error (the connection may be reconnecting): settle
			// what is there, then back off and re-send.
			if err := r.recover(ctx, err); err != nil {
				return r.finish(err)
			}
			continue
		}
		if n > 0 {
			continue // look at the acks, then refill
		}
		// The log's own tail signal, taken before looking at LastSeq: an
		// append published after the look closes it. Selected on here
		// directly, so that a new record wakes this goroutine and no other
		// in between.
		grown := r.cfg.Log.tailSignal()
		if r.cfg.Log.isClosed() {
			return r.finish(fmt.Errorf("eventlog: shipper: %w", ErrClosed))
		}
		readable := r.held == nil && r.cfg.Log.LastSeq() >= r.rd.Pos()
		if r.head == r.next && r.stopErr == nil {
			if readable {
				continue // appended since fill looked
			}
			// Caught up and settled: sleep until the log grows, waking
			// for the checkpoint while it lags (within CheckpointInterval,
			// not per record: at low rates that would be an fsync each).
			var persist <-chan time.Time
			if r.shipped != r.persisted {
				persist = tick.C
			}
			select {
			case <-persist:
			case <-grown:
			case <-r.wake: // the persister failed (or a stale callback)
			case <-r.cfg.Log.done:
			case <-ctx.Done():
			}
			continue
		}
		if readable && r.stopErr == nil && r.next-r.head < uint64(r.cfg.Window) {
			continue
		}
		select {
		case <-r.wake:
		case <-grown:
		case <-tick.C:
		case <-ctx.Done():
		}
	}
}

// collect retires the contiguous settled prefix of the window. A
// wrong-stream ack is a hard stop; a failed one stops the prefix (the
// failure itself is handled by checkFailure).
func (r *shipRun) collect() error {
	var acked, dups uint64
	start := r.head
	for r.head < r.next {
		slot := &r.ring[r.head&r.mask]
		f := slot.Load()
		st := f.state.Load()
		if st == shipAcked || st == shipDuplicate {
			if st == shipDuplicate {
				dups++
			}
			acked++
			r.shipped = f.seq
			slot.Store(nil)
			r.head++
			if len(r.free) < cap(r.free) {
				f.msg.Data = nil // do not pin its slab
				r.free = append(r.free, f)
			}
			continue
		}
		if st == shipWrongStream {
			r.s.m.acked.Add(acked)
			r.s.m.dups.Add(dups)
			return &WrongStreamError{Seq: f.seq, Subject: f.msg.Subject, Got: f.stream, Want: r.cfg.Stream}
		}
		break
	}
	if r.head != start {
		r.fails = 0
		r.s.m.acked.Add(acked)
		r.s.m.dups.Add(dups)
		r.s.m.shipped.Store(r.shipped)
		r.s.m.inflight.Store(int64(r.next - r.head))
		if r.s.waiters.Load() > 0 {
			r.s.signalProgress()
		}
	}
	return nil
}

// checkFailure reports a failed publish in the window, or an ack older
// than AckTimeout at its head.
func (r *shipRun) checkFailure() error {
	if p := r.failErr.Load(); p != nil {
		return *p
	}
	if r.head == r.next {
		return nil
	}
	f := r.ring[r.head&r.mask].Load()
	if age := time.Duration(time.Now().UnixNano() - f.sent); age > r.cfg.AckTimeout {
		r.s.m.timeouts.Add(1)
		r.s.m.pubErrs.Add(1)
		return fmt.Errorf("%w: seq %d unacknowledged by %s after %s", ErrAckTimeout, f.seq, r.cfg.Stream, age.Round(time.Millisecond))
	}
	return nil
}

// recover handles a failure: it keeps what was acknowledged, abandons the
// rest of the window, persists the checkpoint, backs off (and waits for
// the connection), and rewinds the reader to the first unacknowledged
// record. It returns an error only for a hard stop.
func (r *shipRun) recover(ctx context.Context, cause error) error {
	s := r.s
	s.m.backoffs.Add(1)
	s.noteError(cause)
	if err := r.collect(); err != nil {
		return err
	}
	r.abandon()
	if err := r.maybePersist(true); err != nil {
		return err
	}
	d := r.backoff()
	s.cfg.Logger.Warn("shipper failure, backing off", "stream", s.cfg.Stream, "shipped", r.shipped, "backoff", d, "err", cause)
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if r.nc.IsClosed() {
			return fmt.Errorf("eventlog: shipper: %w", nats.ErrConnectionClosed)
		}
		if r.nc.IsConnected() {
			break
		}
		t.Reset(r.backoff()) // still reconnecting: publishing now would only fill the reconnect buffer
	}
	return nil
}

// abandon drops every unsettled flight and rewinds to the first
// unacknowledged record. Late callbacks for the dropped flights find empty
// or newer slots and are ignored.
func (r *shipRun) abandon() {
	for s := r.head; s < r.next; s++ {
		r.ring[s&r.mask].Store(nil)
	}
	r.js.CleanupPublisher() // fails (and forgets) the client's pending acks
	r.failErr.Store(nil)
	select {
	case <-r.wake:
	default:
	}
	r.next = r.head
	r.held, r.stopErr = nil, nil
	_ = r.rd.Close()
	r.rd = r.cfg.Log.NewReader(r.head)
	r.s.m.inflight.Store(0)
}

func (r *shipRun) backoff() time.Duration {
	d := r.cfg.BackoffMin << min(r.fails, 30)
	if d <= 0 || d > r.cfg.BackoffMax {
		d = r.cfg.BackoffMax
	}
	r.fails++
	// Full jitter over the upper half keeps some spacing while
	// desynchronising shippers that failed together.
	return d/2 + rand.N(d/2+1)
}

// maybePersist hands the checkpoint to the persister if it moved and
// CheckpointInterval has passed; with force it writes it now and waits
// (failure handling and stopping). It returns the persister's failure, if
// it had one.
func (r *shipRun) maybePersist(force bool) error {
	if p := r.cpErr.Load(); p != nil {
		return *p
	}
	if r.shipped == r.persisted && !force {
		return nil
	}
	now := time.Now()
	if force {
		if err := r.writeCheckpoint(r.shipped); err != nil {
			return err
		}
		r.persisted, r.lastPersist = r.shipped, now
		return nil
	}
	if now.Sub(r.lastPersist) < r.cfg.CheckpointInterval {
		return nil
	}
	r.cpWant.Store(r.shipped)
	select {
	case r.cpKick <- struct{}{}:
	default: // a kick is pending: the persister reads cpWant after taking it
	}
	r.persisted, r.lastPersist = r.shipped, now
	return nil
}

// fill publishes records while the window has room, at most BatchRead of
// them. A record that cannot be routed or read sets stopErr (the loop
// stops once the window drains); a send error is returned.
func (r *shipRun) fill() (int, error) {
	if r.stopErr != nil {
		return 0, nil
	}
	window := uint64(r.cfg.Window)
	now := time.Now().UnixNano()
	n := 0
	for n < r.cfg.BatchRead && r.next-r.head < window {
		var rec Record
		if r.held != nil {
			rec = *r.held
		} else if r.rd.Next() {
			rec = r.rd.Record()
		} else {
			if err := r.rd.Err(); err != nil {
				if errors.Is(err, ErrClosed) {
					return n, nil // the tail watcher reports it
				}
				r.stopErr = fmt.Errorf("eventlog: shipper: read from seq %d: %w", r.next, err)
			}
			break
		}
		if rec.Seq != r.next {
			if r.head != r.next {
				// A gap (sequence floor): let the window drain first, so
				// the ring stays dense by sequence.
				r.hold(rec)
				break
			}
			r.head, r.next = rec.Seq, rec.Seq
		}
		r.held = nil
		subject, id, err := r.cfg.Route(rec)
		if err == nil {
			err = checkRoute(subject, id)
		}
		if err != nil {
			r.hold(rec)
			r.stopErr = &RouteError{Seq: rec.Seq, Err: err}
			break
		}
		f := r.newFlight()
		f.seq, f.sent = rec.Seq, now
		f.hv[0], f.hv[1] = id, strconv.FormatUint(rec.Seq, 10)
		f.msg.Subject = subject
		f.msg.Data = r.copyData(rec.Data)
		r.ring[rec.Seq&r.mask].Store(f)
		r.next = rec.Seq + 1
		// No publish options: the header already carries the message id,
		// and the option path allocates per message. The window never
		// exceeds the context's max pending, so the client cannot stall.
		if _, err := r.js.PublishMsgAsync(&f.msg); err != nil {
			r.ring[rec.Seq&r.mask].Store(nil)
			r.next = rec.Seq
			r.s.m.pubErrs.Add(1)
			r.afterFill(n)
			return n, fmt.Errorf("eventlog: shipper: publish seq %d to %s: %w", rec.Seq, r.cfg.Stream, err)
		}
		n++
	}
	r.afterFill(n)
	return n, nil
}

// newFlight returns a pending flight, reused if one is free.
func (r *shipRun) newFlight() *shipFlight {
	if n := len(r.free); n > 0 {
		f := r.free[n-1]
		r.free = r.free[:n-1]
		f.state.Store(shipPending)
		f.stream = ""
		return f
	}
	f := &shipFlight{}
	f.msg.Header = nats.Header{jetstream.MsgIDHeader: f.hv[0:1:1], SeqHeader: f.hv[1:2:2]}
	return f
}

func (r *shipRun) afterFill(n int) {
	if n == 0 {
		return
	}
	r.s.m.published.Add(uint64(n))
	in := int64(r.next - r.head)
	r.s.m.inflight.Store(in)
	if in > r.s.m.maxInflight.Load() {
		r.s.m.maxInflight.Store(in)
	}
}

func (r *shipRun) hold(rec Record) {
	if r.held == nil {
		r.held = &Record{Seq: rec.Seq, Data: append([]byte(nil), rec.Data...)}
	}
}

// copyData copies a record out of the Reader's reused buffer into a slab:
// the client keeps the message until its ack (it re-sends on "no
// responders"), so the bytes must not change under it. One allocation per
// slab instead of one per record.
func (r *shipRun) copyData(b []byte) []byte {
	const slabSize = 256 << 10
	if len(b) > slabSize/4 {
		return append([]byte(nil), b...)
	}
	if len(r.slab)+len(b) > cap(r.slab) {
		r.slab = make([]byte, 0, slabSize)
	}
	off := len(r.slab)
	r.slab = append(r.slab, b...)
	return r.slab[off:len(r.slab):len(r.slab)]
}

// checkRoute rejects what NATS would reject or misread: an empty subject,
// an empty or wildcard token, whitespace, and a message id that is empty or
// would break the header block.
func checkRoute(subject, id string) error {
	if subject == "" {
		return errors.New("empty subject")
	}
	if strings.ContainsAny(subject, " \t\r\n") {
		return fmt.Errorf("subject %q contains whitespace", subject)
	}
	for rest, more := subject, true; more; {
		var tok string
		tok, rest, more = strings.Cut(rest, ".")
		switch tok {
		case "":
			return fmt.Errorf("subject %q has an empty token", subject)
		case "*", ">":
			return fmt.Errorf("subject %q has a wildcard token", subject)
		}
	}
	if id == "" {
		return errors.New("empty message id")
	}
	if strings.ContainsAny(id, "\r\n") {
		return fmt.Errorf("message id %q contains a line break", id)
	}
	return nil
}

// finish drains outstanding acks (bounded by DrainTimeout), persists the
// checkpoint and returns err.
func (r *shipRun) finish(err error) error {
	var hard *WrongStreamError
	if !errors.As(err, &hard) && !errors.Is(err, ErrClosed) {
		t := time.NewTimer(r.cfg.DrainTimeout)
	drain:
		for r.head < r.next && r.failErr.Load() == nil {
			select {
			case <-r.wake:
				if cerr := r.collect(); cerr != nil {
					err = errors.Join(err, cerr)
					break drain
				}
			case <-t.C:
				break drain
			}
		}
		t.Stop()
		if cerr := r.collect(); cerr != nil && !errors.As(err, &hard) {
			err = errors.Join(err, cerr)
		}
	}
	if !errors.Is(err, ErrClosed) {
		if perr := r.maybePersist(true); perr != nil {
			err = errors.Join(err, perr)
		}
	}
	r.s.cfg.Logger.Info("shipper stopping", "stream", r.cfg.Stream, "shipped", r.shipped, "persisted", r.persisted)
	return err
}
