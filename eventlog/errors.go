package eventlog

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by every operation on a closed Log.
	ErrClosed = errors.New("eventlog: closed")
	// ErrCorrupt is wrapped by *CorruptError.
	ErrCorrupt = errors.New("eventlog: corrupt record")
	// ErrTrimmed is wrapped by *TrimmedError.
	ErrTrimmed = errors.New("eventlog: records trimmed")
	// ErrInvalid is wrapped by *ArgError.
	ErrInvalid = errors.New("eventlog: invalid argument")
	// ErrFailed is wrapped when an earlier commit failed: the log refuses
	// further writes until it is reopened (Pebble's state after a failed
	// WAL write or sync is unknown).
	ErrFailed = errors.New("eventlog: log failed")
)

// CorruptError reports a record whose stored bytes do not verify. The record
// is never returned; records before it are.
type CorruptError struct {
	Seq    uint64 // sequence of the corrupt record (its key)
	Reason string // what did not verify
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("eventlog: corrupt record at seq %d: %s", e.Seq, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// TrimmedError reports a read from a sequence that retention or Trim has
// removed. A consumer that gets it has missed records; it must decide
// (re-seed, or skip to First) rather than the log silently skipping.
type TrimmedError struct {
	From  uint64 // the sequence asked for
	First uint64 // the lowest sequence still held (LastSeq()+1 if none)
}

func (e *TrimmedError) Error() string {
	return fmt.Sprintf("eventlog: read from seq %d: records below %d were trimmed", e.From, e.First)
}

func (e *TrimmedError) Unwrap() error { return ErrTrimmed }

// ArgError reports a bad argument or option, naming it and the rule.
type ArgError struct {
	Field string
	Rule  string
}

func (e *ArgError) Error() string {
	return fmt.Sprintf("eventlog: invalid %s: %s", e.Field, e.Rule)
}

func (e *ArgError) Unwrap() error { return ErrInvalid }

func argErr(field, rule string) error { return &ArgError{Field: field, Rule: rule} }

// StampError reports that Options.Stamp panicked for a record; the Append
// that carried it wrote nothing.
type StampError struct {
	Seq   uint64 // the sequence the record would have had
	Panic any
}

func (e *StampError) Error() string {
	return fmt.Sprintf("eventlog: stamp panicked at seq %d: %v", e.Seq, e.Panic)
}
