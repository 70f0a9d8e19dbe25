package conflict

import (
	"cmp"
	"maps"
	"slices"
	"strings"
)

// AWElement is one element of an add-wins observed-remove set, with a payload
// (the element's content; for scalar sets the key is the content and the
// payload is unused).
//
// Adds are tagged by their stamps. A remove cuts, per origin node, the adds
// it observed:
//
//   - A remove that carries a causal context (Event.observed: per origin
//     node, the HLC of the newest event of that node its region had applied)
//     cuts the adds of its own node up to its own HLC (everything earlier
//     from its node is in that node's log, so it was observed) and the adds
//     of every other node up to the HLC the context names for it (none of a
//     node the context does not name). An add it did not observe survives,
//     even one stamped below it: that add wins.
//   - A remove without a context (logs written before contexts existed) keeps
//     the old rule: it cuts every add stamped at or below its own stamp,
//     whatever the add's node (the hybrid logical clock is consistent with
//     happened-before, so everything it could have seen is inside).
//
// An add survives when it is above its node's cut and above the
// context-less cut; the element is present while some add survives, with
// the payload of the newest surviving add. Per node the cut only grows, so
// of a node's adds only the newest can survive longest: the element keeps
// one add and one cut per origin node, and drops the adds a cut covers. Its
// size is bounded by the number of origin nodes, whatever the number of
// operations (no tombstones accumulate).
type AWElement[P any] struct {
	Added   Stamp // newest surviving add tag; zero when none
	Payload P     // content written by the add tagged Added
	// Others holds the newest surviving add of every origin node other than
	// Added's, sorted by node (each older than Added). Usually empty: it
	// fills when adds of several nodes are live at once.
	Others []AWAdd[P]
	// Removed is the cut of the removes without a causal context: every
	// add at or below it is removed.
	Removed Stamp
	// Cuts are the per-node cuts of the removes with a causal context,
	// sorted by node, each HLC above 0: an add of Node at or below HLC is
	// removed.
	Cuts []NodeCut
}

// AWAdd is one add of an element: its tag and the payload it wrote.
type AWAdd[P any] struct {
	Stamp   Stamp
	Payload P
}

// NodeCut removes the adds of Node whose HLC is at or below HLC.
type NodeCut struct {
	Node string
	HLC  Timestamp
}

// ObservedCuts returns the per-node cuts of a remove stamped s that carried
// the causal context observed (origin node → HLC of the newest event of that
// node observed): s's own node up to s.HLC, every other node up to what
// observed names for it. Nodes observed maps to 0 are left out (nothing of
// them was observed). Sorted by node.
func ObservedCuts[T ~uint64](s Stamp, observed map[string]T) []NodeCut {
	cuts := make([]NodeCut, 0, len(observed)+1)
	if s.HLC != 0 {
		cuts = append(cuts, NodeCut{Node: s.Node, HLC: s.HLC})
	}
	for n, h := range observed {
		if n != s.Node && h != 0 {
			cuts = append(cuts, NodeCut{Node: n, HLC: Timestamp(h)})
		}
	}
	slices.SortFunc(cuts, func(a, b NodeCut) int { return strings.Compare(a.Node, b.Node) })
	return cuts
}

// Present reports whether the element is in the set.
func (e AWElement[P]) Present() bool { return !e.Added.IsZero() }

// Add records an add tagged s with payload p. join combines payloads written
// under the same tag (the GLOBAL and RESIDENT parts of one event); it must be
// commutative, associative and idempotent.
func (e AWElement[P]) Add(s Stamp, p P, join func(a, b P) P) AWElement[P] {
	return e.Merge(AWElement[P]{Added: s, Payload: p}, join)
}

// Remove records a remove stamped s that carried no causal context: it
// counts as having observed every add stamped up to s.
func (e AWElement[P]) Remove(s Stamp) AWElement[P] {
	// The remove has no add tag, so Merge never joins payloads here.
	return e.Merge(AWElement[P]{Removed: s}, nil)
}

// RemoveObserved records a remove stamped s that carried the causal context
// observed (see ObservedCuts); a nil or empty context observed nothing of
// other nodes.
func (e AWElement[P]) RemoveObserved(s Stamp, observed map[string]Timestamp) AWElement[P] {
	return e.Merge(AWElement[P]{Cuts: ObservedCuts(s, observed)}, nil)
}

// cutOf returns the HLC up to which the adds of node are cut by a context.
func cutOf(cuts []NodeCut, node string) Timestamp {
	if len(cuts) == 0 {
		return 0
	}
	i, ok := slices.BinarySearchFunc(cuts, node, func(c NodeCut, n string) int { return strings.Compare(c.Node, n) })
	if !ok {
		return 0
	}
	return cuts[i].HLC
}

// survives reports whether the add tagged s is above the cuts. Once a
// remove with a context was seen (cuts is not empty), a node it did not name
// is cut at 0; only a zero HLC, which no event has, tells the difference.
func survives(s Stamp, removed Stamp, cuts []NodeCut) bool {
	return s.Compare(removed) > 0 && (len(cuts) == 0 || s.HLC > cutOf(cuts, s.Node))
}

// mergeCuts is the pointwise max of two cut lists. It returns a or b
// itself when that is the result (no list is ever modified).
func mergeCuts(a, b []NodeCut) []NodeCut {
	switch {
	case len(b) == 0:
		return a
	case len(a) == 0:
		return b
	}
	out := make([]NodeCut, 0, max(len(a), len(b)))
	sameA, sameB := true, true // out equals a, b so far
	x, y := a, b
	for len(x) > 0 || len(y) > 0 {
		c := 0
		switch {
		case len(x) == 0:
			c = 1
		case len(y) == 0:
			c = -1
		default:
			c = cmp.Or(strings.Compare(x[0].Node, y[0].Node), cmp.Compare(y[0].HLC, x[0].HLC))
		}
		switch {
		case c < 0: // x's node only, or x's cut is larger
			sameB = false
			out = append(out, x[0])
		case c > 0:
			sameA = false
			out = append(out, y[0])
		default:
			out = append(out, x[0])
		}
		if len(x) > 0 && (len(y) == 0 || x[0].Node <= y[0].Node) {
			if len(y) > 0 && x[0].Node == y[0].Node {
				y = y[1:]
			}
			x = x[1:]
		} else {
			y = y[1:]
		}
	}
	switch {
	case sameA:
		return a
	case sameB:
		return b
	}
	return out
}

// Merge joins two replicas of the element: the larger cuts, per node the
// newer add (payloads of equal tags joined), and whatever add the cuts cover
// dropped.
func (e AWElement[P]) Merge(o AWElement[P], join func(a, b P) P) AWElement[P] {
	var out AWElement[P]
	out.Removed = maxStamp(e.Removed, o.Removed)
	out.Cuts = mergeCuts(e.Cuts, o.Cuts)
	if len(e.Others) == 0 && len(o.Others) == 0 &&
		(e.Added.IsZero() || o.Added.IsZero() || e.Added.Node == o.Added.Node) {
		// The common case: the adds of at most one node; the newer wins.
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
		if !out.Added.IsZero() && !survives(out.Added, out.Removed, out.Cuts) {
			var zero P
			out.Added, out.Payload = Stamp{}, zero
		}
		return out
	}
	// Per node the newer add, of those that survive. A handful of adds
	// (one per node and side): sorted in a buffer on the stack, by node,
	// newest first.
	var buf [8]AWAdd[P]
	adds := buf[:0]
	for _, x := range [2]*AWElement[P]{&e, &o} {
		if !x.Added.IsZero() {
			adds = append(adds, AWAdd[P]{x.Added, x.Payload})
		}
		adds = append(adds, x.Others...)
	}
	for i := 1; i < len(adds); i++ {
		for j := i; j > 0 && addBefore(adds[j], adds[j-1]); j-- {
			adds[j], adds[j-1] = adds[j-1], adds[j]
		}
	}
	kept := adds[:0]
	for i := 0; i < len(adds); {
		a := adds[i]
		j := i + 1
		for ; j < len(adds) && adds[j].Stamp.Node == a.Stamp.Node; j++ {
			if adds[j].Stamp == a.Stamp {
				a.Payload = join(a.Payload, adds[j].Payload)
			}
		}
		if survives(a.Stamp, out.Removed, out.Cuts) {
			kept = append(kept, a)
		}
		i = j
	}
	if len(kept) == 0 {
		return out
	}
	newest := 0
	for i := range kept {
		if kept[i].Stamp.Compare(kept[newest].Stamp) > 0 {
			newest = i
		}
	}
	out.Added, out.Payload = kept[newest].Stamp, kept[newest].Payload
	if len(kept) > 1 {
		out.Others = make([]AWAdd[P], 0, len(kept)-1)
		out.Others = append(append(out.Others, kept[:newest]...), kept[newest+1:]...)
	}
	return out
}

// addBefore orders adds by node, newest first.
func addBefore[P any](a, b AWAdd[P]) bool {
	if a.Stamp.Node != b.Stamp.Node {
		return a.Stamp.Node < b.Stamp.Node
	}
	return a.Stamp.Compare(b.Stamp) > 0
}

// newestOnly drops every add but the newest: the elements of a grow-only
// set, which no remove can cut, need no more.
func (e AWElement[P]) newestOnly() AWElement[P] {
	e.Others = nil
	return e
}

// Equal reports whether e and o are the same element, metadata included;
// eq compares payloads.
func (e AWElement[P]) Equal(o AWElement[P], eq func(a, b P) bool) bool {
	return e.Added == o.Added && eq(e.Payload, o.Payload) && e.Removed == o.Removed &&
		slices.Equal(e.Cuts, o.Cuts) &&
		slices.EqualFunc(e.Others, o.Others, func(a, b AWAdd[P]) bool { return a.Stamp == b.Stamp && eq(a.Payload, b.Payload) })
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

// Remove returns the set with the remove of k stamped tag recorded, a
// remove without a causal context (see AWElement.Remove).
func (s AddWinsSet[K, P]) Remove(k K, tag Stamp) AddWinsSet[K, P] {
	return s.with(k, s.elems[k].Remove(tag))
}

// RemoveObserved returns the set with the remove of k stamped tag, which
// carried the causal context observed, recorded (see
// AWElement.RemoveObserved).
func (s AddWinsSet[K, P]) RemoveObserved(k K, tag Stamp, observed map[string]Timestamp) AddWinsSet[K, P] {
	return s.with(k, s.elems[k].RemoveObserved(tag, observed))
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
