package writer

import (
	"crypto/hmac"
	"crypto/sha256"
	"strings"
)

// The email and username hashes are GLOBAL: every region can look an
// identity up by them, and global uniqueness claims are keyed by them, while
// the values themselves stay RESIDENT. They are HMAC-SHA256 under a key
// shared by all regions (so equal values hash equally everywhere, and nobody
// without the key can test guesses against them).

// NormalizeEmail is the form an email is hashed in: trimmed and lower-cased
// (the local part too: treating it case-sensitively invites look-alike
// accounts, and no mainstream provider distinguishes case). No Unicode
// normalisation.
func NormalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// NormalizeUsername is the form a username is hashed in: trimmed and
// lower-cased, so that "Alice" and "alice" cannot both be registered.
func NormalizeUsername(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// EmailHash is the keyed hash of an email, as stored in traits.email_hash and
// email_verified.email_hash.
func EmailHash(key []byte, email string) []byte {
	return keyedHash(key, NormalizeEmail(email))
}

// UsernameHash is the keyed hash of a username (traits.username_hash).
func UsernameHash(key []byte, username string) []byte {
	return keyedHash(key, NormalizeUsername(username))
}

// keyedHash is HMAC-SHA256 over the normalised value alone, so any holder of
// the key can recompute it; users of both kinds (claims) keep emails and
// usernames in separate namespaces.
func keyedHash(key []byte, v string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(v))
	return m.Sum(nil)
}
