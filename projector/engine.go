package projector

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/meridian-id/meridian/conflict"
	"github.com/meridian-id/meridian/keystore"
)

// engine is the apply path shared by the live projector and Rebuild: it
// owns the store and turns runs of inbox messages into committed batches.
// One goroutine calls process; readers use the snapshot methods.
type engine struct {
	store  *store
	keys   KeyStore
	step   *stepper
	merger *conflict.Merger
	now    func() int64
	log    *slog.Logger
	shards int           // apply goroutines per batch
	absent *absentFilter // nil unless the model was empty when opened
	cache  *stateCache   // nil when disabled

	// commitEvery > 0 defers commits until that many messages are
	// applied, or the deferred batches hold commitIdentities identities
	// (or a batch erases someone): a rebuild then encodes, seals and
	// writes an identity updated in many batches once per commit instead
	// of once per batch. The pending batches hold the states meanwhile;
	// pendingSeq is the last inbox sequence they applied.
	commitEvery      int
	commitIdentities int
	pending          []*batch
	pendingSeq       uint64
	pendingMsgs      int

	// Written only by the applying goroutine, under mu; that goroutine
	// reads them without the lock.
	pos         *positions
	inboxSeq    uint64
	quarantined uint64

	mu struct {
		sync.Mutex
		notify chan struct{} // closed and replaced at every commit
	}
	c counters
}

type counters struct {
	messages, identity, keys, heartbeats, ignored, quarantined atomic.Uint64
	erased, lost, batches, skipped                             atomic.Uint64
	commitNanos                                                atomic.Uint64
}

type engineConfig struct {
	dir      string
	keys     KeyStore
	merger   *conflict.Merger
	zone     string
	zoneKeys map[string]keystore.ZoneKey
	now      func() int64
	log      *slog.Logger
	readOnly bool
	shards   int
	cache    int // state cache entries
	// commitEvery, commitIdentities: see engine.commitEvery (0: commit
	// every batch; commitIdentities 0: no bound but commitEvery).
	commitEvery, commitIdentities int
	store                         storeOptions // the Pebble sizes (zero: defaults)
}

func openEngine(c engineConfig) (*engine, error) {
	st, err := openStoreWith(c.dir, c.readOnly, c.store)
	if err != nil {
		return nil, err
	}
	e := &engine{
		store: st, keys: c.keys, merger: c.merger, now: c.now, log: c.log, shards: max(c.shards, 1),
		cache: newStateCache(c.cache), commitEvery: c.commitEvery, commitIdentities: c.commitIdentities,
		step: &stepper{merger: c.merger, zone: c.zone, unwrap: keystore.NewUnwrapper(c.zoneKeys)},
	}
	e.mu.notify = make(chan struct{})
	if err := e.load(c.readOnly); err != nil {
		st.close()
		return nil, err
	}
	return e, nil
}

func (e *engine) load(readOnly bool) error {
	var err error
	if e.inboxSeq, err = e.store.inboxSeq(); err != nil {
		return err
	}
	if e.quarantined, err = e.store.quarantinedCount(); err != nil {
		return err
	}
	if e.pos, err = e.store.positions(); err != nil {
		return err
	}
	if readOnly {
		return nil
	}
	if empty, err := e.store.empty(); err != nil {
		return err
	} else if empty && e.inboxSeq == 0 {
		e.absent = newAbsentFilter()
	}
	// Erasures that committed before a crash but may not have destroyed
	// the keys yet.
	ids, err := e.store.erasing()
	if err != nil {
		return err
	}
	return e.destroyKeys(ids)
}

func (e *engine) close() error { return e.store.close() }

// process applies msgs (in inbox order) as one batch. Messages at or below
// the stored inbox sequence are skipped: they are in the model already.
// On error nothing of the batch is in the model (data keys may have been
// stored; that is idempotent) and the caller retries from the stored
// position.
//
// Messages of different identities commute, so a large batch is split by
// identity over e.shards goroutines, each applying its share in inbox
// order and encoding (and sealing) the states it changed into a Pebble
// batch of its own; the shares are joined into one Pebble batch: the result
// is the same as applying them one by one.
func (e *engine) process(msgs []inMsg) error {
	err := e.processRun(msgs)
	if err != nil {
		// The batch changed the cached states it loaded in place, and
		// did not commit: forget them, the retry reloads from the store.
		e.cache.reset()
		e.dropPending()
	}
	return err
}

func (e *engine) processRun(msgs []inMsg) error {
	todo := make([]*inMsg, 0, len(msgs))
	for i := range msgs {
		if msgs[i].Seq <= max(e.inboxSeq, e.pendingSeq) {
			e.c.skipped.Add(1)
			continue
		}
		todo = append(todo, &msgs[i])
	}
	if len(todo) == 0 {
		return nil
	}
	// Deferred batches keep applying into the same share per identity, so
	// their split must not change from run to run.
	shards := e.shards
	if len(todo) < minShardMsgs*shards && e.commitEvery == 0 {
		shards = 1
	}
	parts := make([][]*inMsg, shards)
	for _, m := range todo {
		s := 0
		if shards > 1 {
			s = shardOf(m, shards)
		}
		parts[s] = append(parts[s], m)
	}
	batches := e.pending
	if batches == nil {
		batches = make([]*batch, shards)
		for s := range batches {
			batches[s] = newBatch(e)
		}
	}
	e.pending = nil
	defer func() {
		if e.pending == nil {
			for _, b := range batches {
				b.close()
			}
		}
	}()
	if err := e.shardsDo(batches, func(s int, b *batch) error {
		for _, m := range parts[s] {
			if err := b.add(m); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	e.pendingSeq, e.pendingMsgs = todo[len(todo)-1].Seq, e.pendingMsgs+len(todo)
	erasing, identities := false, 0
	for _, b := range batches {
		erasing = erasing || b.n.erased > 0
		identities += len(b.touched)
	}
	if e.pendingMsgs < e.commitEvery && !erasing && (e.commitIdentities == 0 || identities < e.commitIdentities) {
		e.pending = batches // commit later, with more
		return nil
	}
	return e.commitShards(batches)
}

// flush commits the deferred batches, if any.
func (e *engine) flush() error {
	batches := e.pending
	if batches == nil {
		return nil
	}
	e.pending = nil
	defer func() {
		for _, b := range batches {
			b.close()
		}
	}()
	err := e.commitShards(batches)
	if err != nil {
		e.cache.reset()
		e.dropPending()
	}
	return err
}

// dropPending forgets the deferred batches (their messages are applied
// again from the stored position).
func (e *engine) dropPending() {
	for _, b := range e.pending {
		b.close()
	}
	e.pending, e.pendingSeq, e.pendingMsgs = nil, 0, 0
}

// commitShards encodes the shares' states in parallel, joins the shares
// and commits them.
func (e *engine) commitShards(batches []*batch) error {
	if err := e.shardsDo(batches, func(_ int, b *batch) error { return b.writeEntries() }); err != nil {
		return err
	}
	b := batches[0]
	for _, o := range batches[1:] {
		if err := b.join(o); err != nil {
			return err
		}
	}
	b.last = e.pendingSeq
	e.pendingSeq, e.pendingMsgs = 0, 0
	return e.commit(b)
}

// shardsDo runs fn for every share on its own goroutine (the caller's
// takes the last) and waits for all.
func (e *engine) shardsDo(batches []*batch, fn func(s int, b *batch) error) error {
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for s, b := range batches {
		if s == len(batches)-1 {
			errs[s] = fn(s, b)
			continue
		}
		wg.Go(func() { errs[s] = fn(s, b) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// minShardMsgs is the least share worth a goroutine.
const minShardMsgs = 64

// commit writes the batch atomically with the inbox sequence it reached.
//
// It does not fsync unless the batch erases someone: Pebble's WAL is
// replayed as a prefix of whole batches after a crash, and every batch
// carries its own inbox sequence, so a lost tail loses states and position
// together and the restart re-applies exactly the lost messages. An
// erasure is synced before keys are destroyed, so the model can never
// come back from a crash holding resident state of a destroyed key.
func (e *engine) commit(b *batch) error {
	start := time.Now()
	if err := b.storeKeys(); err != nil {
		return err
	}
	wb := b.wb
	if err := b.writeMeta(wb); err != nil {
		return fmt.Errorf("projector: build batch: %w", err)
	}
	erase := b.erase
	opt := pebble.NoSync
	if len(erase) > 0 {
		opt = pebble.Sync
	}
	if err := wb.Commit(opt); err != nil {
		return fmt.Errorf("projector: commit batch at inbox seq %d: %w", b.last, err)
	}
	e.c.commitNanos.Add(uint64(time.Since(start)))
	for _, en := range b.touched {
		if e.absent != nil {
			e.absent.add(en.id)
		}
		if en.globalLoaded {
			e.cache.put(en.id, cachedState{global: en.global, resident: en.resident, residentKnown: en.residentLoaded, foreign: en.foreign})
		}
	}
	// Counters first: whoever wakes on the notification sees them.
	e.c.batches.Add(1)
	e.c.messages.Add(b.n.messages)
	e.c.identity.Add(b.n.identity)
	e.c.keys.Add(b.n.keys)
	e.c.heartbeats.Add(b.n.heartbeats)
	e.c.ignored.Add(b.n.ignored)
	e.c.quarantined.Add(b.n.quarantined)
	e.c.erased.Add(b.n.erased)
	e.c.lost.Add(b.n.lost)

	e.mu.Lock()
	e.pos.merge(b.delta)
	e.inboxSeq = b.last
	e.quarantined += uint64(len(b.quar))
	close(e.mu.notify)
	e.mu.notify = make(chan struct{})
	e.mu.Unlock()

	for _, q := range b.quar {
		e.log.Warn("projector: quarantined inbox message", "seq", q.StreamSeq, "subject", q.Subject, "code", q.Code, "field", q.Field, "reason", q.Reason)
	}
	return e.destroyKeys(erase)
}

// destroyKeys crypto-shreds erased identities' data keys, then clears
// their markers (a crash in between repeats Destroy, which is idempotent).
func (e *engine) destroyKeys(ids []string) error {
	for _, id := range ids {
		n, err := e.keys.Destroy(id)
		if err != nil {
			return fmt.Errorf("projector: destroy keys of erased identity %s: %w", id, err)
		}
		e.log.Info("projector: identity erased, data keys destroyed", "identity", id, "keys", n)
		if err := e.store.erased(id); err != nil {
			return err
		}
	}
	return nil
}

// snapshot returns the committed positions and the notification channel
// that closes at the next commit.
func (e *engine) snapshot() (pos *positions, inboxSeq, quarantined uint64, next <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pos.clone(), e.inboxSeq, e.quarantined, e.mu.notify
}

func (e *engine) inboxSeqSnapshot() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inboxSeq
}
