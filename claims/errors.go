package claims

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

var (
	// ErrTaken: another identity holds the value (*TakenError).
	ErrTaken = errors.New("claims: taken")
	// ErrUnavailable: the claims domain did not answer (*UnavailableError).
	// Nothing is known about the claim; fail closed and retry later.
	ErrUnavailable = errors.New("claims: unavailable")
	// ErrNotFound: nobody holds the value.
	ErrNotFound = errors.New("claims: not found")
	// ErrNotOwner: Release found the value held by another identity (or
	// changed since it was read) and left it.
	ErrNotOwner = errors.New("claims: not held by this identity")
	// ErrInvalid wraps every bad argument.
	ErrInvalid = errors.New("claims: invalid argument")
)

// TakenError says a value is held by another identity. It carries no
// personal data: not the value, not its hash, not the holder.
type TakenError struct {
	Namespace Namespace
}

func (e *TakenError) Error() string {
	return fmt.Sprintf("claims: taken: this %s is already claimed by another identity", e.Namespace)
}

func (e *TakenError) Unwrap() error { return ErrTaken }

// UnavailableError says the claims region could not be reached.
type UnavailableError struct {
	// Region is the claims region, Op what was attempted.
	Region string
	Op     string
	Err    error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("claims: unavailable: claims region %s did not answer (%s): %v", e.Region, e.Op, e.Err)
}

// Unwrap returns ErrUnavailable and the cause (context.DeadlineExceeded,
// nats.ErrNoResponders, ...).
func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

func (c *Claims) unavailable(op string, err error) error {
	c.stats.unavailable.Add(1)
	return &UnavailableError{Region: c.cfg.ClaimsRegion, Op: op, Err: err}
}

// IsKeyExists reports whether err is the server's "key exists" / "wrong last
// sequence" answer to a compare-and-set: 10071 from a single replica, 10164
// from a replicated stream whose contended write lost. Both mean the key is
// held (or changed since it was read).
func IsKeyExists(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// isAbsent reports whether a Get found no live value.
func isAbsent(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}
