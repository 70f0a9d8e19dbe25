package conflict

import (
	"bytes"
	"slices"
	"strings"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// Conversions between IdentityState's proto shapes and the primitives, and
// the sorted-slice lookups that keep the state canonical.

func stampFromPB(s *meridianv1.Stamp) Stamp {
	if s == nil {
		return Stamp{}
	}
	return Stamp{HLC: Timestamp(s.GetHlc()), Node: s.GetNode(), EventID: s.GetEventId()}
}

func stampToPB(s Stamp) *meridianv1.Stamp {
	if s.IsZero() {
		return nil
	}
	return &meridianv1.Stamp{Hlc: uint64(s.HLC), Node: s.Node, EventId: s.EventID}
}

func elementFromPB(e *meridianv1.SetElement) AWElement[[]byte] {
	out := AWElement[[]byte]{Added: stampFromPB(e.GetAdded()), Payload: e.GetValue(), Removed: stampFromPB(e.GetRemoved())}
	if oa := e.GetOtherAdds(); len(oa) > 0 {
		out.Others = make([]AWAdd[[]byte], len(oa))
		for i, a := range oa {
			out.Others[i] = AWAdd[[]byte]{Stamp: stampFromPB(a.GetStamp()), Payload: a.GetValue()}
		}
	}
	out.Cuts = cutsFromPB(e.GetCuts())
	return out
}

func cutsFromPB(cs []*meridianv1.NodeCut) []NodeCut {
	if len(cs) == 0 {
		return nil
	}
	out := make([]NodeCut, len(cs))
	for i, c := range cs {
		out[i] = NodeCut{Node: c.GetNode(), HLC: Timestamp(c.GetHlc())}
	}
	return out
}

func elementToPB(key []byte, e AWElement[[]byte]) *meridianv1.SetElement {
	return &meridianv1.SetElement{
		Key:       key,
		Added:     stampToPB(e.Added),
		Value:     e.Payload,
		Removed:   stampToPB(e.Removed),
		OtherAdds: othersToPB(e.Others, nil),
		Cuts:      cutsToPB(e.Cuts),
	}
}

// othersToPB converts an element's other adds; stamp, if set, returns the
// stored form of a stamp (to share one).
func othersToPB(others []AWAdd[[]byte], stamp func(Stamp) *meridianv1.Stamp) []*meridianv1.NodeAdd {
	if len(others) == 0 {
		return nil
	}
	if stamp == nil {
		stamp = stampToPB
	}
	out := make([]*meridianv1.NodeAdd, len(others))
	for i, a := range others {
		out[i] = &meridianv1.NodeAdd{Stamp: stamp(a.Stamp), Value: a.Payload}
	}
	return out
}

func cutsToPB(cuts []NodeCut) []*meridianv1.NodeCut {
	if len(cuts) == 0 {
		return nil
	}
	out := make([]*meridianv1.NodeCut, len(cuts))
	for i, c := range cuts {
		out[i] = &meridianv1.NodeCut{Node: c.Node, Hlc: uint64(c.HLC)}
	}
	return out
}

// sameElement reports whether two set elements are equal, metadata
// included.
func sameElement(a, b AWElement[[]byte]) bool { return a.Equal(b, bytes.Equal) }

// findElement returns the index of key in elements (sorted by key) and
// whether it is there.
func findElement(elems []*meridianv1.SetElement, key []byte) (int, bool) {
	return slices.BinarySearchFunc(elems, key, func(e *meridianv1.SetElement, k []byte) int {
		return bytes.Compare(e.GetKey(), k)
	})
}

// findRegister, findSet, findCounter and findShare are findByKey for the
// lists Apply searches for every write, without its indirect calls.
func findRegister(xs []*meridianv1.Register, path string) (int, bool) {
	lo, hi := 0, len(xs)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if xs[h].GetPath() < path {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo, lo < len(xs) && xs[lo].GetPath() == path
}

func findSet(xs []*meridianv1.SetState, name string) (int, bool) {
	lo, hi := 0, len(xs)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if xs[h].GetName() < name {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo, lo < len(xs) && xs[lo].GetName() == name
}

func findCounter(xs []*meridianv1.CounterState, name string) (int, bool) {
	lo, hi := 0, len(xs)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if xs[h].GetName() < name {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo, lo < len(xs) && xs[lo].GetName() == name
}

func findShare(xs []*meridianv1.CounterShare, node string) (int, bool) {
	lo, hi := 0, len(xs)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if xs[h].GetNode() < node {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo, lo < len(xs) && xs[lo].GetNode() == node
}

// findByKey binary-searches xs, sorted by keyOf, for key.
func findByKey[T any](xs []T, key string, keyOf func(T) string) (int, bool) {
	return slices.BinarySearchFunc(xs, key, func(x T, k string) int { return strings.Compare(keyOf(x), k) })
}

// putSorted returns a copy of xs with x at its key's place, replacing the
// entry with an equal key. xs is not modified (copy on write: states are
// immutable values that may share sub-messages).
func putSorted[T any](xs []T, x T, keyOf func(T) string) []T {
	i, found := findByKey(xs, keyOf(x), keyOf)
	out := make([]T, 0, len(xs)+1)
	out = append(out, xs[:i]...)
	out = append(out, x)
	if found {
		i++
	}
	return append(out, xs[i:]...)
}

// joinSorted merges two lists sorted by compare, joining entries that
// compare equal.
func joinSorted[T any](a, b []T, compare func(x, y T) int, join func(x, y T) T) []T {
	if len(a) == 0 && len(b) == 0 {
		return nil
	}
	out := make([]T, 0, max(len(a), len(b)))
	for len(a) > 0 || len(b) > 0 {
		c := 0
		switch {
		case len(a) == 0:
			c = 1
		case len(b) == 0:
			c = -1
		default:
			c = compare(a[0], b[0])
		}
		switch {
		case c < 0:
			out, a = append(out, a[0]), a[1:]
		case c > 0:
			out, b = append(out, b[0]), b[1:]
		default:
			out, a, b = append(out, join(a[0], b[0])), a[1:], b[1:]
		}
	}
	return out
}

func byKey[T any](keyOf func(T) string) func(x, y T) int {
	return func(x, y T) int { return strings.Compare(keyOf(x), keyOf(y)) }
}

// tombstoneState is all an erased identity keeps.
func tombstoneState(id string, erased Stamp) *meridianv1.IdentityState {
	return &meridianv1.IdentityState{IdentityId: id, Erased: stampToPB(erased), UpdatedHlc: uint64(erased.HLC)}
}

// shallowState copies the top level of s so that Apply can replace its
// lists without touching s. States are immutable values: no function here
// mutates a slice or sub-message it did not create (putSorted copies), so the
// copy may share them with s.
func shallowState(s *meridianv1.IdentityState) *meridianv1.IdentityState {
	if s == nil {
		return &meridianv1.IdentityState{}
	}
	return &meridianv1.IdentityState{
		IdentityId:   s.GetIdentityId(),
		Registers:    s.GetRegisters(),
		MaxRegisters: s.GetMaxRegisters(),
		Sets:         s.GetSets(),
		Counters:     s.GetCounters(),
		Erased:       s.GetErased(),
		UpdatedHlc:   s.GetUpdatedHlc(),
	}
}

// registerLess orders two LWW registers: by stamp, equal stamps (a corrupt
// producer) by value bytes, so that the join is commutative regardless (the
// order of LWW[string] on the same stamps and values; nil is below all).
func registerLess(a, b *meridianv1.Register) bool {
	if (a == nil) != (b == nil) {
		return a == nil
	}
	if c := stampFromPB(a.GetStamp()).Compare(stampFromPB(b.GetStamp())); c != 0 {
		return c < 0
	}
	return bytes.Compare(a.GetValue(), b.GetValue()) < 0
}
