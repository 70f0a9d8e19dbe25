package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/conflict"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/projector"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

// ErrClosed is returned by calls on a closed Node.
var ErrClosed = errors.New("node: closed")

// Node is one running regional node.
type Node struct {
	cfg      Config
	id       string
	zone     string
	plan     *region.RegionPlan // this region's part of fullPlan
	fullPlan *region.Plan
	log      *eventlog.Log
	keys     *keystore.Store
	writer   *writer.Writer
	proj     *projector.Projector
	claims   *nodeClaims // nil without a claims region (claims.go)
	nc       *nats.Conn
	js       jetstream.JetStream
	ln       net.Listener
	http     *http.Server
	mux      *http.ServeMux

	// cache is the block cache of every Pebble database of the node
	// (Config.PebbleCacheBytes); the node holds a reference until
	// closeStores. budget is Node.PebbleBudget.
	cache  *pebble.Cache
	budget int64

	cancel context.CancelFunc
	wg     sync.WaitGroup

	watchdog sourceWatchdog // re-establishes stalled sources (watchdog.go)

	mu struct {
		sync.Mutex
		shipper   *eventlog.Shipper
		ready     bool
		bootErr   error
		closed    bool
		heartbeat struct {
			sent   uint64
			errors uint64
		}
	}
}

// Start opens the node's stores, starts the HTTP API and begins connecting to
// NATS in the background. It returns once the node accepts writes; Ready
// reports when replication runs.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	n := &Node{cfg: cfg}
	n.zone, _ = cfg.Policy.ZoneOf(cfg.Region)
	plan, err := region.Compile(cfg.Policy)
	if err != nil {
		return nil, fmt.Errorf("node: compile policy: %w", err)
	}
	n.fullPlan = plan
	n.plan, _ = plan.Region(cfg.Region)
	if n.id, err = nodeID(cfg.Dir, cfg.NodeID, cfg.Region); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.closeStores()
		}
	}()
	// One block cache for the log, the key store and the read model,
	// with room for cfg.PebbleCacheBytes of blocks beside their memtables
	// (Pebble counts those against the cache).
	logOpts := eventlog.Options{Dir: filepath.Join(cfg.Dir, "log"), Stamp: writer.StampSequence}
	keysOpts := keystore.Options{Dir: filepath.Join(cfg.Dir, "keys"), CacheEntries: cfg.KeyCacheEntries}
	_, logMem := logOpts.PebbleBudget()
	_, keysMem := keysOpts.PebbleBudget()
	_, modelMem := projector.Config{}.PebbleBudget()
	n.budget = cfg.PebbleCacheBytes + logMem + keysMem + modelMem
	n.cache = pebble.NewCache(n.budget)
	logOpts.BlockCache, keysOpts.BlockCache = n.cache, n.cache
	if n.log, err = eventlog.Open(logOpts); err != nil {
		return nil, fmt.Errorf("node: open log: %w", err)
	}
	if n.keys, err = keystore.Open(keysOpts); err != nil {
		return nil, fmt.Errorf("node: open key store: %w", err)
	}
	if n.writer, err = writer.New(writer.Config{
		Region:   cfg.Region,
		Node:     n.id,
		Topology: cfg.Policy,
		Log:      n.log,
		Keys:     n.keys,
		ZoneKeys: cfg.ZoneKeys,
		HashKey:  cfg.HashKey,
		Now:      cfg.Now,
		// Uniqueness claims (claims.go); nil without a claims region.
		Claimer:     n.claimer(),
		Tombstones:  tombstones{n},
		ClaimWindow: cfg.Claims.Window,
		Observed:    func() map[string]uint64 { return n.proj.Observed() }, // the projector is made below; writes come after
	}); err != nil {
		return nil, fmt.Errorf("node: writer: %w", err)
	}
	if n.ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("node: listen %s: %w", cfg.HTTPAddr, err)
	}
	opts := append([]nats.Option{
		nats.Name("meridian " + n.id),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
	}, cfg.NATSOptions...)
	if n.nc, err = nats.Connect(cfg.NATSURL, opts...); err != nil {
		n.ln.Close()
		return nil, fmt.Errorf("node: connect %s: %w", cfg.NATSURL, err)
	}
	if n.js, err = jetstream.New(n.nc); err != nil {
		n.nc.Close()
		n.ln.Close()
		return nil, fmt.Errorf("node: jetstream: %w", err)
	}
	if err = n.openClaims(); err != nil {
		n.nc.Close()
		n.ln.Close()
		return nil, err
	}
	if n.proj, err = n.newProjector(); err != nil {
		n.nc.Close()
		n.ln.Close()
		return nil, err
	}
	if n.mux, err = n.routes(); err != nil {
		n.proj.Close()
		n.nc.Close()
		n.ln.Close()
		return nil, fmt.Errorf("node: http api: %w", err)
	}
	n.http = &http.Server{Handler: n.mux, ReadHeaderTimeout: 10 * time.Second}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(n.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("http server stopped", "err", err)
		}
	}()
	go func() {
		defer n.wg.Done()
		n.bootstrap(runCtx)
	}()
	n.startClaims(runCtx) // the claims region's reaper (claims.go)
	if cfg.HeartbeatInterval > 0 {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.heartbeats(runCtx)
		}()
	}
	if cfg.SourceStallAfter > 0 {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.watchSources(runCtx)
		}()
	}
	cfg.Logger.Info("node started", "region", cfg.Region, "node", n.id, "http", n.HTTPAddr(), "nats", cfg.NATSURL)
	return n, nil
}

// bootstrap provisions the region's streams, retrying until NATS answers,
// then starts the shipper. Writes are accepted throughout: they wait in the
// log until the shipper runs.
func (n *Node) bootstrap(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		err := n.provision(ctx)
		if err == nil {
			break
		}
		n.mu.Lock()
		n.mu.bootErr = err
		n.mu.Unlock()
		n.cfg.Logger.Warn("provisioning failed; retrying", "region", n.cfg.Region, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	if err := n.proj.Start(ctx); err != nil {
		n.mu.Lock()
		n.mu.bootErr = fmt.Errorf("start projector: %w", err)
		n.mu.Unlock()
		n.cfg.Logger.Error("projector did not start", "err", err)
		return
	}
	sh, err := eventlog.NewShipper(eventlog.ShipperConfig{
		Log:    n.log,
		JS:     n.js,
		Stream: n.plan.Origin.Name,
		Route:  Route(n.cfg.Region),
		Logger: n.cfg.Logger.With("component", "shipper"),
	})
	if err == nil {
		err = sh.Start(ctx)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err != nil {
		n.mu.bootErr = fmt.Errorf("start shipper: %w", err)
		n.cfg.Logger.Error("shipper did not start", "err", err)
		return
	}
	n.mu.shipper = sh
	n.mu.ready = true
	n.mu.bootErr = nil
	n.cfg.Logger.Info("replication running", "region", n.cfg.Region)
}

// newProjector opens the region's read model; it consumes the inbox once
// bootstrap has provisioned it.
func (n *Node) newProjector() (*projector.Projector, error) {
	m, err := conflict.NewMerger()
	if err != nil {
		return nil, fmt.Errorf("node: merger: %w", err)
	}
	origins := map[string]string{}
	for _, r := range n.cfg.Policy.Regions() {
		origins[r], _ = n.cfg.Policy.Domain(r)
	}
	hashKey := n.cfg.HashKey
	p, err := projector.New(projector.Config{
		Region:    n.cfg.Region,
		Zone:      n.zone,
		JS:        n.js,
		Stream:    n.plan.Inbox.Name,
		Dir:       filepath.Join(n.cfg.Dir, "model"),
		Keys:      n.keys,
		ZoneKeys:  n.cfg.ZoneKeys,
		Merger:    m,
		Now:       n.cfg.Now,
		Logger:    n.cfg.Logger.With("component", "projector"),
		HashEmail: func(email string) []byte { return writer.EmailHash(hashKey, email) },
		Origins:   origins,

		BlockCache: n.cache,
	})
	if err != nil {
		return nil, fmt.Errorf("node: projector: %w", err)
	}
	return p, nil
}

func (n *Node) provision(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Only this region's JetStream is in the map: each node provisions its
	// own region, and Provision skips the others.
	rep, err := region.Provision(pctx, n.fullPlan, map[string]jetstream.JetStream{n.cfg.Region: n.js}, region.ProvisionOptions{})
	if err != nil {
		return err
	}
	if rep.Changed() {
		n.cfg.Logger.Info("provisioned streams", "region", n.cfg.Region, "report", rep.String())
	}
	return nil
}

// heartbeats appends a Heartbeat at the configured interval so that every
// region can measure its lag from this origin end to end.
func (n *Node) heartbeats(ctx context.Context) {
	t := time.NewTicker(n.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := n.writer.AppendHeartbeat(ctx)
		n.mu.Lock()
		if err != nil {
			n.mu.heartbeat.errors++
		} else {
			n.mu.heartbeat.sent++
		}
		n.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			n.cfg.Logger.Warn("heartbeat append failed", "err", err)
		}
	}
}

// ID is the node id stamped into every record this node writes.
func (n *Node) ID() string { return n.id }

// Region is the node's region.
func (n *Node) Region() string { return n.cfg.Region }

// HTTPAddr is the address the HTTP API listens on.
func (n *Node) HTTPAddr() string { return n.ln.Addr().String() }

// URL is the HTTP API's base URL.
func (n *Node) URL() string { return "http://" + n.HTTPAddr() }

// Log is the node's event log (for operator tools and tests).
func (n *Node) Log() *eventlog.Log { return n.log }

// Keys is the node's key store.
func (n *Node) Keys() *keystore.Store { return n.keys }

// Projector is the node's projector: the read model and its queries.
func (n *Node) Projector() *projector.Projector { return n.proj }

// Writer is the node's writer.
func (n *Node) Writer() *writer.Writer { return n.writer }

// Ready reports whether replication runs (streams provisioned, shipper
// started), and the last bootstrap error if not.
func (n *Node) Ready() (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.ready, n.mu.bootErr
}

// WaitReady waits until Ready or ctx ends.
func (n *Node) WaitReady(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := n.Ready()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("node %s not ready: %w (last error: %v)", n.id, ctx.Err(), err)
			}
			return fmt.Errorf("node %s not ready: %w", n.id, ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops the HTTP API, the loops, the shipper and the stores, and waits
// for every goroutine the node started.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.mu.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	n.mu.closed = true
	sh := n.mu.shipper
	n.mu.Unlock()

	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	if err := n.http.Shutdown(sctx); err != nil {
		// Connections still open after the grace period are closed hard:
		// a request that outlasts it, or a connection a client dialled but
		// never used (net/http waits 5 s before it counts those as idle).
		// Stopping the node must not hang or fail because of a client.
		n.cfg.Logger.Warn("http shutdown: closing remaining connections", "err", err)
		errs = append(errs, n.http.Close())
	}
	n.cancel()
	n.wg.Wait()
	if sh != nil {
		errs = append(errs, sh.Close())
	}
	errs = append(errs, n.proj.Close())
	n.nc.Close()
	errs = append(errs, n.closeStores())
	return errors.Join(errs...)
}

func (n *Node) closeStores() error {
	var errs []error
	if n.keys != nil {
		errs = append(errs, n.keys.Close())
	}
	if n.log != nil {
		errs = append(errs, n.log.Close())
	}
	if n.cache != nil {
		n.cache.Unref() // the last database closed frees it
		n.cache = nil
	}
	return errors.Join(errs...)
}

// PebbleBudget is the memory, outside the Go heap, the node's Pebble
// databases may take: Config.PebbleCacheBytes of cached blocks plus up to
// two memtables each of the log, the read model and the key store. It is
// the size of their shared block cache, against which Pebble counts the
// memtables too (blocks are evicted to make room for them), so blocks and
// memtables together stay within it. What it does not cover: memtables an
// open iterator still reads after their flush, blocks an iterator pins
// after their eviction, and during a model swap the second model's
// memtables (the cached blocks then shrink by as much, down to none).
func (n *Node) PebbleBudget() int64 { return n.budget }

// PebbleMemory is what a node's Pebble databases hold outside the Go heap.
type PebbleMemory struct {
	// MemTables is the bytes allocated for memtables (in use, flushing,
	// zombie or kept for reuse) by the log, the read model and the key
	// store.
	MemTables uint64
	// BlockCache is the bytes of blocks in the shared block cache.
	BlockCache int64
}

// PebbleMemory reports what the node's Pebble databases hold now, from
// their metrics.
func (n *Node) PebbleMemory() PebbleMemory {
	var m PebbleMemory
	if n.log != nil {
		lm := n.log.PebbleMemory()
		m.MemTables += lm.MemTables
		m.BlockCache = max(m.BlockCache, lm.BlockCache)
	}
	if n.keys != nil {
		km := n.keys.PebbleMemory()
		m.MemTables += km.MemTables
		m.BlockCache = max(m.BlockCache, km.BlockCache)
	}
	if n.proj != nil {
		pm := n.proj.PebbleMemory()
		m.MemTables += pm.MemTables
		m.BlockCache = max(m.BlockCache, pm.BlockCache)
	}
	return m
}
