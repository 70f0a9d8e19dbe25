package conflict

import (
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"testing"
	"testing/quick"
)

// primOp is one random operation on a primitive CRDT. Stamps are unique per
// op (the event id is the op's index) but HLCs collide often, so that ties
// are broken by node and event id.
type primOp struct {
	Kind  uint8 // interpretation depends on the primitive (add/remove/set/erase)
	Key   uint8
	Val   int
	Stamp Stamp
	// Ctx is a random causal context (used by removes of the add-wins set
	// when HasCtx): per node, an HLC from the same small range as stamps.
	Ctx    map[string]Timestamp
	HasCtx bool
}

type primOps []primOp

var testNodes = []string{"n1", "n2", "n3"}

// Generate implements quick.Generator.
func (primOps) Generate(r *rand.Rand, size int) reflect.Value {
	n := r.Intn(size + 1)
	ops := make(primOps, n)
	for i := range ops {
		ops[i] = primOp{
			Kind: uint8(r.Intn(4)),
			Key:  uint8(r.Intn(4)),
			Val:  r.Intn(10),
			Stamp: Stamp{
				// Never 0, which no event has (Apply refuses it).
				HLC:     max(1, MakeTimestamp(int64(r.Intn(5)), uint16(r.Intn(3)))),
				Node:    testNodes[r.Intn(len(testNodes))],
				EventID: fmt.Sprintf("e%03d", i),
			},
		}
		if r.Intn(3) != 0 {
			ops[i].HasCtx = true
			for _, n := range testNodes {
				switch r.Intn(4) {
				case 0: // not observed at all
				case 1:
					ops[i].Ctx = withCtx(ops[i].Ctx, n, 0)
				default:
					ops[i].Ctx = withCtx(ops[i].Ctx, n, MakeTimestamp(int64(r.Intn(5)), uint16(r.Intn(3))))
				}
			}
		}
	}
	return reflect.ValueOf(ops)
}

func withCtx(ctx map[string]Timestamp, n string, h Timestamp) map[string]Timestamp {
	if ctx == nil {
		ctx = map[string]Timestamp{}
	}
	ctx[n] = h
	return ctx
}

// sortedOps returns ops in the total order of their stamps.
func sortedOps(ops primOps) primOps {
	out := slices.Clone(ops)
	slices.SortFunc(out, func(a, b primOp) int { return a.Stamp.Compare(b.Stamp) })
	return out
}

// crdtLaws describes a primitive for checkLaws.
type crdtLaws[S any] struct {
	apply     func(S, primOp) S
	merge     func(S, S) S
	equal     func(S, S) bool
	reference func(sorted primOps) S // naive fold in stamp order, or the specification
}

// replicas deals ops to three replicas, some ops to several and some twice,
// each replica applying its share in its own random order.
func replicas[S any](c crdtLaws[S], ops primOps, r *rand.Rand) [3]S {
	var deal [3]primOps
	for _, op := range ops {
		mask := 1 + r.Intn(7)
		for i := range 3 {
			if mask&(1<<i) != 0 {
				deal[i] = append(deal[i], op)
				if r.Intn(5) == 0 {
					deal[i] = append(deal[i], op) // redelivery
				}
			}
		}
	}
	var out [3]S
	for i := range deal {
		r.Shuffle(len(deal[i]), func(a, b int) { deal[i][a], deal[i][b] = deal[i][b], deal[i][a] })
		for _, op := range deal[i] {
			out[i] = c.apply(out[i], op)
		}
	}
	return out
}

// checkLaws verifies, on random operation sets: merge is commutative,
// associative and idempotent; any delivery order (with duplicates) and any
// partition-then-merge gives the naive reference fold.
func checkLaws[S any](t *testing.T, c crdtLaws[S]) {
	t.Helper()
	f := func(ops primOps, seed int64) bool {
		r := rand.New(rand.NewSource(seed))
		want := c.reference(sortedOps(ops))
		rs := replicas(c, ops, r)
		a, b, d := rs[0], rs[1], rs[2]
		checks := []struct {
			name string
			ok   bool
		}{
			{"commutative", c.equal(c.merge(a, b), c.merge(b, a))},
			{"associative", c.equal(c.merge(c.merge(a, b), d), c.merge(a, c.merge(b, d)))},
			{"idempotent", c.equal(c.merge(a, a), a)},
			{"partitions merge to reference", c.equal(c.merge(c.merge(d, a), b), want)},
		}
		shuffled := slices.Clone(ops)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		var all S
		for _, op := range append(shuffled, ops...) { // every op twice
			all = c.apply(all, op)
		}
		checks = append(checks, struct {
			name string
			ok   bool
		}{"any order equals reference", c.equal(all, want)})
		for _, ch := range checks {
			if !ch.ok {
				t.Logf("%s failed for ops %v", ch.name, ops)
				return false
			}
		}
		return true
	}
	if err := quick.Check(f, quickConfig(300)); err != nil {
		t.Fatal(err)
	}
}

func TestStampCompare(t *testing.T) {
	tests := []struct {
		a, b Stamp
		want int
	}{
		{Stamp{HLC: 1}, Stamp{HLC: 2}, -1},
		{Stamp{HLC: 2, Node: "a"}, Stamp{HLC: 1, Node: "z"}, 1},
		{Stamp{HLC: 1, Node: "a", EventID: "z"}, Stamp{HLC: 1, Node: "b", EventID: "a"}, -1},
		{Stamp{HLC: 1, Node: "a", EventID: "b"}, Stamp{HLC: 1, Node: "a", EventID: "a"}, 1},
		{Stamp{HLC: 1, Node: "a", EventID: "a"}, Stamp{HLC: 1, Node: "a", EventID: "a"}, 0},
		{Stamp{}, Stamp{HLC: 0, Node: "a"}, -1},
	}
	for _, tt := range tests {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Compare(tt.a); got != -tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestLWWLaws(t *testing.T) {
	checkLaws(t, crdtLaws[LWW[int]]{
		apply: func(r LWW[int], op primOp) LWW[int] { return r.Set(op.Stamp, op.Val) },
		merge: LWW[int].Merge,
		equal: func(a, b LWW[int]) bool { return a == b },
		reference: func(ops primOps) LWW[int] {
			var r LWW[int]
			for _, op := range ops {
				r = LWW[int]{Stamp: op.Stamp, Value: op.Val, Valid: true}
			}
			return r
		},
	})
}

func TestLWWEqualStampTieBreaksByValue(t *testing.T) {
	s := Stamp{HLC: 1, Node: "n", EventID: "e"}
	a := LWW[string]{}.Set(s, "a")
	b := LWW[string]{}.Set(s, "b")
	if a.Merge(b) != b.Merge(a) || a.Merge(b).Value != "b" {
		t.Fatalf("tie not broken by value: %v %v", a.Merge(b), b.Merge(a))
	}
}

func TestMaxLaws(t *testing.T) {
	checkLaws(t, crdtLaws[Max[int]]{
		apply: func(r Max[int], op primOp) Max[int] { return r.Set(op.Val) },
		merge: Max[int].Merge,
		equal: func(a, b Max[int]) bool { return a == b },
		reference: func(ops primOps) Max[int] {
			var r Max[int]
			for _, op := range ops {
				if !r.Valid || op.Val > r.Value {
					r = Max[int]{Value: op.Val, Valid: true}
				}
			}
			return r
		},
	})
}

func TestGSetLaws(t *testing.T) {
	checkLaws(t, crdtLaws[GSet[uint8]]{
		apply: func(s GSet[uint8], op primOp) GSet[uint8] { return s.Add(op.Key) },
		merge: GSet[uint8].Merge,
		equal: func(a, b GSet[uint8]) bool { return slices.Equal(a.Elements(), b.Elements()) },
		reference: func(ops primOps) GSet[uint8] {
			seen := map[uint8]bool{}
			var s GSet[uint8]
			for _, op := range ops {
				if !seen[op.Key] {
					seen[op.Key] = true
					s = s.Add(op.Key)
				}
			}
			return s
		},
	})
}

// awsView is an add-wins set's observable content: present keys and payloads.
func awsView(s AddWinsSet[uint8, int]) map[uint8]int {
	out := map[uint8]int{}
	for _, k := range s.Elements() {
		out[k], _ = s.Get(k)
	}
	return out
}

func TestAddWinsSetLaws(t *testing.T) {
	checkLaws(t, crdtLaws[AddWinsSet[uint8, int]]{
		apply: func(s AddWinsSet[uint8, int], op primOp) AddWinsSet[uint8, int] {
			switch {
			case op.Kind%2 == 0:
				return s.Add(op.Key, op.Stamp, op.Val)
			case op.HasCtx:
				return s.RemoveObserved(op.Key, op.Stamp, op.Ctx)
			}
			return s.Remove(op.Key, op.Stamp)
		},
		merge: AddWinsSet[uint8, int].Merge,
		// Equal as CRDT states, metadata included, not only as views.
		equal: func(a, b AddWinsSet[uint8, int]) bool {
			for k := range uint8(4) {
				if !a.element(k).Equal(b.element(k), func(x, y int) bool { return x == y }) {
					return false
				}
			}
			return reflect.DeepEqual(awsView(a), awsView(b))
		},
		reference: orSetSpec,
	})
}

// removes reports whether the remove r removes the add a, by the
// definition of the observed-remove set: a remove with a causal context
// observed the adds of its own node up to its HLC and those of every other
// node up to what its context names (nothing of a node it does not name); a
// remove without one observed every add stamped at or below its own stamp.
func removes(r, a primOp) bool {
	if !r.HasCtx {
		return a.Stamp.Compare(r.Stamp) <= 0
	}
	cut := r.Ctx[a.Stamp.Node]
	if a.Stamp.Node == r.Stamp.Node {
		cut = r.Stamp.HLC
	}
	return a.Stamp.HLC <= cut
}

// orSetSpec is the OR-set specification, computed from the whole operation
// history with no CRDT state at all: a key is present iff some add of it is
// removed by no remove of it, and its payload is that of the newest such
// add. The metadata it expects is derived from the same history: the newest
// surviving add of each node, per node the largest cut of the removes with
// a context, and the largest stamp of those without.
func orSetSpec(ops primOps) AddWinsSet[uint8, int] {
	out := AddWinsSet[uint8, int]{elems: map[uint8]AWElement[int]{}}
	for k := range uint8(4) {
		var adds, rems primOps
		for _, op := range ops {
			switch {
			case op.Key != k:
			case op.Kind%2 == 0:
				adds = append(adds, op)
			default:
				rems = append(rems, op)
			}
		}
		if len(adds) == 0 && len(rems) == 0 {
			continue
		}
		var el AWElement[int]
		newest := map[string]primOp{} // per node, the newest surviving add
		for _, a := range adds {
			live := true
			for _, r := range rems {
				live = live && !removes(r, a)
			}
			if n, ok := newest[a.Stamp.Node]; live && (!ok || a.Stamp.Compare(n.Stamp) > 0) {
				newest[a.Stamp.Node] = a
			}
		}
		for _, n := range testNodes {
			if a, ok := newest[n]; ok && a.Stamp.Compare(el.Added) > 0 {
				el.Added, el.Payload = a.Stamp, a.Val
			}
		}
		for _, n := range testNodes {
			if a, ok := newest[n]; ok && a.Stamp != el.Added {
				el.Others = append(el.Others, AWAdd[int]{Stamp: a.Stamp, Payload: a.Val})
			}
		}
		for _, n := range testNodes {
			var cut Timestamp
			for _, r := range rems {
				switch {
				case !r.HasCtx:
				case r.Stamp.Node == n:
					cut = max(cut, r.Stamp.HLC)
				default:
					cut = max(cut, r.Ctx[n])
				}
			}
			if cut > 0 {
				el.Cuts = append(el.Cuts, NodeCut{Node: n, HLC: cut})
			}
		}
		for _, r := range rems {
			if !r.HasCtx {
				el.Removed = maxStamp(el.Removed, r.Stamp)
			}
		}
		out.elems[k] = el
	}
	return out
}

func TestAddWinsSetCases(t *testing.T) {
	st := func(hlc int64, node, id string) Stamp {
		return Stamp{HLC: MakeTimestamp(hlc, 0), Node: node, EventID: id}
	}
	ctx := func(kv ...any) map[string]Timestamp {
		m := map[string]Timestamp{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = MakeTimestamp(int64(kv[i+1].(int)), 0)
		}
		return m
	}
	type set = AddWinsSet[string, int]
	tests := []struct {
		name    string
		key     string
		apply   func() set
		present bool
		payload int
	}{
		{"add", "admin", func() set {
			return set{}.Add("admin", st(1, "a", "1"), 7)
		}, true, 7},
		{"remove after add", "admin", func() set {
			return set{}.Add("admin", st(1, "a", "1"), 7).Remove("admin", st(2, "b", "2"))
		}, false, 0},
		{"remove delivered before the add it observed", "admin", func() set {
			return set{}.Remove("admin", st(2, "b", "2")).Add("admin", st(1, "a", "1"), 7)
		}, false, 0},
		{"add after remove wins", "admin", func() set {
			return set{}.Add("admin", st(3, "a", "3"), 8).Remove("admin", st(2, "b", "2")).Add("admin", st(1, "a", "1"), 7)
		}, true, 8},
		{"same stamp parts join", "c", func() set {
			return set{}.Add("c", st(1, "a", "1"), 3).Add("c", st(1, "a", "1"), 5)
		}, true, 5},
		// Causal contexts (issue #4).
		{"concurrent add stamped below a remove that did not observe it survives", "admin", func() set {
			// eu (node a) grants at 5 while cut off; us (node b) revokes at
			// 9, having seen a's events only up to 3.
			return set{}.Add("admin", st(5, "a", "g"), 1).RemoveObserved("admin", st(9, "b", "r"), ctx("a", 3))
		}, true, 1},
		{"the same, delivered remove first", "admin", func() set {
			return set{}.RemoveObserved("admin", st(9, "b", "r"), ctx("a", 3)).Add("admin", st(5, "a", "g"), 1)
		}, true, 1},
		{"remove that observed the add removes it", "admin", func() set {
			return set{}.Add("admin", st(5, "a", "g"), 1).RemoveObserved("admin", st(9, "b", "r"), ctx("a", 5))
		}, false, 0},
		{"remove that observed the add removes it, even stamped below it", "admin", func() set {
			// b's clock is behind a's: the remove is stamped 4 but its
			// region had applied a's add at 5.
			return set{}.RemoveObserved("admin", st(4, "b", "r"), ctx("a", 5)).Add("admin", st(5, "a", "g"), 1)
		}, false, 0},
		{"sequential add then remove on the same node removes", "admin", func() set {
			return set{}.Add("admin", st(5, "a", "g"), 1).RemoveObserved("admin", st(6, "a", "r"), nil)
		}, false, 0},
		{"an add after the remove on the same node survives", "admin", func() set {
			return set{}.RemoveObserved("admin", st(6, "a", "r"), nil).Add("admin", st(7, "a", "g"), 2)
		}, true, 2},
		{"old-style remove without context keeps the old rule", "admin", func() set {
			// Stamped above the add, it removes it although nothing says
			// it observed it.
			return set{}.Add("admin", st(5, "a", "g"), 1).Remove("admin", st(9, "b", "r"))
		}, false, 0},
		{"old-style remove does not remove a later add", "admin", func() set {
			return set{}.Remove("admin", st(9, "b", "r")).Add("admin", st(10, "a", "g"), 1)
		}, true, 1},
		{"an older surviving add of another node takes over", "admin", func() set {
			// a adds at 5 (unobserved by the remove), c at 7 (observed):
			// the element stays, with a's payload.
			return set{}.Add("admin", st(5, "a", "g1"), 1).Add("admin", st(7, "c", "g2"), 2).
				RemoveObserved("admin", st(9, "b", "r"), ctx("a", 3, "c", 7))
		}, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := tt.apply().Get(tt.key)
			if ok != tt.present || p != tt.payload {
				t.Fatalf("got (%d,%v), want (%d,%v)", p, ok, tt.payload, tt.present)
			}
		})
	}
}

// TestAddWinsSetBounded: however many operations, an element holds at most
// one add and one cut per origin node.
func TestAddWinsSetBounded(t *testing.T) {
	r := rand.New(rand.NewSource(*seed))
	var s AddWinsSet[uint8, int]
	for i := range 5000 {
		op := primOps.Generate(nil, r, 1).Interface().(primOps)
		if len(op) == 0 {
			continue
		}
		o := op[0]
		o.Stamp.EventID = fmt.Sprintf("e%05d", i)
		o.Stamp.HLC = MakeTimestamp(int64(i/3), uint16(r.Intn(3)))
		switch {
		case o.Kind%2 == 0:
			s = s.Add(o.Key, o.Stamp, o.Val)
		case o.HasCtx:
			s = s.RemoveObserved(o.Key, o.Stamp, o.Ctx)
		default:
			s = s.Remove(o.Key, o.Stamp)
		}
	}
	for k := range uint8(4) {
		e := s.element(k)
		if len(e.Others) >= len(testNodes) || len(e.Cuts) > len(testNodes) {
			t.Fatalf("key %d: %d other adds, %d cuts; at most %d nodes", k, len(e.Others), len(e.Cuts), len(testNodes))
		}
	}
}

func TestCounterLaws(t *testing.T) {
	view := func(c Counter) map[string]uint64 {
		out := map[string]uint64{}
		for _, n := range c.Nodes() {
			out[n] = c.Share(n)
		}
		return out
	}
	checkLaws(t, crdtLaws[Counter]{
		// The op's key is its increment id, so equal keys from one node are
		// redeliveries of one increment.
		apply: func(c Counter, op primOp) Counter { return c.Increment(op.Stamp.Node, uint64(op.Key)) },
		merge: Counter.Merge,
		equal: func(a, b Counter) bool { return a.Value() == b.Value() && reflect.DeepEqual(view(a), view(b)) },
		reference: func(ops primOps) Counter {
			distinct := map[string]map[uint8]bool{}
			for _, op := range ops {
				if distinct[op.Stamp.Node] == nil {
					distinct[op.Stamp.Node] = map[uint8]bool{}
				}
				distinct[op.Stamp.Node][op.Key] = true
			}
			var c Counter
			for n, ids := range distinct {
				for id := range ids {
					c = c.Increment(n, uint64(id))
				}
			}
			return c
		},
	})
}

func TestCounterValue(t *testing.T) {
	c := Counter{}.Increment("eu", 1).Increment("eu", 1).Increment("eu", 9).Increment("us", 1)
	if c.Value() != 3 || c.Share("eu") != 2 || c.Share("us") != 1 || c.Share("ap") != 0 {
		t.Fatalf("value %d shares %d %d", c.Value(), c.Share("eu"), c.Share("us"))
	}
}

func TestErasableLaws(t *testing.T) {
	type reg = Erasable[LWW[int]]
	checkLaws(t, crdtLaws[reg]{
		apply: func(e reg, op primOp) reg {
			if op.Kind == 0 {
				return e.Erase(op.Stamp)
			}
			return e.Update(func(r LWW[int]) LWW[int] { return r.Set(op.Stamp, op.Val) })
		},
		merge: func(a, b reg) reg { return MergeErasable(a, b, LWW[int].Merge) },
		equal: func(a, b reg) bool { return a == b },
		// Folding in stamp order: the first erasure wins and nothing after
		// it counts; it also drops what came before it.
		reference: func(ops primOps) reg {
			var e reg
			for _, op := range ops {
				if e.Tomb.Erased {
					continue
				}
				if op.Kind == 0 {
					e = reg{Tomb: Tombstone{Stamp: op.Stamp, Erased: true}}
					continue
				}
				e.State = LWW[int]{Stamp: op.Stamp, Value: op.Val, Valid: true}
			}
			return e
		},
	})
}

func TestErasableRejectsLateUpdates(t *testing.T) {
	var e Erasable[LWW[int]]
	e = e.Update(func(r LWW[int]) LWW[int] { return r.Set(Stamp{HLC: 1}, 1) })
	e = e.Erase(Stamp{HLC: 2})
	e = e.Update(func(r LWW[int]) LWW[int] { return r.Set(Stamp{HLC: 3}, 3) })
	if !e.Tomb.Erased || e.State.Valid {
		t.Fatalf("erasure did not win: %+v", e)
	}
}
