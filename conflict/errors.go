package conflict

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"
)

var (
	// ErrNotIdentityEvent is returned by Apply for events that change no
	// identity (heartbeats, data keys); the caller routes them elsewhere.
	ErrNotIdentityEvent = errors.New("conflict: not an identity event")
	// ErrInvalidEvent is wrapped by every *EventError.
	ErrInvalidEvent = errors.New("conflict: invalid event")
	// ErrInvalidSchema is wrapped by every *SchemaError.
	ErrInvalidSchema = errors.New("conflict: invalid schema")
)

// EventError is an event Apply refuses, naming the field and the rule it
// breaks. The state passed to Apply is unchanged.
type EventError struct {
	Field string // field path in the event, e.g. "credential_added.credential.credential_id"
	Rule  string // what the field must satisfy
}

func (e *EventError) Error() string {
	return fmt.Sprintf("conflict: invalid event: %s: %s", e.Field, e.Rule)
}

func (e *EventError) Unwrap() error { return ErrInvalidEvent }

// SchemaError is a merge annotation NewMerger refuses, naming the annotated
// field (full proto name) and the rule it breaks.
type SchemaError struct {
	Field string // full name, e.g. "meridian.v1.RoleGranted.role"
	Rule  string
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("conflict: invalid schema: %s: %s", e.Field, e.Rule)
}

func (e *SchemaError) Unwrap() error { return ErrInvalidSchema }

func eventErr(field, format string, args ...any) error {
	return &EventError{Field: field, Rule: fmt.Sprintf(format, args...)}
}

func schemaErr(field protoreflect.Descriptor, format string, args ...any) error {
	return &SchemaError{Field: string(field.FullName()), Rule: fmt.Sprintf(format, args...)}
}
