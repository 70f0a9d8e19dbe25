package conflict

import (
	"bytes"

	"google.golang.org/protobuf/reflect/protoreflect"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// Merge joins two states of one identity (the CRDT join): registers by their
// order, sets element by element, counters share by share, erasure over
// everything. It is commutative, associative and idempotent, and joining the
// states built from any partition of a set of events equals applying them
// all. Neither input is modified; the result may share unchanged
// sub-messages with them (states are immutable values). Merging the states
// of two different identities is a caller bug; the result then keeps the
// smaller id so that the join stays commutative.
func (m *Merger) Merge(a, b *meridianv1.IdentityState) *meridianv1.IdentityState {
	id := a.GetIdentityId()
	if bid := b.GetIdentityId(); id == "" || (bid != "" && bid < id) {
		id = bid
	}
	tomb := Tombstone{Stamp: stampFromPB(a.GetErased()), Erased: a.GetErased() != nil}.
		Merge(Tombstone{Stamp: stampFromPB(b.GetErased()), Erased: b.GetErased() != nil})
	if tomb.Erased {
		return tombstoneState(id, tomb.Stamp)
	}
	out := &meridianv1.IdentityState{
		IdentityId: id,
		UpdatedHlc: max(a.GetUpdatedHlc(), b.GetUpdatedHlc()),
	}
	pick := func(less func(x, y *meridianv1.Register) bool) func(x, y *meridianv1.Register) *meridianv1.Register {
		return func(x, y *meridianv1.Register) *meridianv1.Register {
			if less(x, y) {
				return y
			}
			return x
		}
	}
	byPath := byKey((*meridianv1.Register).GetPath)
	out.Registers = joinSorted(a.GetRegisters(), b.GetRegisters(), byPath, pick(registerLess))
	out.MaxRegisters = joinSorted(a.GetMaxRegisters(), b.GetMaxRegisters(), byPath,
		pick(func(x, y *meridianv1.Register) bool { return m.maxLess(x.GetPath(), x, y) }))
	out.Sets = joinSorted(a.GetSets(), b.GetSets(), byKey((*meridianv1.SetState).GetName), func(x, y *meridianv1.SetState) *meridianv1.SetState {
		t := m.targets[x.GetName()]
		join := m.joinFor(t)
		elems := joinSorted(x.GetElements(), y.GetElements(),
			func(p, q *meridianv1.SetElement) int { return bytes.Compare(p.GetKey(), q.GetKey()) },
			func(p, q *meridianv1.SetElement) *meridianv1.SetElement {
				if p == q {
					return p
				}
				ep, eq := elementFromPB(p), elementFromPB(q)
				e := ep.Merge(eq, join)
				if t != nil && t.rule == meridianv1.MergeRule_MERGE_RULE_GROW_ONLY_SET {
					e = e.newestOnly()
				}
				// One side is the join more often than not: share it
				// (elements are replaced, never modified).
				switch {
				case sameElement(e, ep):
					return p
				case sameElement(e, eq):
					return q
				}
				return elementToPB(p.GetKey(), e)
			})
		return &meridianv1.SetState{Name: x.GetName(), Elements: elems}
	})
	out.Counters = joinSorted(a.GetCounters(), b.GetCounters(), byKey((*meridianv1.CounterState).GetName), func(x, y *meridianv1.CounterState) *meridianv1.CounterState {
		shares := joinSorted(x.GetShares(), y.GetShares(), byKey((*meridianv1.CounterShare).GetNode), func(p, q *meridianv1.CounterShare) *meridianv1.CounterShare {
			return &meridianv1.CounterShare{Node: p.GetNode(), Sequences: unionSorted(p.GetSequences(), q.GetSequences())}
		})
		return &meridianv1.CounterState{Name: x.GetName(), Shares: shares}
	})
	return out
}

// maxLess orders two MAX registers at path by the values they hold (decoded
// with the schema), then by stamp. Registers of a path the schema no longer
// has fall back to their bytes, which still converges.
func (m *Merger) maxLess(path string, a, b *meridianv1.Register) bool {
	return m.maxLessAt(m.maxPaths[path], a, b)
}

// maxLessAt is maxLess for the register at chain (nil: not in the schema).
func (m *Merger) maxLessAt(chain []protoreflect.FieldDescriptor, a, b *meridianv1.Register) bool {
	if chain != nil {
		va, oka := m.registerValue(chain, a.GetValue())
		vb, okb := m.registerValue(chain, b.GetValue())
		switch {
		case oka != okb:
			return okb
		case oka:
			if c := compareScalar(chain[len(chain)-1].Kind(), va, vb); c != 0 {
				return c < 0
			}
		}
	}
	if c := bytes.Compare(a.GetValue(), b.GetValue()); c != 0 {
		return c < 0
	}
	return stampFromPB(a.GetStamp()).Compare(stampFromPB(b.GetStamp())) < 0
}

// registerValue is decodeRegister, reading canonical registers straight
// off the wire.
func (m *Merger) registerValue(chain []protoreflect.FieldDescriptor, b []byte) (protoreflect.Value, bool) {
	if fastCodec {
		if v, ok, canonical := registerScalar(chain, b); canonical {
			return v, ok
		}
	}
	return m.decodeRegister(chain, b)
}

// joinFor returns the payload join of a set's elements: field-wise union for
// message elements (the parts of one add), max for anything else.
func (m *Merger) joinFor(t *target) func(a, b []byte) []byte {
	if t == nil || t.keyField == nil {
		return maxBytes
	}
	return func(a, b []byte) []byte { return joinElement(t.newElem, a, b) }
}

// unionSorted merges two ascending, duplicate-free slices.
func unionSorted(a, b []uint64) []uint64 {
	out := make([]uint64, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		switch {
		case a[0] < b[0]:
			out, a = append(out, a[0]), a[1:]
		case a[0] > b[0]:
			out, b = append(out, b[0]), b[1:]
		default:
			out, a, b = append(out, a[0]), a[1:], b[1:]
		}
	}
	return append(append(out, a...), b...)
}
