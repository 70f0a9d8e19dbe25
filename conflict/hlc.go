package conflict

import (
	"fmt"
	"math"
	"sync"
)

// Timestamp is a hybrid logical clock value (Kulkarni et al., "Logical
// Physical Clocks", 2014): physical unix milliseconds in the high 48 bits and a
// logical counter in the low 16 bits. Packing makes the HLC order the plain
// integer order, so timestamps compare with < and sort as uint64.
type Timestamp uint64

const (
	logicalBits = 16
	logicalMask = 1<<logicalBits - 1
	// maxPhysical is the largest physical time a Timestamp can hold (about
	// the year 10889); larger inputs saturate instead of wrapping.
	maxPhysical = 1<<(64-logicalBits) - 1
)

// MakeTimestamp packs physical milliseconds and a logical counter. Physical
// times below zero are clamped to zero and above 2^48-1 to 2^48-1, so a broken
// clock can never produce a timestamp that wraps around and sorts first.
func MakeTimestamp(physicalMs int64, logical uint16) Timestamp {
	return Timestamp(uint64(clampPhysical(physicalMs))<<logicalBits | uint64(logical))
}

func clampPhysical(ms int64) int64 {
	if ms < 0 {
		return 0
	}
	if ms > maxPhysical {
		return maxPhysical
	}
	return ms
}

// Physical is the physical part in unix milliseconds.
func (t Timestamp) Physical() int64 { return int64(uint64(t) >> logicalBits) }

// Logical is the logical counter.
func (t Timestamp) Logical() uint16 { return uint16(uint64(t) & logicalMask) }

// String renders the timestamp as "<physical ms>.<logical>", which is easy to
// read in logs and keeps the order visible.
func (t Timestamp) String() string { return fmt.Sprintf("%d.%d", t.Physical(), t.Logical()) }

// Clock is a hybrid logical clock. It is safe for concurrent use.
//
// Every value it returns is strictly greater than every value it returned
// before and every remote value it was updated with; its physical part follows
// the injected physical clock, running ahead of it only as far as the largest
// remote timestamp seen (plus one millisecond per 65536 events issued within
// one millisecond, which is how a logical overflow is absorbed).
type Clock struct {
	physical func() int64

	mu struct {
		sync.Mutex
		last Timestamp
	}
}

// NewClock returns a clock reading physical time (unix ms) from physical.
// Injecting the physical clock keeps the package free of the wall clock.
func NewClock(physical func() int64) *Clock {
	return &Clock{physical: physical}
}

// Now returns a timestamp for a local or send event.
func (c *Clock) Now() Timestamp {
	pt := MakeTimestamp(c.physical(), 0)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.advanceLocked(pt, 0)
}

// Update merges a timestamp received from another node and returns a
// timestamp for the receive event, greater than both remote and everything
// this clock issued before.
func (c *Clock) Update(remote Timestamp) Timestamp {
	pt := MakeTimestamp(c.physical(), 0)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.advanceLocked(pt, remote)
}

// advanceLocked is Kulkarni's update rule in packed form. With l the physical
// and c the logical part, the paper's cases
//
//	l' = max(l, l_m, pt); c' = (l'==l==l_m) ? max(c,c_m)+1 : (l'==l) ? c+1 : (l'==l_m) ? c_m+1 : 0
//
// are exactly max(last+1, remote+1, (pt,0)) on the packed integer; the +1
// carrying from the logical into the physical bits is the documented overflow
// behaviour (advance physical by 1 ms, reset logical).
func (c *Clock) advanceLocked(pt, remote Timestamp) Timestamp {
	next := max(succ(c.mu.last), succ(remote), pt)
	c.mu.last = next
	return next
}

// succ is t+1, saturating at the largest timestamp instead of wrapping to 0
// (reachable only in the year 10889, where monotonicity degrades to
// non-decreasing rather than jumping back to the epoch).
func succ(t Timestamp) Timestamp {
	if t == math.MaxUint64 {
		return t
	}
	return t + 1
}
