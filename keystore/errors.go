package keystore

import "errors"

var (
	// ErrClosed is returned by every operation on a closed Store.
	ErrClosed = errors.New("keystore: closed")
	// ErrNotFound means the identity has no such key (or no key at all), or
	// no zone key with the id a DataKey names.
	ErrNotFound = errors.New("keystore: key not found")
	// ErrAuth means AES-GCM authentication failed: wrong key, wrong
	// additional data (record id, key id, identity id) or tampered bytes.
	ErrAuth = errors.New("keystore: authentication failed")
	// ErrInvalid is a malformed argument (empty or oversized id, key of the
	// wrong length, a key id already stored with different material).
	ErrInvalid = errors.New("keystore: invalid argument")
)
