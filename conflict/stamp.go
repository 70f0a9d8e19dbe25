package conflict

import (
	"cmp"
	"fmt"
)

// Stamp identifies one write and totally orders all writes: by hybrid logical
// clock, then origin node id, then event id. Event ids are unique, so two
// different events never compare equal; the GLOBAL and RESIDENT parts of one
// event share a stamp, which is how their fields meet in one set element.
type Stamp struct {
	HLC     Timestamp
	Node    string
	EventID string
}

// Compare returns -1, 0 or +1 as s orders before, equal to or after o.
func (s Stamp) Compare(o Stamp) int {
	if c := cmp.Compare(s.HLC, o.HLC); c != 0 {
		return c
	}
	if c := cmp.Compare(s.Node, o.Node); c != 0 {
		return c
	}
	return cmp.Compare(s.EventID, o.EventID)
}

// IsZero reports whether s is the zero stamp, which orders before every
// stamp of a real event.
func (s Stamp) IsZero() bool { return s == Stamp{} }

// String renders the stamp for logs and test failures.
func (s Stamp) String() string { return fmt.Sprintf("%v/%s/%s", s.HLC, s.Node, s.EventID) }

// maxStamp returns the larger of two stamps.
func maxStamp(a, b Stamp) Stamp {
	if a.Compare(b) >= 0 {
		return a
	}
	return b
}
