package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Log is a durable, append-only sequence of records on Pebble. It is safe
// for concurrent use.
//
// Sequences start at 1 and are dense: every sequence in [FirstSeq, LastSeq]
// holds a record, except gaps made on purpose by SetSequenceFloor. LastSeq
// only ever grows; it counts durable records only, so a reader never sees a
// record whose fsync has not completed.
type Log struct {
	opts   Options
	db     *pebble.DB
	fsyncs *atomic.Uint64 // WAL fsyncs, counted by countingFS

	// ctx is cancelled by Close; the committer then commits what is queued
	// and exits.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{} // closed when Close begins: wakes Wait

	queue struct {
		sync.Mutex
		reqs   []*request
		closed bool
	}
	wake    chan struct{} // cap 1: the queue has new requests
	flights chan *flight  // committer -> syncer, in commit order
	slots   chan struct{} // cap Pipeline: batches applied and awaiting fsync

	c committerState // owned by the committer goroutine
	// For the commit delay: appends ever enqueued, and how many callers the
	// last completed batch woke when enqueued stood at wokeAt.
	enqueued, woke, wokeAt atomic.Uint64
	failure                atomic.Pointer[error] // sticky: set when a commit fails

	// Published state, written by the syncer once a batch is durable.
	seq struct {
		sync.Mutex // held to update (first, last) together and for pair reads
		first      atomic.Uint64
		last       atomic.Uint64
	}
	floor   atomic.Uint64
	trimmed atomic.Uint64 // all seqs below it are gone; set before the trim commits
	tail    atomic.Pointer[chan struct{}]
	cps     struct {
		sync.Mutex
		m map[string]uint64
	}

	// open guards direct use of db by readers against Close.
	open struct {
		sync.RWMutex
		closed  bool
		readers map[*Reader]struct{}
	}

	closeOnce sync.Once
	closeErr  error

	stats struct {
		appends, batches, recordBatches, records, bytes, corrupt, trims atomic.Uint64
	}
}

// Open opens (creating if needed) the log in opts.Dir. It refuses a
// directory that holds another Pebble database or another format version.
func Open(opts Options) (*Log, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	fsyncs := new(atomic.Uint64)
	db, err := pebble.Open(opts.Dir, pebbleOptions(opts, countingFS{FS: vfs.Default, n: fsyncs}))
	if err != nil {
		return nil, fmt.Errorf("eventlog: open %s: %w", opts.Dir, err)
	}
	l := &Log{
		opts:    opts,
		db:      db,
		fsyncs:  fsyncs,
		done:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		flights: make(chan *flight, opts.Pipeline),
		slots:   make(chan struct{}, opts.Pipeline),
	}
	if err := l.load(); err != nil {
		return nil, errors.Join(fmt.Errorf("eventlog: open %s: %w", opts.Dir, err), db.Close())
	}
	tail := make(chan struct{})
	l.tail.Store(&tail)
	l.open.readers = make(map[*Reader]struct{})
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(2)
	go l.commitLoop()
	go l.syncLoop()
	return l, nil
}

// load reads the persistent state: format version, floor, trim marker,
// checkpoints and the record range.
func (l *Log) load() error {
	v, ok, err := l.getUint64(metaVersion)
	if err != nil {
		return err
	}
	if !ok {
		if empty, err := l.isEmpty(); err != nil {
			return err
		} else if !empty {
			return errors.New("directory holds a Pebble database that is not an event log (no format version)")
		}
		if err := l.db.Set(metaVersion, putUint64(formatVersion), pebble.Sync); err != nil {
			return err
		}
	} else if v != formatVersion {
		return fmt.Errorf("unsupported format version %d (this build reads %d)", v, formatVersion)
	}
	floor, _, err := l.getUint64(metaFloor)
	if err != nil {
		return err
	}
	trimmed, _, err := l.getUint64(metaTrimmed)
	if err != nil {
		return err
	}
	cps, err := l.loadCheckpoints()
	if err != nil {
		return err
	}

	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixRecord}, UpperBound: recordKeyUpper})
	if err != nil {
		return err
	}
	var first, last uint64
	if it.First() {
		first, err = decodeRecordKey(it.Key())
		if err == nil && it.Last() {
			last, err = decodeRecordKey(it.Key())
		}
	}
	if err = errors.Join(err, it.Error(), it.Close()); err != nil {
		return err
	}
	if first == 0 {
		// No records. If everything was trimmed, the marker still remembers
		// how far the sequence got.
		if trimmed > 0 {
			last = trimmed - 1
		}
		first = last + 1
	}
	l.seq.first.Store(first)
	l.seq.last.Store(last)
	l.floor.Store(floor)
	l.trimmed.Store(trimmed)
	l.cps.m = cps
	l.c = committerState{
		next:    max(last, floor) + 1,
		floor:   floor,
		trimmed: trimmed,
		cps:     make(map[string]uint64, len(cps)),
	}
	for k, v := range cps {
		l.c.cps[k] = v
	}
	return nil
}

func decodeRecordKey(k []byte) (uint64, error) {
	if len(k) != recordKeyLen || k[0] != prefixRecord {
		return 0, &CorruptError{Reason: fmt.Sprintf("malformed record key %x", k)}
	}
	seq, _ := getUint64(k[1:])
	return seq, nil
}

func (l *Log) getUint64(key []byte) (uint64, bool, error) {
	v, closer, err := l.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	n, ok := getUint64(v)
	if !ok {
		return 0, false, fmt.Errorf("meta key %q: value of %d bytes, want 8", key, len(v))
	}
	return n, true, nil
}

func (l *Log) isEmpty() (bool, error) {
	it, err := l.db.NewIter(nil)
	if err != nil {
		return false, err
	}
	empty := !it.First()
	return empty, errors.Join(it.Error(), it.Close())
}

// FirstSeq is the lowest sequence the log holds, or LastSeq()+1 when it
// holds none.
func (l *Log) FirstSeq() uint64 { return l.seq.first.Load() }

// LastSeq is the highest durable sequence ever appended (it stays after the
// records are trimmed), 0 for a new log.
func (l *Log) LastSeq() uint64 { return l.seq.last.Load() }

// Wait returns nil once LastSeq() > after, ctx.Err() if ctx ends first, and
// ErrClosed if the log is closed first.
func (l *Log) Wait(ctx context.Context, after uint64) error {
	for {
		// Load the channel before checking: a commit publishes last, then
		// swaps and closes the channel, so either the check sees the new
		// last or the old channel is closed.
		ch := *l.tail.Load()
		if l.seq.last.Load() > after {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.done:
			if l.seq.last.Load() > after {
				return nil
			}
			return ErrClosed
		}
	}
}

// tailSignal returns the channel that the next publish of records closes.
// Take it before checking LastSeq (as Wait does) so that no append is
// missed in between.
func (l *Log) tailSignal() <-chan struct{} { return *l.tail.Load() }

// Read returns up to max records with sequences >= from, in order, each
// checksum-verified and copied. It returns an empty slice when from >
// LastSeq(). If from is below a trimmed range it returns a *TrimmedError
// (ErrTrimmed) and no records: a gap is never skipped silently. If a record
// does not verify it returns the records before it and a *CorruptError
// (ErrCorrupt) naming its sequence.
func (l *Log) Read(from uint64, max int) ([]Record, error) {
	if max < 1 {
		return nil, argErr("max", fmt.Sprintf("must be >= 1, got %d", max))
	}
	from = firstValid(from)
	l.open.RLock()
	defer l.open.RUnlock()
	if l.open.closed {
		return nil, ErrClosed
	}
	last := l.seq.last.Load()
	if from > last {
		return nil, nil
	}
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: recordKey(from), UpperBound: recordKey(last + 1)})
	if err != nil {
		return nil, fmt.Errorf("eventlog: read: %w", err)
	}
	defer it.Close()
	// Checked after the iterator exists: a trim sets the marker before its
	// deletion commits, so a deletion this iterator sees is caught here.
	if err := l.checkTrimmed(from); err != nil {
		return nil, err
	}
	var out []Record
	expect := from
	for ok := it.First(); ok && len(out) < max; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return out, fmt.Errorf("eventlog: read: %w", err)
		}
		seq, data, err := decodeRecord(it.Key(), v, expect)
		if err != nil {
			l.stats.corrupt.Add(1)
			return out, err
		}
		out = append(out, Record{Seq: seq, Data: append([]byte(nil), data...)})
		expect = seq + 1
	}
	if err := it.Error(); err != nil {
		return out, fmt.Errorf("eventlog: read: %w", err)
	}
	return out, nil
}

// firstValid maps 0 to 1: sequences start at 1, so reading from 0 means
// reading from the start.
func firstValid(from uint64) uint64 { return max(from, 1) }

func (l *Log) checkTrimmed(from uint64) error {
	if t := l.trimmed.Load(); from < t {
		return &TrimmedError{From: from, First: max(l.seq.first.Load(), t)}
	}
	return nil
}

// Close commits what is already queued, waits for in-flight appends (each
// either commits or gets an error), stops the log's goroutines, closes open
// Readers and Pebble. Operations after Close return ErrClosed, and so do
// later calls of Close.
func (l *Log) Close() error {
	first := false
	l.closeOnce.Do(func() {
		first = true
		l.closeErr = l.close()
	})
	if !first {
		return ErrClosed
	}
	return l.closeErr
}

func (l *Log) close() error {
	l.queue.Lock()
	l.queue.closed = true
	l.queue.Unlock()
	close(l.done)
	l.cancel()
	l.wg.Wait()

	l.open.Lock()
	l.open.closed = true
	var err error
	for r := range l.open.readers {
		err = errors.Join(err, r.closeIterLocked())
	}
	l.open.readers = nil
	l.open.Unlock()
	if err := errors.Join(err, l.db.Close()); err != nil {
		return fmt.Errorf("eventlog: close: %w", err)
	}
	return nil
}
