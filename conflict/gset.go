package conflict

import (
	"cmp"
	"maps"
	"slices"
)

// GSet is a grow-only set: elements are added and never removed, so the join
// is the union. meridian uses it for revoked sessions: once revoked anywhere,
// revoked everywhere, whatever arrives later. Values are immutable: Add and
// Merge return new sets.
type GSet[K cmp.Ordered] struct {
	elems map[K]struct{}
}

// Add returns the set with k added.
func (s GSet[K]) Add(k K) GSet[K] {
	if s.Contains(k) {
		return s
	}
	out := GSet[K]{elems: maps.Clone(s.elems)}
	if out.elems == nil {
		out.elems = make(map[K]struct{}, 1)
	}
	out.elems[k] = struct{}{}
	return out
}

// Merge returns the union of two replicas.
func (s GSet[K]) Merge(o GSet[K]) GSet[K] {
	out := GSet[K]{elems: maps.Clone(s.elems)}
	for k := range o.elems {
		if out.elems == nil {
			out.elems = make(map[K]struct{}, len(o.elems))
		}
		out.elems[k] = struct{}{}
	}
	return out
}

// Contains reports whether k was ever added.
func (s GSet[K]) Contains(k K) bool {
	_, ok := s.elems[k]
	return ok
}

// Elements returns the elements in ascending order.
func (s GSet[K]) Elements() []K { return slices.Sorted(maps.Keys(s.elems)) }
