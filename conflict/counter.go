package conflict

import (
	"maps"
	"slices"
)

// Counter is a per-origin grow-only counter (a G-counter): each origin node
// owns a share that only grows, replicas join share by share, and the value
// is the sum of the shares. meridian counts failed logins with it, so that a
// lockout threshold holds across all regions.
//
// A classic G-counter's share is an integer its origin increments and
// replicas join by max. Here shares are rebuilt by every region from events
// that may arrive late, out of order or twice, so a share is the set of the
// origin's increment ids (its per-node log sequences): adding an id twice
// counts once, and the join is the union — the max in the lattice of sets.
// Values are immutable: every method returns a new counter.
type Counter struct {
	shares map[string]GSet[uint64]
}

// Increment records the increment with id seq written by node.
func (c Counter) Increment(node string, seq uint64) Counter {
	out := Counter{shares: maps.Clone(c.shares)}
	if out.shares == nil {
		out.shares = make(map[string]GSet[uint64], 1)
	}
	out.shares[node] = out.shares[node].Add(seq)
	return out
}

// Merge joins two replicas share by share.
func (c Counter) Merge(o Counter) Counter {
	out := Counter{shares: maps.Clone(c.shares)}
	for n, s := range o.shares {
		if out.shares == nil {
			out.shares = make(map[string]GSet[uint64], len(o.shares))
		}
		out.shares[n] = out.shares[n].Merge(s)
	}
	return out
}

// Share returns node's share.
func (c Counter) Share(node string) uint64 { return uint64(len(c.shares[node].elems)) }

// Value returns the sum of all shares.
func (c Counter) Value() uint64 {
	var v uint64
	for _, s := range c.shares {
		v += uint64(len(s.elems))
	}
	return v
}

// Nodes returns the origins with a share, in ascending order.
func (c Counter) Nodes() []string { return slices.Sorted(maps.Keys(c.shares)) }
