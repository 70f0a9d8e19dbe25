package conflict

// Tombstone is remove-wins erasure of a whole entity. Once erased, always
// erased: the join is an OR, and the stamp kept is the smallest erase stamp
// seen (any deterministic choice converges; the first erasure is the one an
// operator asks about). It keeps nothing else, so that an erased identity
// holds no personal data, yet late events can still be recognised and
// rejected.
type Tombstone struct {
	Stamp  Stamp
	Erased bool
}

// Erase records an erasure stamped s.
func (t Tombstone) Erase(s Stamp) Tombstone { return t.Merge(Tombstone{Stamp: s, Erased: true}) }

// Merge joins two replicas.
func (t Tombstone) Merge(o Tombstone) Tombstone {
	switch {
	case !o.Erased:
		return t
	case !t.Erased:
		return o
	case o.Stamp.Compare(t.Stamp) < 0:
		return o
	}
	return t
}

// Erasable wraps any state with remove-wins erasure: an erasure wins over
// every concurrent or later update, and drops the state it wraps.
type Erasable[S any] struct {
	Tomb  Tombstone
	State S
}

// Update applies f to the state unless the entity is erased.
func (e Erasable[S]) Update(f func(S) S) Erasable[S] {
	if e.Tomb.Erased {
		return e
	}
	e.State = f(e.State)
	return e
}

// Erase erases the entity, dropping its state.
func (e Erasable[S]) Erase(s Stamp) Erasable[S] {
	var zero S
	return Erasable[S]{Tomb: e.Tomb.Erase(s), State: zero}
}

// MergeErasable joins two replicas with merge joining the wrapped states.
func MergeErasable[S any](a, b Erasable[S], merge func(S, S) S) Erasable[S] {
	t := a.Tomb.Merge(b.Tomb)
	if t.Erased {
		return Erasable[S]{Tomb: t}
	}
	return Erasable[S]{Tomb: t, State: merge(a.State, b.State)}
}
