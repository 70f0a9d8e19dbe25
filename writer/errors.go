package writer

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinels wrapped by *Error; match them with errors.Is.
var (
	// ErrInvalid: the input breaks a rule (400).
	ErrInvalid = errors.New("writer: invalid argument")
	// ErrTooLarge: an event or a request is over its size limit (413).
	ErrTooLarge = errors.New("writer: payload too large")
	// ErrUnsupportedMediaType: the request body is neither JSON nor protobuf
	// (415).
	ErrUnsupportedMediaType = errors.New("writer: unsupported media type")
	// ErrWrongRegion: resident data of an identity whose zone does not
	// contain this region (421); Error.HomeRegion names where to send it.
	ErrWrongRegion = errors.New("writer: wrong region")
	// ErrUnavailable: the log or the key store cannot take the write (503).
	// Nothing was appended; the request may be retried.
	ErrUnavailable = errors.New("writer: unavailable")
)

// Error codes, as they appear in the HTTP API's {"error":{"code":...}}.
const (
	CodeInvalid              = "invalid_argument"
	CodeTooLarge             = "payload_too_large"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeWrongRegion          = "wrong_region"
	CodeUnavailable          = "unavailable"
)

// Error is every error Append and DecodeRequest return. Field names the
// offending field as a path of proto field names within the event (for
// example "credential_added.credential.credential_id"), or a request-level
// name ("body", "events", "Content-Type"); Message states the rule.
type Error struct {
	Code    string
	Status  int // HTTP status
	Field   string
	Message string
	// Index is the position of the offending event in the request, or -1
	// when the error is not about one event.
	Index int
	// HomeRegion is set on wrong_region: the region to send the write to.
	HomeRegion string

	sentinel error
	cause    error
}

func (e *Error) Error() string {
	s := "writer: " + e.Code
	if e.Index >= 0 {
		s += fmt.Sprintf(": event %d", e.Index)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	s += ": " + e.Message
	if e.HomeRegion != "" {
		s += " (home region " + e.HomeRegion + ")"
	}
	return s
}

// Unwrap returns the sentinel and, for unavailable, the underlying cause
// (for example eventlog.ErrClosed).
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.sentinel, e.cause}
	}
	return []error{e.sentinel}
}

func newError(sentinel error, code string, status int, field, msg string) *Error {
	return &Error{Code: code, Status: status, Field: field, Message: msg, Index: -1, sentinel: sentinel}
}

func invalidf(field, format string, args ...any) *Error {
	return newError(ErrInvalid, CodeInvalid, http.StatusBadRequest, field, fmt.Sprintf(format, args...))
}

func tooLargef(field, format string, args ...any) *Error {
	return newError(ErrTooLarge, CodeTooLarge, http.StatusRequestEntityTooLarge, field, fmt.Sprintf(format, args...))
}

func unavailable(op string, cause error) *Error {
	e := newError(ErrUnavailable, CodeUnavailable, http.StatusServiceUnavailable, "", op+": "+cause.Error())
	e.cause = cause
	return e
}

// at sets the event index on a per-event error.
func (e *Error) at(i int) *Error {
	e.Index = i
	return e
}
