package conflict

import (
	"cmp"
	"maps"
	"slices"
)

// AWElement is one element of an add-wins observed-remove set, with a payload
// (the element's content; for scalar sets the key is the content and the
// payload is unused).
//
// Adds are tagged by their stamps. A remove records what it observed as a
// causal cut, its own stamp: the hybrid logical clock is consistent with
// happened-before, so every add the remover could have seen carries a smaller
// stamp and is removed, while an add stamped after the remove survives it —
// the add wins. The element is present while its newest add tag is above the
// cut, so the newest add tag and the cut are the only metadata it needs; a
// removed element keeps just its cut, to reject adds that arrive late.
//
// Because remove events carry no explicit tag list, an add that is concurrent
// with a remove but stamped below it counts as observed. That is what makes
// the set equal to folding its operations in stamp order; a remove that
// carried the tags (or a version vector) it saw would let such adds win too.
type AWElement[P any] struct {
	Added   Stamp // newest live add tag; zero when none
	Payload P     // content written by the add tagged Added
	Removed Stamp // causal cut: every add at or below it is removed
}

// Present reports whether the element is in the set.
func (e AWElement[P]) Present() bool { return !e.Added.IsZero() }

// Add records an add tagged s with payload p. join combines payloads written
// under the same tag (the GLOBAL and RESIDENT parts of one event); it must be
// commutative, associative and idempotent.
func (e AWElement[P]) Add(s Stamp, p P, join func(a, b P) P) AWElement[P] {
	return e.Merge(AWElement[P]{Added: s, Payload: p}, join)
}

// Remove records a remove stamped s, which observed every add up to s.
func (e AWElement[P]) Remove(s Stamp) AWElement[P] {
	// The remove has no add tag, so Merge never joins payloads here.
	return e.Merge(AWElement[P]{Removed: s}, nil)
}

// Merge joins two replicas of the element: the larger cut, the newer add tag
// (payloads of equal tags joined), and whatever add the cut covers dropped.
func (e AWElement[P]) Merge(o AWElement[P], join func(a, b P) P) AWElement[P] {
	var out AWElement[P]
	out.Removed = maxStamp(e.Removed, o.Removed)
	switch c := e.Added.Compare(o.Added); {
	case c > 0:
		out.Added, out.Payload = e.Added, e.Payload
	case c < 0:
		out.Added, out.Payload = o.Added, o.Payload
	default:
		out.Added = e.Added
		if !e.Added.IsZero() {
			out.Payload = join(e.Payload, o.Payload)
		}
	}
	if out.Added.Compare(out.Removed) <= 0 {
		var zero P
		out.Added, out.Payload = Stamp{}, zero
	}
	return out
}

// AddWinsSet is an add-wins observed-remove set of keys with ordered payloads
// (equal-tag payloads join by max). It is the reference shape of the rule;
// the schema-driven Merger stores the same AWElements in IdentityState.
// Values are immutable: every method returns a new set.
type AddWinsSet[K cmp.Ordered, P cmp.Ordered] struct {
	elems map[K]AWElement[P]
}

func joinMax[P cmp.Ordered](a, b P) P { return max(a, b) }

// Add returns the set with k added by the add tagged s, carrying payload p.
func (s AddWinsSet[K, P]) Add(k K, tag Stamp, p P) AddWinsSet[K, P] {
	return s.with(k, s.elems[k].Add(tag, p, joinMax[P]))
}

// Remove returns the set with the remove of k stamped tag recorded.
func (s AddWinsSet[K, P]) Remove(k K, tag Stamp) AddWinsSet[K, P] {
	return s.with(k, s.elems[k].Remove(tag))
}

func (s AddWinsSet[K, P]) with(k K, e AWElement[P]) AddWinsSet[K, P] {
	out := AddWinsSet[K, P]{elems: maps.Clone(s.elems)}
	if out.elems == nil {
		out.elems = make(map[K]AWElement[P], 1)
	}
	out.elems[k] = e
	return out
}

// Merge joins two replicas element by element.
func (s AddWinsSet[K, P]) Merge(o AddWinsSet[K, P]) AddWinsSet[K, P] {
	out := AddWinsSet[K, P]{elems: maps.Clone(s.elems)}
	for k, e := range o.elems {
		if out.elems == nil {
			out.elems = make(map[K]AWElement[P], len(o.elems))
		}
		out.elems[k] = out.elems[k].Merge(e, joinMax[P])
	}
	return out
}

// Get returns the payload of k and whether k is in the set.
func (s AddWinsSet[K, P]) Get(k K) (P, bool) {
	e := s.elems[k]
	return e.Payload, e.Present()
}

// Elements returns the present keys in ascending order.
func (s AddWinsSet[K, P]) Elements() []K {
	var out []K
	for k, e := range s.elems {
		if e.Present() {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// element returns the raw element (metadata included), for tests.
func (s AddWinsSet[K, P]) element(k K) AWElement[P] { return s.elems[k] }
