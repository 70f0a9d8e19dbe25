package projector

import (
	"bytes"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// sortedWrites collects a batch's small writes (index entries, erasure
// markers) and hands them to a Pebble batch in key order; the states are
// written in key order directly. The memtable inserts a batch's keys one
// by one into its skiplist; in key order each insert starts from the
// previous one's position (arenaskl's splice hint) instead of descending
// the whole list, which is most of a commit's cost when a batch touches
// thousands of identities. Writes to one key keep their order.
type sortedWrites struct {
	arena []byte // keys and values, back to back
	ops   []sortedOp
}

type sortedOp struct {
	key, val span
	del      bool
}

type span struct{ off, len int }

// kvWriter is what writeEntry writes to: a Pebble batch or sortedWrites.
type kvWriter interface {
	Set(key, value []byte, _ *pebble.WriteOptions) error
	Delete(key []byte, _ *pebble.WriteOptions) error
}

var _ kvWriter = (*pebble.Batch)(nil)

func (w *sortedWrites) put(b []byte) span {
	s := span{len(w.arena), len(b)}
	w.arena = append(w.arena, b...)
	return s
}

func (w *sortedWrites) bytes(s span) []byte { return w.arena[s.off : s.off+s.len : s.off+s.len] }

// Set copies key and value, as a Pebble batch does.
func (w *sortedWrites) Set(key, value []byte, _ *pebble.WriteOptions) error {
	w.ops = append(w.ops, sortedOp{key: w.put(key), val: w.put(value)})
	return nil
}

// Delete copies key.
func (w *sortedWrites) Delete(key []byte, _ *pebble.WriteOptions) error {
	w.ops = append(w.ops, sortedOp{key: w.put(key), del: true})
	return nil
}

// flush writes the collected writes into wb in key order and empties w.
func (w *sortedWrites) flush(wb *pebble.Batch) error {
	slices.SortStableFunc(w.ops, func(a, b sortedOp) int { return bytes.Compare(w.bytes(a.key), w.bytes(b.key)) })
	for _, op := range w.ops {
		var err error
		if op.del {
			err = wb.Delete(w.bytes(op.key), nil)
		} else {
			err = wb.Set(w.bytes(op.key), w.bytes(op.val), nil)
		}
		if err != nil {
			return err
		}
	}
	w.arena, w.ops = w.arena[:0], w.ops[:0]
	return nil
}
