package conflict

import "cmp"

// LWW is a last-writer-wins register: the write with the largest Stamp wins.
// The zero value is an empty register.
//
// Two writes with equal stamps are the same write unless a producer is broken;
// the larger value wins such a tie so that Merge stays commutative even then.
type LWW[V cmp.Ordered] struct {
	Stamp Stamp
	Value V
	Valid bool
}

// Set records a write of v at stamp s.
func (r LWW[V]) Set(s Stamp, v V) LWW[V] {
	return r.Merge(LWW[V]{Stamp: s, Value: v, Valid: true})
}

// Merge joins two replicas of the register.
func (r LWW[V]) Merge(o LWW[V]) LWW[V] {
	if lwwLess(r, o) {
		return o
	}
	return r
}

// Get returns the current value and whether the register was ever written.
func (r LWW[V]) Get() (V, bool) { return r.Value, r.Valid }

func lwwLess[V cmp.Ordered](a, b LWW[V]) bool {
	if a.Valid != b.Valid {
		return !a.Valid
	}
	if c := a.Stamp.Compare(b.Stamp); c != 0 {
		return c < 0
	}
	return a.Value < b.Value
}
