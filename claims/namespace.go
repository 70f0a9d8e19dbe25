package claims

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Namespace separates the kinds of claimed values: an email and a username
// with equal hashes never collide.
type Namespace string

const (
	Email    Namespace = "email"
	Username Namespace = "username"
)

// Namespaces lists every namespace, in key order.
var Namespaces = []Namespace{Email, Username}

func (ns Namespace) valid() bool { return ns == Email || ns == Username }

// ownerPrefix is the key prefix of the per-identity registers; it is not a
// namespace, so no claim key can collide with it.
const ownerPrefix = "owner."

// hashLen is the size of the keyed hashes (HMAC-SHA256).
const hashLen = 32

// claimKey is "<ns>.<hex hash>".
func claimKey(ns Namespace, hash []byte) (string, error) {
	if !ns.valid() {
		return "", fmt.Errorf("%w: namespace %q: must be %q or %q", ErrInvalid, ns, Email, Username)
	}
	if len(hash) != hashLen {
		return "", fmt.Errorf("%w: hash: must be %d bytes (HMAC-SHA256), got %d", ErrInvalid, hashLen, len(hash))
	}
	return string(ns) + "." + hex.EncodeToString(hash), nil
}

// parseClaimKey is the inverse of claimKey.
func parseClaimKey(key string) (Namespace, []byte, bool) {
	ns, h, ok := strings.Cut(key, ".")
	if !ok || !Namespace(ns).valid() {
		return "", nil, false
	}
	hash, err := hex.DecodeString(h)
	if err != nil || len(hash) != hashLen {
		return "", nil, false
	}
	return Namespace(ns), hash, true
}

// ownerKey is "owner.<identity>"; identity ids are canonical UUIDs, which
// are valid key tokens.
func ownerKey(identityID string) (string, error) {
	if err := checkIdentity(identityID); err != nil {
		return "", err
	}
	return ownerPrefix + identityID, nil
}

// checkIdentity accepts what is a single KV key token: the writer only
// passes canonical UUIDs.
func checkIdentity(id string) error {
	if id == "" {
		return fmt.Errorf("%w: identity id: required", ErrInvalid)
	}
	if len(id) > 128 {
		return fmt.Errorf("%w: identity id: at most 128 characters", ErrInvalid)
	}
	for i := range len(id) {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: identity id %q: only letters, digits, '-' and '_'", ErrInvalid, id)
		}
	}
	return nil
}
