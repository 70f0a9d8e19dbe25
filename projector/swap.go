package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Swapping a rebuilt read model into a running projector.
//
// A rebuilt model (Rebuild of this projector's inbox from its first
// sequence, in a directory on the same file system) replaces the live one
// without stopping the node:
//
//  1. Wait (bounded) until the live model has applied at least as far as
//     the rebuilt one: every data key the rebuilt model's states are sealed
//     under then sits in the node's key store (the rebuilt model was built
//     with a scratch key store; the live projector stored the same keys
//     from the same key records).
//  2. Pause consumption. The live model stops at inbox sequence L; reads
//     are still served from it.
//  3. Catch the rebuilt model up from its own position to exactly L,
//     through the same apply path, with the node's key store, and make it
//     durable. Nothing applied live in between is lost, and the two models
//     now describe the same inbox prefix, so Verify compares them exactly.
//  4. Switch (reads wait, or the node answers 503 model_switching):
//     write the marker <live>.swap naming the three directories (synced),
//     close the live store, rename <live> to the aside directory, rename
//     the rebuilt model to <live>, sync both parents, open it, remove the
//     marker. The projector keeps its counters, lag tracker and waiters;
//     only its store and positions change.
//  5. Resume consumption from L+1.
//
// A crash at any point leaves the old model or the new one, never a mix:
// before the marker nothing was renamed; with the marker, RecoverSwap
// (which New runs before opening the model) finishes the switch when the
// live model was already moved aside (the rebuilt model was durable before
// the marker was written) and otherwise drops the marker, leaving the old
// model in place and the rebuilt one where it was. Each model is a whole
// Pebble directory with its own inbox position, so whichever survives
// resumes consuming exactly after its position: no event is applied twice
// or skipped.

// SwapConfig configures Projector.Swap.
type SwapConfig struct {
	// Dir is the rebuilt model: a complete Rebuild of this projector's
	// inbox, closed, on the same file system as the live model. Required.
	Dir string
	// Aside is where the live model is moved (default
	// <live>.replaced-<unix ms>). It must not exist.
	Aside string
	// LiveTimeout bounds waiting for the live model to reach the rebuilt
	// model's position (default 1 min).
	LiveTimeout time.Duration
	// Verify, if set, is called while consumption is paused, with the
	// rebuilt model caught up to exactly the live model's position (the
	// projector itself is the live model). An error cancels the swap.
	Verify func(ctx context.Context, built *Model) error
	// Step, if set, is called as each step of the switch begins (tests
	// crash a process there): "caught-up", "marker", "closed-live",
	// "moved-aside", "moved-in", "opened".
	Step func(step string)
}

// SwapReport is what a swap did.
type SwapReport struct {
	// BuiltSeq is the rebuilt model's inbox position as handed over;
	// LiveSeq the live model's when consumption paused, which the rebuilt
	// model was caught up to (CaughtUp messages).
	BuiltSeq, LiveSeq, CaughtUp uint64
	Quarantined                 uint64 // by the catch-up
	ModelDir                    string // the live model directory (now the rebuilt model)
	Replaced                    string // where the previous model went
	Paused                      time.Duration
	Switch                      time.Duration // reads were held or refused this long
}

// SwapMarker is the suffix of the marker file beside the live model.
const SwapMarker = ".swap"

type swapMarker struct {
	Live     string `json:"live"`
	Aside    string `json:"aside"`
	Incoming string `json:"incoming"`
}

// ErrSwapping: a swap is already running on this projector.
var ErrSwapping = errors.New("projector: a model swap is already running")

// Switching reports whether the projector is in the switch window of a
// swap (its store is being replaced; reads wait for it).
func (p *Projector) Switching() bool { return p.switching.Load() }

// Swap replaces the live read model with the rebuilt one in cfg.Dir while
// the projector runs; see the protocol above. On an error before the
// switch nothing changed (the rebuilt model may have been caught up
// further, which a later swap reuses); an error during the switch leaves
// whichever model RecoverSwap settled on, open, or the projector closed
// if neither could be opened.
func (p *Projector) Swap(ctx context.Context, cfg SwapConfig) (SwapReport, error) {
	live := filepath.Clean(p.cfg.Dir)
	rep := SwapReport{ModelDir: live}
	if err := p.checkSwap(&cfg, live); err != nil {
		return rep, err
	}
	if !p.swapMu.TryLock() {
		return rep, ErrSwapping
	}
	defer p.swapMu.Unlock()
	if err := p.open(); err != nil {
		return rep, err
	}
	p.wg.Add(1) // Close waits for the swap
	p.mu.RUnlock()
	defer p.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()

	built, err := openEngine(engineConfig{
		dir: cfg.Dir, keys: p.cfg.Keys, merger: p.cfg.Merger, zone: p.cfg.Zone, zoneKeys: p.cfg.ZoneKeys,
		now: p.cfg.Now, log: p.cfg.Logger, shards: p.cfg.ApplyWorkers, cache: p.cfg.CacheEntries,
		commitEvery: rebuildCommitBatches * p.cfg.BatchSize, store: p.cfg.storeOptions(),
	})
	if err != nil {
		return rep, invalidf("Dir", "%s: cannot open a read model there: %v", cfg.Dir, err)
	}
	closeBuilt := func() error {
		if built == nil {
			return nil
		}
		err := built.close()
		built = nil
		return err
	}
	defer closeBuilt()
	rep.BuiltSeq = built.inboxSeq
	if rep.BuiltSeq == 0 {
		return rep, invalidf("Dir", "%s holds an empty read model (inbox sequence 0): rebuild it first", cfg.Dir)
	}

	// 1. The live model reaches the rebuilt one's position.
	if err := p.waitInboxSeq(ctx, rep.BuiltSeq, cfg.LiveTimeout); err != nil {
		return rep, err
	}
	// 2. Pause.
	pausedAt := time.Now()
	if err := p.pause.pause(ctx); err != nil {
		return rep, err
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			rep.Paused = time.Since(pausedAt)
			p.pause.resume()
		}
	}
	defer resume()
	rep.LiveSeq = p.eng.inboxSeqSnapshot()

	// 3. Catch up to exactly the live position, durably.
	st, err := rebuild(ctx, RebuildConfig{
		JS: p.cfg.JS, Stream: p.cfg.Stream, FromSeq: rep.BuiltSeq + 1, ToSeq: rep.LiveSeq,
		Logger: p.cfg.Logger, BatchSize: p.cfg.BatchSize,
	}, built, time.Now())
	rep.CaughtUp, rep.Quarantined = st.Messages, st.Quarantined
	if err != nil {
		return rep, fmt.Errorf("projector: swap: catch the rebuilt model up to inbox seq %d: %w", rep.LiveSeq, err)
	}
	if built.inboxSeq != rep.LiveSeq {
		return rep, fmt.Errorf("projector: swap: the rebuilt model reached inbox seq %d, not the live model's %d", built.inboxSeq, rep.LiveSeq)
	}
	if cfg.Verify != nil {
		if err := cfg.Verify(ctx, &Model{eng: built}); err != nil {
			return rep, fmt.Errorf("projector: swap: verify: %w", err)
		}
	}
	// A flushed memtable makes reopening it quick (no WAL to replay).
	if err := built.store.db.Flush(); err != nil {
		return rep, fmt.Errorf("projector: swap: flush the rebuilt model: %w", err)
	}
	if err := closeBuilt(); err != nil {
		return rep, fmt.Errorf("projector: swap: close the rebuilt model: %w", err)
	}
	cfg.step("caught-up")
	if err := ctx.Err(); err != nil {
		return rep, err
	}

	// 4. Switch. From here on the request's end does not stop it.
	rep.Replaced = cfg.Aside
	sw := time.Now()
	err = p.switchModel(live, cfg)
	rep.Switch = time.Since(sw)
	if err != nil {
		return rep, err
	}
	// 5. Resume from the new model's position (the same L).
	resume()
	p.cfg.Logger.Info("projector: rebuilt model swapped in", "dir", live, "replaced", cfg.Aside,
		"built_seq", rep.BuiltSeq, "live_seq", rep.LiveSeq, "caught_up", rep.CaughtUp, "paused", rep.Paused, "switch", rep.Switch)
	return rep, nil
}

func (c *SwapConfig) step(s string) {
	if c.Step != nil {
		c.Step(s)
	}
}

func (p *Projector) checkSwap(cfg *SwapConfig, live string) error {
	if cfg.Dir == "" {
		return invalidf("Dir", "required: the rebuilt model's directory")
	}
	if !filepath.IsAbs(cfg.Dir) {
		return invalidf("Dir", "%q must be an absolute path", cfg.Dir)
	}
	cfg.Dir = filepath.Clean(cfg.Dir)
	if cfg.Dir == live || isWithin(cfg.Dir, live) || isWithin(live, cfg.Dir) {
		return invalidf("Dir", "%s must not be, contain or lie inside the live model %s", cfg.Dir, live)
	}
	fi, err := os.Stat(cfg.Dir)
	if err != nil {
		return invalidf("Dir", "%s: %v", cfg.Dir, err)
	}
	if !fi.IsDir() {
		return invalidf("Dir", "%s is not a directory", cfg.Dir)
	}
	if desc, err := pebble.Peek(cfg.Dir, vfs.Default); err != nil || !desc.Exists {
		return invalidf("Dir", "%s holds no Pebble read model", cfg.Dir)
	}
	if ok, err := sameFileSystem(cfg.Dir, filepath.Dir(live)); err != nil {
		return invalidf("Dir", "%s: %v", cfg.Dir, err)
	} else if !ok {
		return invalidf("Dir", "%s must be on the file system of %s: the swap is a rename", cfg.Dir, filepath.Dir(live))
	}
	if cfg.Aside == "" {
		cfg.Aside = live + ".replaced-" + strconv.FormatInt(time.Now().UnixMilli(), 10)
	}
	cfg.Aside = filepath.Clean(cfg.Aside)
	if !filepath.IsAbs(cfg.Aside) || filepath.Dir(cfg.Aside) != filepath.Dir(live) || cfg.Aside == live {
		return invalidf("Aside", "%q must be another absolute path in %s", cfg.Aside, filepath.Dir(live))
	}
	if _, err := os.Lstat(cfg.Aside); err == nil {
		return invalidf("Aside", "%s exists already", cfg.Aside)
	}
	if _, err := os.Stat(live + SwapMarker); err == nil {
		return fmt.Errorf("projector: swap: %s exists: an earlier swap did not finish (restart the node to settle it)", live+SwapMarker)
	}
	if cfg.LiveTimeout < 0 {
		return invalidf("LiveTimeout", "must not be negative")
	}
	if cfg.LiveTimeout == 0 {
		cfg.LiveTimeout = time.Minute
	}
	return nil
}

func isWithin(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !filepath.IsAbs(rel) && len(rel) > 2 && rel[:3] != "../"
}

// waitInboxSeq waits until the live model has applied seq.
func (p *Projector) waitInboxSeq(ctx context.Context, seq uint64, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		_, have, _, next := p.eng.snapshot()
		if have >= seq {
			return nil
		}
		select {
		case <-next:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("projector: swap: the live model is at inbox seq %d and did not reach the rebuilt model's %d within %v (is the projector consuming? see status)", have, seq, timeout)
		}
	}
}

// switchModel is step 4: with consumption paused and the rebuilt model
// durable and closed, replace the live store.
func (p *Projector) switchModel(live string, cfg SwapConfig) (err error) {
	m := swapMarker{Live: live, Aside: cfg.Aside, Incoming: cfg.Dir}
	cfg.step("marker")
	if err := writeMarker(live+SwapMarker, m); err != nil {
		return fmt.Errorf("projector: swap: %w", err)
	}
	p.switching.Store(true)
	defer p.switching.Store(false)
	p.mu.Lock() // waits for reads in flight; new ones wait for the switch
	defer p.mu.Unlock()
	if p.mu.closed {
		os.Remove(live + SwapMarker)
		return ErrClosed
	}
	e := p.eng
	if err := e.store.close(); err != nil {
		p.cfg.Logger.Warn("projector: swap: close the live model", "err", err)
	}
	cfg.step("closed-live")
	if err := os.Rename(live, cfg.Aside); err != nil {
		return p.settleAfterFailure(live, fmt.Errorf("projector: swap: move the live model aside: %w", err))
	}
	cfg.step("moved-aside")
	if err := os.Rename(cfg.Dir, live); err != nil {
		return p.settleAfterFailure(live, fmt.Errorf("projector: swap: move the rebuilt model in: %w", err))
	}
	cfg.step("moved-in")
	if err := errors.Join(syncDir(filepath.Dir(live)), syncDir(filepath.Dir(cfg.Dir))); err != nil {
		return p.settleAfterFailure(live, fmt.Errorf("projector: swap: %w", err))
	}
	n, err := p.openLike(live)
	if err != nil {
		return p.settleAfterFailure(live, fmt.Errorf("projector: swap: open the swapped-in model: %w", err))
	}
	e.adopt(n)
	cfg.step("opened")
	if err := removeMarker(live + SwapMarker); err != nil {
		p.cfg.Logger.Warn("projector: swap: remove the marker (the next start settles it)", "err", err)
	}
	return nil
}

// settleAfterFailure runs the crash recovery in-process after a failed
// switch step and reopens whatever model it left; if none opens, the
// projector closes itself (reads answer ErrClosed) rather than serve a
// closed store. Called with p.mu held.
func (p *Projector) settleAfterFailure(live string, cause error) error {
	outcome, rerr := RecoverSwap(live)
	p.cfg.Logger.Error("projector: swap failed during the switch", "err", cause, "recovery", outcome, "recovery_err", rerr)
	if rerr == nil {
		if n, err := p.openLike(live); err == nil {
			p.eng.adopt(n)
			return fmt.Errorf("%w (recovered: %s)", cause, outcome)
		} else {
			rerr = err
		}
	}
	p.mu.closed = true
	if p.mu.cancel != nil {
		p.mu.cancel()
	}
	close(p.done)
	return fmt.Errorf("%w; recovery failed, the projector is closed (restart the node): %w", cause, rerr)
}

func (p *Projector) openLike(dir string) (*engine, error) {
	return openEngine(engineConfig{
		dir: dir, keys: p.cfg.Keys, merger: p.cfg.Merger, zone: p.cfg.Zone,
		zoneKeys: p.cfg.ZoneKeys, now: p.cfg.Now, log: p.cfg.Logger, shards: p.cfg.ApplyWorkers, cache: p.cfg.CacheEntries,
		store: p.cfg.storeOptions(),
	})
}

// adopt takes over n's store and positions (n is discarded). The caller
// holds the projector's write lock and consumption is paused, so no batch
// is applied and no read is inside the store.
func (e *engine) adopt(n *engine) {
	e.store, e.absent, e.cache = n.store, n.absent, n.cache
	e.dropPending()
	e.mu.Lock()
	e.pos, e.inboxSeq, e.quarantined = n.pos, n.inboxSeq, n.quarantined
	close(e.mu.notify) // waiters re-check against the new positions
	e.mu.notify = make(chan struct{})
	e.mu.Unlock()
}

// RecoverSwap settles a swap that a crash interrupted, from the marker
// beside the live model directory dir: if the live model had been moved
// aside, the rebuilt one (durable before the marker was written) is moved
// in ("completed"); if it had not, the marker is dropped and the old model
// stays ("rolled back"). Without a marker it does nothing (""). No process
// may have either model open.
func RecoverSwap(dir string) (outcome string, err error) {
	live := filepath.Clean(dir)
	path := live + SwapMarker
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("projector: swap marker: %w", err)
	}
	var m swapMarker
	if err := json.Unmarshal(b, &m); err != nil || m.Live != live || m.Aside == "" || m.Incoming == "" {
		return "", fmt.Errorf("projector: swap marker %s is unreadable or names another model (%q): settle it by hand", path, b)
	}
	liveOK, asideOK, inOK := exists(live), exists(m.Aside), exists(m.Incoming)
	switch {
	case liveOK && !asideOK:
		outcome = "rolled back: the live model had not been moved; " + m.Incoming + " stays where it was"
	case liveOK && asideOK:
		outcome = "completed: the rebuilt model was in place; the previous one is in " + m.Aside
	case !liveOK && asideOK && inOK:
		if err := os.Rename(m.Incoming, live); err != nil {
			return "", fmt.Errorf("projector: swap recovery: move %s to %s: %w", m.Incoming, live, err)
		}
		if err := errors.Join(syncDir(filepath.Dir(live)), syncDir(filepath.Dir(m.Incoming))); err != nil {
			return "", fmt.Errorf("projector: swap recovery: %w", err)
		}
		outcome = "completed: moved the rebuilt model in; the previous one is in " + m.Aside
	default:
		return "", fmt.Errorf("projector: swap marker %s: none of live %s (%v), aside %s (%v), incoming %s (%v) is where a swap leaves it: settle it by hand",
			path, live, liveOK, m.Aside, asideOK, m.Incoming, inOK)
	}
	if err := removeMarker(path); err != nil {
		return "", err
	}
	return outcome, nil
}

func writeMarker(path string, m swapMarker) error {
	b, _ := json.MarshalIndent(m, "", "  ")
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write swap marker: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write swap marker: %w", err)
	}
	return nil
}

func removeMarker(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("projector: remove swap marker: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// pauser lets a swap stop the consume loop between batches and start it
// again; the loop (Projector.run) brackets every consume with begin/end.
type pauser struct {
	mu      sync.Mutex
	paused  bool
	resumed chan struct{}      // closed by resume
	cancel  context.CancelFunc // of the consume running now
	idle    chan struct{}      // closed when it returned
}

// begin waits while paused and returns the context for one consume; false
// when ctx ended.
func (s *pauser) begin(ctx context.Context) (context.Context, bool) {
	s.mu.Lock()
	for s.paused {
		ch := s.resumed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, false
		case <-ch:
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	cctx, cancel := context.WithCancel(ctx)
	s.cancel, s.idle = cancel, make(chan struct{})
	return cctx, true
}

// end marks the consume finished; it reports whether a pause stopped it.
func (s *pauser) end() (paused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
		close(s.idle)
	}
	s.cancel, s.idle = nil, nil
	return s.paused
}

// pause stops the running consume (the batch being applied completes or
// is abandoned uncommitted) and keeps the loop from starting another.
func (s *pauser) pause(ctx context.Context) error {
	s.mu.Lock()
	if s.paused {
		s.mu.Unlock()
		return ErrSwapping
	}
	s.paused, s.resumed = true, make(chan struct{})
	cancel, idle := s.cancel, s.idle
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		s.resume()
		return ctx.Err()
	}
}

func (s *pauser) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused {
		s.paused = false
		close(s.resumed)
	}
}

// sameFileSystem reports whether a rename from directory a into directory
// b works (one file system): it renames a probe file across.
func sameFileSystem(a, b string) (bool, error) {
	f, err := os.CreateTemp(filepath.Dir(a), ".swap-probe-*")
	if err != nil {
		return false, err
	}
	f.Close()
	to := filepath.Join(b, filepath.Base(f.Name()))
	err = os.Rename(f.Name(), to)
	if err != nil {
		os.Remove(f.Name())
		var le *os.LinkError
		if errors.As(err, &le) && errors.Is(le.Err, syscall.EXDEV) {
			return false, nil
		}
		return false, err
	}
	return true, os.Remove(to)
}
