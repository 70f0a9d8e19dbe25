package keystore

import (
	"crypto/cipher"
	"crypto/rand"
	"fmt"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// ZoneKey is the key-encryption key shared by the regions of one residency
// zone. Data keys travel between those regions wrapped by it, so the hub and
// every region outside the zone only ever see ciphertext. cmd/ loads zone
// keys from a key file per region; ID names the key so it can be rotated.
type ZoneKey struct {
	ID  string
	Key [KeySize]byte
}

// Wrap encrypts a data key under the zone key (AES-256-GCM). The additional
// data binds the wrapped key to its key id and identity, so a wrapped key
// cannot be replayed under another identity's subject.
func Wrap(zk ZoneKey, identityID, keyID string, dataKey [KeySize]byte) *meridianv1.DataKey {
	aead := newGCM(zk.Key[:])
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce) // never fails (crypto/rand since Go 1.24)
	return &meridianv1.DataKey{
		KeyId:      keyID,
		ZoneKeyId:  zk.ID,
		Nonce:      nonce,
		WrappedKey: aead.Seal(nil, nonce, dataKey[:], wrapAAD(keyID, identityID)),
	}
}

// Unwrap decrypts a DataKey of the identity with the zone key it names (looked
// up by ZoneKey.ID among zoneKeys, whatever the map is keyed by). It returns
// ErrNotFound when no zone key has that id and ErrAuth when the bytes, the key
// id or the identity id do not match.
func Unwrap(zoneKeys map[string]ZoneKey, identityID string, dk *meridianv1.DataKey) ([KeySize]byte, error) {
	if dk == nil {
		return [KeySize]byte{}, fmt.Errorf("%w: data key is nil", ErrInvalid)
	}
	for _, k := range zoneKeys {
		if k.ID == dk.GetZoneKeyId() {
			return unwrap(newGCM(k.Key[:]), identityID, dk)
		}
	}
	return [KeySize]byte{}, fmt.Errorf("keystore: unwrap key %s: zone key %q: %w", dk.GetKeyId(), dk.GetZoneKeyId(), ErrNotFound)
}

// Unwrapper is Unwrap over a fixed set of zone keys, with their AES-GCM
// instances built once: a projector unwraps every data key that arrives
// with the same few zone keys. It is safe for concurrent use.
type Unwrapper struct {
	aeads map[string]cipher.AEAD // by ZoneKey.ID
}

// NewUnwrapper prepares zoneKeys (any map key; matched by ZoneKey.ID) for
// Unwrap.
func NewUnwrapper(zoneKeys map[string]ZoneKey) *Unwrapper {
	u := &Unwrapper{aeads: make(map[string]cipher.AEAD, len(zoneKeys))}
	for _, k := range zoneKeys {
		u.aeads[k.ID] = newGCM(k.Key[:])
	}
	return u
}

// Unwrap is the package's Unwrap with the zone keys u was made of.
func (u *Unwrapper) Unwrap(identityID string, dk *meridianv1.DataKey) ([KeySize]byte, error) {
	if dk == nil {
		return [KeySize]byte{}, fmt.Errorf("%w: data key is nil", ErrInvalid)
	}
	aead, ok := u.aeads[dk.GetZoneKeyId()]
	if !ok {
		return [KeySize]byte{}, fmt.Errorf("keystore: unwrap key %s: zone key %q: %w", dk.GetKeyId(), dk.GetZoneKeyId(), ErrNotFound)
	}
	return unwrap(aead, identityID, dk)
}

func unwrap(aead cipher.AEAD, identityID string, dk *meridianv1.DataKey) ([KeySize]byte, error) {
	var out [KeySize]byte
	if len(dk.GetNonce()) != aead.NonceSize() {
		return out, fmt.Errorf("%w: unwrap key %s: nonce is %d bytes, want %d", ErrAuth, dk.GetKeyId(), len(dk.GetNonce()), aead.NonceSize())
	}
	var buf [KeySize + 16]byte
	pt, err := aead.Open(buf[:0], dk.GetNonce(), dk.GetWrappedKey(), wrapAAD(dk.GetKeyId(), identityID))
	if err != nil {
		return out, fmt.Errorf("%w: unwrap key %s of identity %s", ErrAuth, dk.GetKeyId(), identityID)
	}
	if len(pt) != KeySize {
		clear(pt)
		return out, fmt.Errorf("%w: unwrap key %s: %d bytes, want %d", ErrInvalid, dk.GetKeyId(), len(pt), KeySize)
	}
	copy(out[:], pt)
	clear(pt)
	return out, nil
}

// wrapAAD separates the ids with a NUL, which neither may contain.
func wrapAAD(keyID, identityID string) []byte {
	return []byte(keyID + "\x00" + identityID)
}
