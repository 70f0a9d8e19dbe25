package projector

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNotFound: no identity (or session, or email) with that id here.
	ErrNotFound = errors.New("projector: not found")
	// ErrErased: the identity was erased; only its tombstone remains.
	ErrErased = errors.New("projector: identity erased")
	// ErrClosed is returned by every operation on a closed Projector.
	ErrClosed = errors.New("projector: closed")
	// ErrInvalid wraps every bad argument (config, token, id).
	ErrInvalid = errors.New("projector: invalid argument")
	// ErrNotReplicated is wrapped by *NotReplicatedError.
	ErrNotReplicated = errors.New("projector: not yet replicated")
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("projector: already started")
)

// InvalidError is a bad argument, naming the field and the rule.
type InvalidError struct {
	Field string
	Rule  string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("projector: invalid argument: %s: %s", e.Field, e.Rule)
}

func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalidf(field, format string, args ...any) error {
	return &InvalidError{Field: field, Rule: fmt.Sprintf(format, args...)}
}

// NotReplicatedError is returned by WaitApplied when the context ends before
// this region has applied what a consistency token names. Origin is the
// region the write was made in (where the caller can read it at once).
type NotReplicatedError struct {
	Origin string
	Node   string
	// Missing lists, per subject zone, the sequence the token asks for and
	// the highest sequence of that origin node applied here.
	Missing []ZoneGap
	Cause   error // the context's error
}

// ZoneGap is one subject zone a token waits for.
type ZoneGap struct {
	Zone    string
	Want    uint64
	Applied uint64
}

func (e *NotReplicatedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "projector: not yet replicated from region %s (node %s):", e.Origin, e.Node)
	for _, g := range e.Missing {
		fmt.Fprintf(&b, " %s applied %d of %d;", g.Zone, g.Applied, g.Want)
	}
	if e.Cause != nil {
		fmt.Fprintf(&b, " %v", e.Cause)
	}
	return b.String()
}

func (e *NotReplicatedError) Unwrap() []error { return []error{ErrNotReplicated, e.Cause} }

// ErrStreamReset is wrapped by *StreamResetError.
var ErrStreamReset = errors.New("projector: inbox stream is behind the read model")

// StreamResetError: the inbox's last sequence is below what the model has
// applied, so the stream was recreated (a re-seed) or belongs to another
// deployment. The projector does not consume it; rebuild the model from
// the new stream (Rebuild) and swap it in.
type StreamResetError struct {
	Stream           string
	Applied, LastSeq uint64
}

func (e *StreamResetError) Error() string {
	return fmt.Sprintf("projector: inbox %s ends at seq %d but the read model has applied up to %d: the stream was reset; rebuild the model", e.Stream, e.LastSeq, e.Applied)
}

func (e *StreamResetError) Unwrap() error { return ErrStreamReset }
