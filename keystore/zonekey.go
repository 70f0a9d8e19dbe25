package keystore

import (
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
	var out [KeySize]byte
	if dk == nil {
		return out, fmt.Errorf("%w: data key is nil", ErrInvalid)
	}
	var zk *ZoneKey
	for _, k := range zoneKeys {
		if k.ID == dk.GetZoneKeyId() {
			zk = &k
			break
		}
	}
	if zk == nil {
		return out, fmt.Errorf("keystore: unwrap key %s: zone key %q: %w", dk.GetKeyId(), dk.GetZoneKeyId(), ErrNotFound)
	}
	aead := newGCM(zk.Key[:])
	if len(dk.GetNonce()) != aead.NonceSize() {
		return out, fmt.Errorf("%w: unwrap key %s: nonce is %d bytes, want %d", ErrAuth, dk.GetKeyId(), len(dk.GetNonce()), aead.NonceSize())
	}
	pt, err := aead.Open(nil, dk.GetNonce(), dk.GetWrappedKey(), wrapAAD(dk.GetKeyId(), identityID))
	if err != nil {
		return out, fmt.Errorf("%w: unwrap key %s of identity %s", ErrAuth, dk.GetKeyId(), identityID)
	}
	if len(pt) != KeySize {
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
