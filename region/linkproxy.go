package region

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrInvalidLinkConfig is wrapped by the errors NewLinkProxy returns for a bad LinkConfig.
var ErrInvalidLinkConfig = errors.New("region: invalid link config")

const (
	linkChunkSize  = 32 << 10 // bytes per read; also the unit of the buffer pool
	linkQueueDepth = 512      // chunks per direction: bounds memory at 16 MiB a direction
)

// LinkConfig configures a LinkProxy.
type LinkConfig struct {
	// Listen is the address to listen on. Default "127.0.0.1:0": a port chosen
	// by the OS and held until Close.
	Listen string
	// Target is the host:port every connection is forwarded to. Required.
	Target string
	// Delay is the initial one-way delay added to each direction (0 = none).
	Delay time.Duration
	// DialTimeout bounds each dial of Target. Default 2s.
	DialTimeout time.Duration
	// Logger receives connection events at debug level. Default: discard.
	Logger *slog.Logger
}

func (c *LinkConfig) validate() error {
	if c.Target == "" {
		return fmt.Errorf("%w: Target: required (host:port to forward to)", ErrInvalidLinkConfig)
	}
	if _, _, err := net.SplitHostPort(c.Target); err != nil {
		return fmt.Errorf("%w: Target %q: must be host:port: %v", ErrInvalidLinkConfig, c.Target, err)
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("%w: Listen %q: must be host:port: %v", ErrInvalidLinkConfig, c.Listen, err)
		}
	}
	if c.Delay < 0 {
		return fmt.Errorf("%w: Delay %v: must not be negative", ErrInvalidLinkConfig, c.Delay)
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("%w: DialTimeout %v: must not be negative", ErrInvalidLinkConfig, c.DialTimeout)
	}
	return nil
}

func (c *LinkConfig) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// LinkMetrics is a snapshot of a LinkProxy's counters.
type LinkMetrics struct {
	BytesToTarget    uint64        // bytes delivered from clients to the target
	BytesFromTarget  uint64        // bytes delivered from the target to clients
	QueuedToTarget   int64         // bytes read from clients, waiting in the delay line
	QueuedFromTarget int64         // bytes read from the target, waiting in the delay line
	Accepted         uint64        // connections accepted (forwarded or blackholed)
	Active           int           // forwarded connections open now
	Blackholed       uint64        // connections accepted while cut and never forwarded
	DialErrors       uint64        // failed dials of the target
	Cuts             uint64        // calls to Cut that started a partition
	Cut              bool          // the link is cut now
	Delay            time.Duration // the current one-way delay
}

// LinkProxy is a userspace TCP proxy that stands in for a WAN link in tests
// and demos: the kernel here has no netem, so delay and partitions are made in
// userspace. Each accepted connection is forwarded to Target through two delay
// lines, one per direction. A delay line stamps every chunk it reads with its
// arrival time and releases it at arrival+delay, in order, while it keeps
// reading: the delay adds latency but does not cap throughput.
//
// Cut simulates a partition: current connections are closed and new ones are
// accepted but never forwarded (blackholed) until Restore. The listener stays
// open for the proxy's whole life, so its port cannot be handed to anyone else.
//
// It is safe for concurrent use.
type LinkProxy struct {
	cfg    LinkConfig
	ln     net.Listener
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	pool   sync.Pool

	bytesTo, bytesFrom   atomic.Uint64
	queuedTo, queuedFrom atomic.Int64
	accepted, blackholed atomic.Uint64
	dialErrors, cuts     atomic.Uint64

	mu struct {
		sync.Mutex
		delay time.Duration
		// delayChanged is closed and replaced on every SetDelay so that
		// chunks already waiting are rescheduled with the new delay.
		delayChanged chan struct{}
		cut          bool
		closed       bool
		conns        map[*linkConn]struct{}
		held         map[net.Conn]struct{} // blackholed while cut
	}
}

// NewLinkProxy listens on cfg.Listen and forwards to cfg.Target until Close is
// called or ctx is cancelled. A busy Listen port is reported as an error that
// wraps syscall.EADDRINUSE, so callers can retry.
func NewLinkProxy(ctx context.Context, cfg LinkConfig) (*LinkProxy, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("region: link listen %s: %w", cfg.Listen, err)
	}
	p := &LinkProxy{cfg: cfg, ln: ln, log: cfg.Logger.With("link", ln.Addr().String(), "target", cfg.Target)}
	p.pool.New = func() any { b := make([]byte, linkChunkSize); return &b }
	p.ctx, p.cancel = context.WithCancel(ctx)
	p.mu.delay = cfg.Delay
	p.mu.delayChanged = make(chan struct{})
	p.mu.conns = make(map[*linkConn]struct{})
	p.mu.held = make(map[net.Conn]struct{})
	p.wg.Add(2)
	go p.acceptLoop()
	go p.watch()
	return p, nil
}

// Addr returns the proxy's listen address (host:port).
func (p *LinkProxy) Addr() string { return p.ln.Addr().String() }

// Port returns the proxy's listen port.
func (p *LinkProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Target returns the address the proxy forwards to.
func (p *LinkProxy) Target() string { return p.cfg.Target }

// SetDelay sets the one-way delay added to each direction. It applies to data
// already waiting too: a chunk is released at its arrival time plus the delay
// in force, in arrival order.
func (p *LinkProxy) SetDelay(oneWay time.Duration) {
	if oneWay < 0 {
		oneWay = 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.delay = oneWay
	close(p.mu.delayChanged)
	p.mu.delayChanged = make(chan struct{})
}

// Delay returns the current one-way delay.
func (p *LinkProxy) Delay() time.Duration {
	d, _ := p.delayState()
	return d
}

func (p *LinkProxy) delayState() (time.Duration, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.delay, p.mu.delayChanged
}

// Cut partitions the link: every current connection is closed, data in flight
// is dropped, and new connections are accepted but blackholed (held open,
// never forwarded, their data discarded) until Restore.
func (p *LinkProxy) Cut() {
	p.mu.Lock()
	if p.mu.closed || p.mu.cut {
		p.mu.Unlock()
		return
	}
	p.mu.cut = true
	p.cuts.Add(1)
	conns := p.takeConnsLocked()
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	p.log.Debug("link cut", "closed", len(conns))
}

// Restore ends a partition: blackholed connections are closed so that their
// clients reconnect promptly, and new connections are forwarded again.
func (p *LinkProxy) Restore() {
	p.mu.Lock()
	if !p.mu.cut {
		p.mu.Unlock()
		return
	}
	p.mu.cut = false
	held := p.takeHeldLocked()
	p.mu.Unlock()
	for _, c := range held {
		_ = c.Close()
	}
	p.log.Debug("link restored", "released", len(held))
}

// IsCut reports whether the link is cut.
func (p *LinkProxy) IsCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.cut
}

// Metrics returns a snapshot of the proxy's counters.
func (p *LinkProxy) Metrics() LinkMetrics {
	p.mu.Lock()
	active, cut, delay := len(p.mu.conns), p.mu.cut, p.mu.delay
	p.mu.Unlock()
	return LinkMetrics{
		BytesToTarget:    p.bytesTo.Load(),
		BytesFromTarget:  p.bytesFrom.Load(),
		QueuedToTarget:   p.queuedTo.Load(),
		QueuedFromTarget: p.queuedFrom.Load(),
		Accepted:         p.accepted.Load(),
		Active:           active,
		Blackholed:       p.blackholed.Load(),
		DialErrors:       p.dialErrors.Load(),
		Cuts:             p.cuts.Load(),
		Cut:              cut,
		Delay:            delay,
	}
}

// Close stops the listener, closes every connection and waits for the
// proxy's goroutines. It is idempotent.
func (p *LinkProxy) Close() error {
	p.cancel()
	p.wg.Wait()
	return nil
}

// watch tears everything down when the proxy's context ends, which also
// unblocks Accept and any pending reads and writes.
func (p *LinkProxy) watch() {
	defer p.wg.Done()
	<-p.ctx.Done()
	p.mu.Lock()
	p.mu.closed = true
	conns := p.takeConnsLocked()
	held := p.takeHeldLocked()
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range conns {
		c.close()
	}
	for _, c := range held {
		_ = c.Close()
	}
}

func (p *LinkProxy) takeConnsLocked() []*linkConn {
	out := make([]*linkConn, 0, len(p.mu.conns))
	for c := range p.mu.conns {
		out = append(out, c)
	}
	clear(p.mu.conns)
	return out
}

func (p *LinkProxy) takeHeldLocked() []net.Conn {
	out := make([]net.Conn, 0, len(p.mu.held))
	for c := range p.mu.held {
		out = append(out, c)
	}
	clear(p.mu.held)
	return out
}

func (p *LinkProxy) acceptLoop() {
	defer p.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (e.g. EMFILE): back off instead of spinning.
			p.log.Warn("link accept", "err", err)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-p.ctx.Done():
				t.Stop()
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve forwards one accepted connection, or blackholes it while cut.
func (p *LinkProxy) serve(client net.Conn) {
	defer p.wg.Done()
	if p.holdIfCut(client) {
		p.blackhole(client)
		return
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	target, err := d.DialContext(p.ctx, "tcp", p.cfg.Target)
	if err != nil {
		p.dialErrors.Add(1)
		p.log.Debug("link dial", "err", err)
		_ = client.Close()
		return
	}
	lc := &linkConn{client: client, target: target, done: make(chan struct{})}
	if !p.register(lc) {
		// Cut or closed while dialling: a partition drops it like the rest.
		lc.close()
		return
	}
	p.log.Debug("link open", "client", client.RemoteAddr().String())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(lc, client, target, &p.queuedTo, &p.bytesTo) }()
	go func() { defer wg.Done(); p.pipe(lc, target, client, &p.queuedFrom, &p.bytesFrom) }()
	wg.Wait()
	lc.close()
	p.unregister(lc)
	p.log.Debug("link closed", "client", client.RemoteAddr().String())
}

func (p *LinkProxy) holdIfCut(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		_ = c.Close()
		return true // blackhole returns at once on a closed conn
	}
	if !p.mu.cut {
		return false
	}
	p.mu.held[c] = struct{}{}
	p.blackholed.Add(1)
	return true
}

// blackhole discards what the client sends until Restore or Close closes the
// connection: like a partition, the client sees silence, not a refusal.
func (p *LinkProxy) blackhole(c net.Conn) {
	_, _ = io.Copy(io.Discard, c)
	_ = c.Close()
	p.mu.Lock()
	delete(p.mu.held, c)
	p.mu.Unlock()
}

func (p *LinkProxy) register(lc *linkConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed || p.mu.cut {
		return false
	}
	p.mu.conns[lc] = struct{}{}
	return true
}

func (p *LinkProxy) unregister(lc *linkConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.mu.conns, lc)
}

// linkConn is one forwarded connection: a client and its target.
type linkConn struct {
	client, target net.Conn
	once           sync.Once
	done           chan struct{}
	halfClosed     atomic.Int32
}

func (lc *linkConn) close() {
	lc.once.Do(func() {
		close(lc.done)
		_ = lc.client.Close()
		_ = lc.target.Close()
	})
}

type linkChunk struct {
	buf     *[]byte
	n       int
	arrival time.Time
}

// pipe moves src to dst through a delay line: a reader stamps chunks and
// queues them, a writer releases each at arrival+delay. The two run
// concurrently so that many chunks are in flight during one delay. When src
// ends cleanly, what is queued is still delivered and dst is half-closed.
func (p *LinkProxy) pipe(lc *linkConn, src, dst net.Conn, queued *atomic.Int64, delivered *atomic.Uint64) {
	q := make(chan linkChunk, linkQueueDepth)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.writeDelayed(lc, dst, q, queued, delivered)
	}()
	p.readStamped(lc, src, q, queued)
	wg.Wait()
	// Drop whatever a cut left behind so that the gauge returns to zero.
	for c := range q {
		queued.Add(-int64(c.n))
		p.pool.Put(c.buf)
	}
}

func (p *LinkProxy) readStamped(lc *linkConn, src net.Conn, q chan<- linkChunk, queued *atomic.Int64) {
	defer close(q)
	for {
		buf := p.pool.Get().(*[]byte)
		n, err := src.Read(*buf)
		if n > 0 {
			queued.Add(int64(n))
			select {
			case q <- linkChunk{buf: buf, n: n, arrival: time.Now()}:
			case <-lc.done:
				queued.Add(-int64(n))
				p.pool.Put(buf)
				return
			}
		} else {
			p.pool.Put(buf)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				lc.close() // a reset or a cut: tear down both directions
			}
			return
		}
	}
}

func (p *LinkProxy) writeDelayed(lc *linkConn, dst net.Conn, q <-chan linkChunk, queued *atomic.Int64, delivered *atomic.Uint64) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var c linkChunk
		var ok bool
		select {
		case c, ok = <-q:
		case <-lc.done:
			return
		}
		if !ok {
			// Source finished cleanly and everything queued was delivered:
			// pass the EOF on; once both directions did, the conn is done.
			if tc, isTCP := dst.(*net.TCPConn); isTCP {
				_ = tc.CloseWrite()
			}
			if lc.halfClosed.Add(1) == 2 {
				lc.close()
			}
			return
		}
		if !p.waitRelease(lc, timer, c.arrival) {
			queued.Add(-int64(c.n))
			p.pool.Put(c.buf)
			return
		}
		_, err := dst.Write((*c.buf)[:c.n])
		queued.Add(-int64(c.n))
		p.pool.Put(c.buf)
		if err != nil {
			lc.close()
			return
		}
		delivered.Add(uint64(c.n))
	}
}

// waitRelease blocks until arrival+delay, re-reading the delay whenever it
// changes. It returns false if the connection closed first.
func (p *LinkProxy) waitRelease(lc *linkConn, timer *time.Timer, arrival time.Time) bool {
	for {
		delay, changed := p.delayState()
		wait := time.Until(arrival.Add(delay))
		if wait <= 0 {
			return true
		}
		timer.Reset(wait)
		select {
		case <-timer.C: // loop: the delay may have grown meanwhile
		case <-changed:
			timer.Stop()
		case <-lc.done:
			timer.Stop()
			return false
		}
	}
}
