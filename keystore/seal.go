package keystore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"unsafe"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// Seal encrypts plaintext with AES-256-GCM under key, binding it to recordID
// (the additional data), and names the key in the result. The nonce is random
// (96 bits); a data key seals at most an identity's events, far below the
// 2^32 messages at which random nonces become a concern.
//
// Seal encrypts in place when plaintext has 16 bytes of spare capacity, so the
// caller's plaintext buffer no longer holds the plaintext afterwards.
func Seal(key [KeySize]byte, keyID, recordID string, plaintext []byte) *meridianv1.Sealed {
	return seal(newGCM(key[:]), keyID, recordID, plaintext)
}

// Unseal decrypts a Sealed made by Seal for recordID. It returns ErrAuth when
// the key, the record id or the bytes do not match.
func Unseal(key [KeySize]byte, s *meridianv1.Sealed, recordID string) ([]byte, error) {
	return unseal(newGCM(key[:]), nil, s, recordID)
}

func seal(aead cipher.AEAD, keyID, recordID string, plaintext []byte) *meridianv1.Sealed {
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce) // never fails (crypto/rand since Go 1.24)
	ct := aead.Seal(plaintext[:0], nonce, plaintext, stringBytes(recordID))
	return &meridianv1.Sealed{KeyId: keyID, Nonce: nonce, Ciphertext: ct}
}

func unseal(aead cipher.AEAD, dst []byte, s *meridianv1.Sealed, recordID string) ([]byte, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: sealed is nil", ErrInvalid)
	}
	if len(s.GetNonce()) != aead.NonceSize() {
		return nil, fmt.Errorf("%w: record %s: nonce is %d bytes, want %d", ErrAuth, recordID, len(s.GetNonce()), aead.NonceSize())
	}
	pt, err := aead.Open(dst, s.GetNonce(), s.GetCiphertext(), stringBytes(recordID))
	if err != nil {
		return nil, fmt.Errorf("%w: record %s key %s", ErrAuth, recordID, s.GetKeyId())
	}
	return pt, nil
}

// stringBytes views s as bytes without copying, for the additional data
// of AES-GCM, which only reads it (a conversion would allocate for every
// record sealed or opened).
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// newGCM cannot fail for a 32-byte key.
func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("keystore: " + err.Error())
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("keystore: " + err.Error())
	}
	return aead
}
