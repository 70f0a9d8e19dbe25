package conflict

import "cmp"

// Max is a register that keeps the largest value written. It needs no stamp:
// the order of the values is the order of the writes. The zero value is empty.
type Max[V cmp.Ordered] struct {
	Value V
	Valid bool
}

// Set records a write of v.
func (r Max[V]) Set(v V) Max[V] { return r.Merge(Max[V]{Value: v, Valid: true}) }

// Merge joins two replicas of the register.
func (r Max[V]) Merge(o Max[V]) Max[V] {
	switch {
	case !o.Valid:
		return r
	case !r.Valid:
		return o
	case o.Value > r.Value:
		return o
	}
	return r
}

// Get returns the largest value and whether one was ever written.
func (r Max[V]) Get() (V, bool) { return r.Value, r.Valid }
