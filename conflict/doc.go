// Package conflict holds meridian's pure merge rules: the hybrid logical
// clock that orders events (Clock, Timestamp), the CRDT primitives (LWW,
// AWElement/AddWinsSet, GSet, Counter, Max, Tombstone/Erasable) and the
// schema-driven Merger, which reads the (target, op, merge, residency, key)
// options from the meridianv1 descriptors and applies identity events to a
// generic, proto-serialisable meridianv1.IdentityState.
//
// Sets are observed-remove: a remove carrying a causal context
// (Event.observed, per origin node the newest event its region had applied)
// removes only the adds it observed, so a concurrent add it did not see wins
// even when stamped below it; see AWElement. An element keeps at most one
// add and one cut per origin node. Removes without a context (older logs)
// keep the old rule, a cut at their own stamp.
//
// The projector's loop: decode an event part; if Erased(global state) drop
// it; state = Apply(state of its part, part) (ApplyInPlace on a state it
// owns); store the state; serve View(global, resident). Merge joins states (replicas, rebuilds), Prune
// drops resident data that GLOBAL removes made dead. Apply and Merge are
// commutative, associative and idempotent, so regions that saw the same set
// of events agree whatever the order or duplication of delivery.
//
// The package does no I/O and never reads the wall clock: physical time is
// injected into Clock as a func() int64, and events carry their HLC stamps.
package conflict
