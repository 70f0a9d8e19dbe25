package eventlog

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// readerChunk bounds what one refill copies out of Pebble.
const (
	readerChunkRecords = 512
	readerChunkBytes   = 1 << 20
)

// Reader scans the log in sequence order without allocating per record: it
// copies records out of Pebble in chunks into buffers it reuses. It follows
// the log: when it reaches LastSeq, Next returns false with a nil Err, and a
// later Next continues with whatever was appended since (pair it with
// Wait(ctx, r.Pos()-1)).
//
// A Reader is not safe for concurrent use. Close it when done; Log.Close
// closes those still open (their Next then fails with ErrClosed).
type Reader struct {
	l    *Log
	next uint64 // sequence to read next (the one after the last returned)

	it    *pebble.Iterator
	itEnd uint64 // the iterator sees records < itEnd
	itPos bool   // the iterator is positioned on the last copied record

	recs []Record
	i    int
	buf  []byte
	cur  Record
	err  error // reported once the buffered records are consumed
	done bool  // err is final
}

// NewReader returns a Reader positioned at from (records with sequences >=
// from). Trimmed and corrupt records are reported through Err, like Read.
func (l *Log) NewReader(from uint64) *Reader {
	r := &Reader{l: l, next: firstValid(from)}
	l.open.Lock()
	if l.open.closed {
		r.err, r.done = ErrClosed, true
	} else {
		l.open.readers[r] = struct{}{}
	}
	l.open.Unlock()
	return r
}

// Next advances to the next record and reports whether there is one. When
// it returns false, Err tells whether the Reader failed or just caught up.
func (r *Reader) Next() bool {
	if r.i >= len(r.recs) {
		if r.done {
			return false
		}
		r.fill()
		if r.i >= len(r.recs) {
			if r.err != nil {
				r.done = true
			}
			return false
		}
	}
	r.cur = r.recs[r.i]
	r.i++
	return true
}

// Record returns the current record. Its Data is valid until the next call
// of Next; copy it to keep it.
func (r *Reader) Record() Record { return r.cur }

// Pos returns the sequence the Reader will look for next.
func (r *Reader) Pos() uint64 {
	if r.i < len(r.recs) {
		return r.recs[r.i].Seq
	}
	return r.next
}

// Err returns the error that stopped the Reader, or nil if it only caught up
// with the log.
func (r *Reader) Err() error {
	if r.i < len(r.recs) {
		return nil
	}
	return r.err
}

// Close releases the Reader's Pebble iterator.
func (r *Reader) Close() error {
	r.l.open.Lock()
	defer r.l.open.Unlock()
	if r.l.open.readers != nil {
		delete(r.l.open.readers, r)
	}
	err := r.closeIterLocked()
	if !r.done {
		r.err, r.done = ErrClosed, true
	}
	return err
}

func (r *Reader) closeIterLocked() error {
	if r.it == nil {
		return nil
	}
	err := r.it.Close()
	r.it = nil
	return err
}

// fill copies the next chunk into r.recs, or sets r.err.
func (r *Reader) fill() {
	r.recs, r.i, r.buf = r.recs[:0], 0, r.buf[:0]
	l := r.l
	l.open.RLock()
	defer l.open.RUnlock()
	if l.open.closed {
		r.err = ErrClosed
		return
	}
	if r.err != nil {
		return
	}
	last := l.seq.last.Load()
	if r.next > last {
		return // caught up
	}
	if r.it == nil || r.next >= r.itEnd {
		// A Pebble iterator is a snapshot: records appended after it was
		// made need a new one.
		if err := r.closeIterLocked(); err != nil {
			r.err = fmt.Errorf("eventlog: reader: %w", err)
			return
		}
		it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: recordKey(r.next), UpperBound: recordKey(last + 1)})
		if err != nil {
			r.err = fmt.Errorf("eventlog: reader: %w", err)
			return
		}
		r.it, r.itEnd, r.itPos = it, last+1, false
	}
	// After the iterator exists (see Log.Read). Also catches a trim between
	// two chunks of the same iterator, which still sees the old records.
	if err := l.checkTrimmed(r.next); err != nil {
		r.err = err
		return
	}
	var ok bool
	if r.itPos {
		ok = r.it.Next()
	} else {
		ok = r.it.First()
	}
	for ; ok; ok = r.it.Next() {
		v, err := r.it.ValueAndErr()
		if err != nil {
			r.err = fmt.Errorf("eventlog: reader: %w", err)
			break
		}
		seq, data, err := decodeRecord(r.it.Key(), v, r.next)
		if err != nil {
			l.stats.corrupt.Add(1)
			r.err = err
			break
		}
		off := len(r.buf)
		r.buf = append(r.buf, data...)
		r.recs = append(r.recs, Record{Seq: seq, Data: r.buf[off:len(r.buf):len(r.buf)]})
		r.next = seq + 1
		r.itPos = true
		if len(r.recs) >= readerChunkRecords || len(r.buf) >= readerChunkBytes {
			return
		}
	}
	if r.err == nil {
		if err := r.it.Error(); err != nil {
			r.err = fmt.Errorf("eventlog: reader: %w", err)
			return
		}
		// Exhausted this snapshot: continue after it next time.
		r.next = max(r.next, r.itEnd)
		r.err = errors.Join(r.closeIterLocked())
		if r.err != nil {
			r.err = fmt.Errorf("eventlog: reader: %w", r.err)
		}
	}
}
