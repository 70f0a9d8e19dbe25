package eventlog

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Group commit.
//
// Every write (appends, checkpoints, the sequence floor, trims) is a request
// in one queue. The committer goroutine claims queued requests, assigns
// sequences, stamps and encodes records into a Pebble batch, and hands the
// batch to Pebble with ApplyNoSyncWait (memtable + WAL write, fsync
// pending). Up to Options.Pipeline such batches await their fsync; the
// committer keeps filling the next batch meanwhile. The syncer goroutine
// waits for each batch's fsync in commit order, publishes the new state
// (LastSeq, checkpoints) and only then answers the requests. Pebble's WAL is
// sequential, so a batch is never durable while an earlier one is not, and
// after a crash the log holds a prefix of the committed batches, each whole.
//
// Pebble makes a batch visible to its iterators before its fsync (even with
// plain Commit); readers here are bounded by the published LastSeq, so
// nothing is read, shipped or checkpointed before it is durable.
// ApplyNoSyncWait is marked experimental by Pebble; it is the same commit
// pipeline as Commit with the wait split off, as CockroachDB uses it for its
// Raft log.

type reqKind uint8

const (
	kindAppend reqKind = iota
	kindFloor
	kindSetCheckpoint
	kindDeleteCheckpoint
	kindTrim
)

const (
	statePending   int32 = iota
	stateClaimed         // in a batch: it will commit (or fail) regardless of ctx
	stateCancelled       // withdrawn by its caller before it was claimed
)

type request struct {
	kind reqKind
	recs [][]byte
	// recsBuf holds the record slices of a small append: Append copies the
	// caller's slice headers here (a larger append gets a copy of its own),
	// so that the caller's slice of records does not escape and may live on
	// its stack.
	recsBuf [3][]byte
	bytes   int    // sum of len(recs)
	name    string // checkpoint name
	seq     uint64 // floor, checkpoint seq or trim bound
	state   atomic.Int32
	done    chan struct{} // cap 1; signalled once, by the syncer (or committer on failure)
	first   uint64
	err     error
}

var requestPool = sync.Pool{New: func() any { return &request{done: make(chan struct{}, 1)} }}

// committerState is owned by the committer goroutine, but for wakeAt.
type committerState struct {
	// wakeAt, while the committer gathers, is the count of enqueued
	// appends at which it wants to be woken; an append that leaves
	// Log.enqueued below it does not wake it (0: every request does).
	// Appenders read it.
	wakeAt atomic.Uint64

	next    uint64 // next sequence to assign
	floor   uint64
	trimmed uint64
	cps     map[string]uint64
	scratch [][]byte   // stamped records of one append
	take    []*request // requests claimed by one fill
}

// flight is one batch on its way through Pebble.
type flight struct {
	b          *pebble.Batch
	reqs       []*request
	first      uint64 // first record seq, 0 if the batch holds no records
	last       uint64
	appends    int
	records    int
	inBytes    int // caller bytes, for the batch limit
	bytes      int // stored bytes, after Stamp
	floor      uint64
	trimTo     uint64
	cps        []cpChange
	applyError error
}

type cpChange struct {
	name string
	seq  uint64
	del  bool
}

// Append writes recs as one synced batch, all or nothing, and returns the
// sequence of the first; recs[i] gets first+i. Concurrent calls are
// coalesced into group commits. When Append returns nil the records are on
// disk (fsync done) and LastSeq() >= first+len(recs)-1.
//
// ctx can withdraw the append only while it is queued: Append then returns
// ctx.Err() and nothing is written. Once the committer has put it in a
// batch it commits whatever happens to ctx, and Append waits for the
// outcome (one fsync) and reports it, so a nil error always means written
// and an error from ctx always means not written.
func (l *Log) Append(ctx context.Context, recs ...[]byte) (first uint64, err error) {
	if len(recs) == 0 {
		return 0, argErr("recs", "must hold at least one record")
	}
	if len(recs) > l.opts.MaxBatchRecords {
		return 0, argErr("recs", fmt.Sprintf("%d records exceed Options.MaxBatchRecords (%d)", len(recs), l.opts.MaxBatchRecords))
	}
	n := 0
	for i, r := range recs {
		if len(r) > l.opts.MaxRecordBytes {
			return 0, argErr(fmt.Sprintf("recs[%d]", i), fmt.Sprintf("%d bytes exceed Options.MaxRecordBytes (%d)", len(r), l.opts.MaxRecordBytes))
		}
		n += len(r)
	}
	if n > l.opts.MaxBatchBytes {
		return 0, argErr("recs", fmt.Sprintf("%d bytes exceed Options.MaxBatchBytes (%d)", n, l.opts.MaxBatchBytes))
	}
	r := newRequest(kindAppend)
	r.recs, r.bytes = append(r.recsBuf[:0:len(r.recsBuf)], recs...), n
	return l.submit(ctx, r)
}

// SetSequenceFloor makes every later append get a sequence > seq, durably
// (re-seed uses it so that a rebuilt log never reuses a number that left
// the node before the loss). A floor at or below the highest sequence
// already assigned changes nothing. The gap it creates is visible to
// readers only as missing sequences; it is not trimmed data.
func (l *Log) SetSequenceFloor(seq uint64) error {
	if seq >= maxFloor {
		return argErr("seq", fmt.Sprintf("sequence floor %d must be < 2^63", seq))
	}
	r := newRequest(kindFloor)
	r.seq = seq
	_, err := l.submit(context.Background(), r)
	return err
}

// maxFloor keeps sequences far from overflowing uint64.
const maxFloor = 1 << 63

func newRequest(k reqKind) *request {
	r := requestPool.Get().(*request)
	r.kind = k
	return r
}

// release returns a request whose done has been received; a cancelled
// request is not reused because the committer may still hold it.
func release(r *request) {
	r.recs, r.name, r.seq, r.bytes, r.first, r.err = nil, "", 0, 0, 0, nil
	clear(r.recsBuf[:]) // the pool must not keep the caller's records alive
	r.state.Store(statePending)
	requestPool.Put(r)
}

func (l *Log) submit(ctx context.Context, r *request) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	l.queue.Lock()
	if l.queue.closed {
		l.queue.Unlock()
		return 0, ErrClosed
	}
	l.queue.reqs = append(l.queue.reqs, r)
	wake := true
	if r.kind == kindAppend {
		// Read after the increment: either this append sees the
		// threshold the committer set or the committer, which sets it
		// before it reads enqueued, sees this append (gather).
		wake = l.enqueued.Add(1) >= l.c.wakeAt.Load()
	}
	l.queue.Unlock()
	if wake {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	if cancel := ctx.Done(); cancel == nil {
		<-r.done // nothing can withdraw it: no select
	} else {
		select {
		case <-r.done:
		case <-cancel:
			if r.state.CompareAndSwap(statePending, stateCancelled) {
				return 0, ctx.Err()
			}
			<-r.done
		}
	}
	first, err := r.first, r.err
	release(r)
	return first, err
}

// commitLoop is the committer goroutine. On Close (ctx done) it commits
// everything still queued, then closes flights so the syncer finishes.
func (l *Log) commitLoop() {
	defer l.wg.Done()
	defer close(l.flights)
	done := l.ctx.Done()
	delay := time.NewTimer(time.Hour)
	delay.Stop()
	var cur *flight
	for {
		var full bool
		cur, full = l.fill(cur)
		if cur != nil {
			wake := l.wake
			if full {
				wake = nil // nothing more fits: only a free slot helps
			}
			select {
			case l.slots <- struct{}{}:
				if !full {
					// Take whatever queued meanwhile (the select may
					// have preferred the slot over a pending wake).
					cur, full = l.fill(cur)
				}
				if !full && done != nil {
					cur, done = l.gather(cur, delay, done)
				}
				l.apply(cur)
				cur = nil
			case <-wake:
			case <-done:
				done = nil
			}
			continue
		}
		if done == nil {
			// Closing: the queue was closed before ctx was cancelled and
			// fill found nothing left, so every request has been handled.
			return
		}
		select {
		case <-l.wake:
		case <-done:
			done = nil
		}
	}
}

// gather implements the commit delay. It runs when the committer holds a
// slot for cur. If the disk is idle (no other batch awaiting its fsync) and
// the batch that completed last woke several callers, those callers are
// likely to append again within microseconds (a server answering requests,
// a closed loop of writers); without waiting for them every fsync would
// carry only the half of the writers that queued while the previous one
// ran. gather keeps filling cur until as many appends arrived after that
// completion as it answered, or Options.CommitDelay passes, whichever is
// first. A single writer never waits: its own next append is the one
// expected. The wait is bounded by CommitDelay per commitDelayGroup callers
// expected (at most commitDelayMaxFactor times CommitDelay): with 64 closed-
// loop writers that each spend ~10-20 µs of CPU on an append, the last of
// them comes back several hundred µs after the first on two cores; a fixed
// 100 µs bound split them over two fsyncs (about 40 of 64 appends per fsync
// instead of 62, measured with the writer), which cost more CPU per append
// and fewer appends per second. At low rates the expected group is one or
// two appends and the bound stays CommitDelay.
func (l *Log) gather(cur *flight, delay *time.Timer, done <-chan struct{}) (*flight, <-chan struct{}) {
	woke := l.woke.Swap(0)
	if l.opts.CommitDelay <= 0 || woke < 2 || len(l.slots) > 1 {
		return cur, done
	}
	target := l.wokeAt.Load() + woke
	// Woken once, by the append that completes the group (or by the
	// timer), rather than by each append: the committer then claims them
	// in one fill instead of running, and taking a core from the callers
	// still on their way, once per append.
	l.c.wakeAt.Store(target)
	defer l.c.wakeAt.Store(0)
	if l.enqueued.Load() >= target {
		cur, _ = l.fill(cur)
		return cur, done
	}
	delay.Reset(commitDelayFor(l.opts.CommitDelay, woke))
	defer delay.Stop()
	for l.enqueued.Load() < target {
		select {
		case <-l.wake:
			var full bool
			if cur, full = l.fill(cur); full {
				return cur, done
			}
		case <-delay.C:
			cur, _ = l.fill(cur)
			return cur, done
		case <-done:
			return cur, nil
		}
	}
	cur, _ = l.fill(cur)
	return cur, done
}

// commitDelayGroup and commitDelayMaxFactor scale the commit delay with the
// number of callers expected back (see gather).
const (
	commitDelayGroup     = 8
	commitDelayMaxFactor = 10
)

// commitDelayFor is the longest gather waits for woke callers to append
// again: d per commitDelayGroup of them, at least d, at most
// commitDelayMaxFactor times d.
func commitDelayFor(d time.Duration, woke uint64) time.Duration {
	f := min(max((woke+commitDelayGroup-1)/commitDelayGroup, 1), commitDelayMaxFactor)
	return d * time.Duration(f)
}

// fill claims queued requests into cur (creating it if needed) while they
// fit the batch limits and encodes them. full reports that a request was
// left queued for lack of room.
func (l *Log) fill(cur *flight) (_ *flight, full bool) {
	records, bytes := 0, 0
	if cur != nil {
		records, bytes = cur.records, cur.inBytes
	}
	l.queue.Lock()
	q := l.queue.reqs
	take := l.c.take[:0]
	i := 0
	for ; i < len(q); i++ {
		r := q[i]
		if r.kind == kindAppend {
			if (records > 0 || bytes > 0) && (records+len(r.recs) > l.opts.MaxBatchRecords || bytes+r.bytes > l.opts.MaxBatchBytes) {
				full = true
				break
			}
		}
		if !r.state.CompareAndSwap(statePending, stateClaimed) {
			continue // withdrawn by its caller
		}
		records += len(r.recs)
		bytes += r.bytes
		take = append(take, r)
	}
	n := copy(q, q[i:])
	clear(q[n:])
	l.queue.reqs = q[:n]
	l.queue.Unlock()

	defer func() { clear(take); l.c.take = take[:0] }()
	if len(take) == 0 {
		return cur, full
	}
	if cur == nil {
		cur = &flight{b: l.db.NewBatchWithSize(bytes + records*(recordKeyLen+valueHeaderLen+8) + 64)}
	}
	failure := l.failure.Load()
	for _, r := range take {
		if failure != nil {
			r.err = *failure
			r.done <- struct{}{}
			continue
		}
		l.encode(cur, r)
	}
	if failure == nil {
		l.retain(cur)
	}
	return cur, full
}

// encode adds one claimed request to the batch. A request that fails here
// (Stamp panicked) is answered at once and leaves no trace in the batch.
func (l *Log) encode(f *flight, r *request) {
	c := &l.c
	switch r.kind {
	case kindAppend:
		seq := c.next
		data := r.recs
		if l.opts.Stamp != nil {
			c.scratch = c.scratch[:0]
			for i, rec := range r.recs {
				d, err := l.stamp(seq+uint64(i), rec)
				if err != nil {
					clear(c.scratch)
					r.err = err
					r.done <- struct{}{}
					return
				}
				c.scratch = append(c.scratch, d)
			}
			data = c.scratch
		}
		for i, d := range data {
			s := seq + uint64(i)
			op := f.b.SetDeferred(recordKeyLen, valueHeaderLen+len(d))
			putRecordKey(op.Key, s)
			putRecordValueKeyed(op.Value, op.Key, d)
			_ = op.Finish() // only fails for indexed batches
			f.bytes += len(d)
		}
		if l.opts.Stamp != nil {
			clear(c.scratch)
		}
		n := uint64(len(r.recs))
		r.first = seq
		if f.first == 0 {
			f.first = seq
		}
		f.last = seq + n - 1
		f.records += len(r.recs)
		f.inBytes += r.bytes
		f.appends++
		c.next += n
	case kindFloor:
		if r.seq > c.floor {
			c.floor = r.seq
			_ = f.b.Set(metaFloor, putUint64(r.seq), nil)
			f.floor = r.seq
		}
		c.next = max(c.next, r.seq+1)
	case kindSetCheckpoint:
		c.cps[r.name] = r.seq
		_ = f.b.Set(checkpointKey(r.name), putUint64(r.seq), nil)
		f.cps = append(f.cps, cpChange{name: r.name, seq: r.seq})
	case kindDeleteCheckpoint:
		delete(c.cps, r.name)
		_ = f.b.Delete(checkpointKey(r.name), nil)
		f.cps = append(f.cps, cpChange{name: r.name, del: true})
	case kindTrim:
		l.trim(f, r.seq)
	}
	f.reqs = append(f.reqs, r)
}

// putRecordValueKeyed is putRecordValue for a record whose key (prefix,
// then the sequence, big-endian) is already in the batch: the checksum
// reads the sequence from there, so no sequence buffer escapes to the heap
// through crc32's table dispatch (an allocation per record).
func putRecordValueKeyed(dst, key, data []byte) {
	dst[0] = valueFormat
	crc := crc32.Update(crc32.Checksum(key[1:recordKeyLen], castagnoli), castagnoli, data)
	binary.BigEndian.PutUint32(dst[1:valueHeaderLen], crc)
	copy(dst[valueHeaderLen:], data)
}

func (l *Log) stamp(seq uint64, rec []byte) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &StampError{Seq: seq, Panic: p}
		}
	}()
	return l.opts.Stamp(seq, rec), nil
}

// retain adds the automatic trim to the batch when the retention rule
// allows at least Step records to go.
func (l *Log) retain(f *flight) {
	c, rt := &l.c, l.opts.Retention
	if rt.Off || len(c.cps) == 0 {
		return
	}
	lowest := uint64(1<<64 - 1)
	for _, s := range c.cps {
		lowest = min(lowest, s)
	}
	end := c.next // one past the newest assigned sequence
	if end <= rt.Keep {
		return
	}
	target := min(lowest+1, end-rt.Keep)
	if target >= max(c.trimmed, 1)+rt.Step {
		l.trim(f, target)
	}
}

// trim deletes every record below below in this batch.
func (l *Log) trim(f *flight, below uint64) {
	c := &l.c
	if below <= max(c.trimmed, 1) {
		return // nothing lies below sequence 1
	}
	_ = f.b.DeleteRange(recordKey(c.trimmed), recordKey(below), nil)
	_ = f.b.Set(metaTrimmed, putUint64(below), nil)
	c.trimmed = below
	// Published before the batch is applied: a reader that could see the
	// deletion also sees the marker, so it reports ErrTrimmed instead of
	// silently starting later.
	l.trimmed.Store(below)
	f.trimTo = below
}

// apply hands a batch to Pebble (memtable and WAL write) without waiting for
// its fsync; the syncer waits. The caller holds a slot.
func (l *Log) apply(f *flight) {
	if f.b.Empty() {
		// Nothing to write (a floor below the sequence, for instance); the
		// syncer still answers it in order, after the batches before it.
		f.b.Close()
		f.b = nil
	} else if err := l.db.ApplyNoSyncWait(f.b, pebble.Sync); err != nil {
		f.applyError = err
	}
	l.flights <- f
}

// syncLoop is the syncer goroutine: it waits for each batch's fsync in
// commit order and publishes it. It ends when the committer closes flights.
func (l *Log) syncLoop() {
	defer l.wg.Done()
	for f := range l.flights {
		err := f.applyError
		if f.b != nil {
			if err == nil {
				err = f.b.SyncWait()
			}
			_ = f.b.Close()
		}
		if err == nil && l.failure.Load() != nil {
			// An earlier batch failed; this one may be on disk but the log
			// no longer vouches for anything after the failure.
			err = *l.failure.Load()
		} else if err != nil {
			werr := fmt.Errorf("%w: commit: %w", ErrFailed, err)
			l.failure.CompareAndSwap(nil, &werr)
			err = werr
		}
		if err == nil {
			l.publish(f)
		}
		if err == nil && f.appends > 0 {
			// For the commit delay: these callers may append again.
			l.wokeAt.Store(l.enqueued.Load())
			l.woke.Store(uint64(f.appends))
		}
		// Free the slot before waking the callers: the next batch can go
		// to Pebble while they are being scheduled.
		<-l.slots
		for _, r := range f.reqs {
			if err != nil {
				r.first, r.err = 0, err
			}
			r.done <- struct{}{}
		}
	}
}

// publish makes a durable batch visible: sequences, trim, floor,
// checkpoints, counters, then tail waiters.
func (l *Log) publish(f *flight) {
	if f.last > 0 || f.trimTo > 0 {
		l.seq.Lock()
		if f.last > 0 {
			if l.seq.first.Load() > l.seq.last.Load() {
				l.seq.first.Store(f.first) // the log was empty
			}
			l.seq.last.Store(f.last)
		}
		if f.trimTo > 0 {
			l.seq.first.Store(l.firstAtOrAboveLocked(f.trimTo))
			l.stats.trims.Add(1)
		}
		l.seq.Unlock()
	}
	if f.floor > 0 {
		l.floor.Store(f.floor)
	}
	if len(f.cps) > 0 {
		l.cps.Lock()
		for _, c := range f.cps {
			if c.del {
				delete(l.cps.m, c.name)
			} else {
				l.cps.m[c.name] = c.seq
			}
		}
		l.cps.Unlock()
	}
	if f.records > 0 {
		l.stats.appends.Add(uint64(f.appends))
		l.stats.records.Add(uint64(f.records))
		l.stats.bytes.Add(uint64(f.bytes))
		l.stats.recordBatches.Add(1)
	}
	if f.b != nil {
		l.stats.batches.Add(1)
	}
	if f.last > 0 {
		next := make(chan struct{})
		close(*l.tail.Swap(&next))
	}
}

// firstAtOrAboveLocked finds the lowest record >= seq after a trim (there
// may be a floor gap), or LastSeq()+1 if there is none.
func (l *Log) firstAtOrAboveLocked(seq uint64) uint64 {
	last := l.seq.last.Load()
	if seq > last {
		return last + 1
	}
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: recordKey(seq), UpperBound: recordKey(last + 1)})
	if err != nil {
		return seq
	}
	defer it.Close()
	if it.First() {
		if s, err := decodeRecordKey(it.Key()); err == nil {
			return s
		}
		return seq
	}
	if it.Error() != nil {
		return seq
	}
	return last + 1
}
