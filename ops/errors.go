package ops

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalid is wrapped by every *InvalidError.
	ErrInvalid = errors.New("ops: invalid argument")
	// ErrNodeRunning: an offline operation found a store still open (the
	// node of the data directory runs); stop it first.
	ErrNodeRunning = errors.New("ops: the node's stores are in use: stop the node first")
	// ErrNotLost: a re-seed found the store it would rebuild still there.
	ErrNotLost = errors.New("ops: the store to re-seed is not lost")
	// ErrUnreachable: a region's node or NATS did not answer.
	ErrUnreachable = errors.New("ops: unreachable")
	// ErrTimeout: a bounded wait ended before its condition held.
	ErrTimeout = errors.New("ops: timed out")
	// ErrInterrupted: the context ended an operation that can be resumed.
	ErrInterrupted = errors.New("ops: interrupted")
)

// InvalidError is a bad configuration value, naming the field and the rule.
type InvalidError struct {
	Field string
	Rule  string
}

func (e *InvalidError) Error() string { return fmt.Sprintf("ops: %s: %s", e.Field, e.Rule) }

// Unwrap returns ErrInvalid.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalidf(field, format string, args ...any) error {
	return &InvalidError{Field: field, Rule: fmt.Sprintf(format, args...)}
}

// RegionError is a failure in one region.
type RegionError struct {
	Region string
	Op     string
	Err    error
}

func (e *RegionError) Error() string { return fmt.Sprintf("ops: %s: %s: %v", e.Region, e.Op, e.Err) }

// Unwrap returns the cause.
func (e *RegionError) Unwrap() error { return e.Err }
