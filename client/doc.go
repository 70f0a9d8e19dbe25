// Package client is the Go client services use to append identity events to
// a meridian region (POST /v1/events).
//
// Append's loop: give every event without an id a UUIDv7 event id (on a
// copy; the caller's events are untouched), encode the request once (protobuf
// by default, JSON with WithJSON), then send it, retrying on network errors
// and 503 with capped exponential backoff and jitter until the context ends
// or the attempts run out. Because the ids are fixed before the first
// attempt, a retry of an append whose answer was lost carries the same ids:
// the writer appends the records again, and JetStream's duplicate window
// drops the repeats (records are published with Nats-Msg-Id derived from the
// event id), so the event takes effect once. Supply your own event ids to
// extend that guarantee across your own retries or restarts.
//
// Other errors come back as *APIError (status, code, field, message, home
// region); a 421 names the home region to send the write to.
package client
