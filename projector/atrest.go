package projector

import (
	"errors"
	"fmt"

	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// The RESIDENT state of an identity is stored sealed (AES-256-GCM) under one
// of the identity's data keys from the region's key store, never in plain:
// when erasure destroys the keys, every copy of it — the live value, older
// versions in Pebble's SSTables and WAL, backups of the directory — becomes
// unreadable at once, without having to find and overwrite them.

// residentAAD binds a sealed state to its identity and purpose, so a value
// cannot be moved under another identity's key or mistaken for a record.
func residentAAD(id string) string { return "meridian.projector.resident\x00" + id }

var stateMarshal = proto.MarshalOptions{Deterministic: true}

// errNoKey: the identity has no data key here, so its resident state
// cannot be stored (its keys were destroyed outside the projector).
var errNoKey = errors.New("projector: no data key")

// sealResident encodes and seals st under the identity's current key.
func sealResident(keys KeyStore, id string, st *meridianv1.IdentityState) ([]byte, error) {
	key, ok, err := keys.Current(id)
	switch {
	case err != nil:
		return nil, fmt.Errorf("projector: seal resident state of %s: %w", id, err)
	case !ok:
		return nil, fmt.Errorf("%w for identity %s", errNoKey, id)
	}
	pt, err := stateMarshal.MarshalAppend(make([]byte, 0, stateMarshal.Size(st)+16), st)
	if err != nil {
		return nil, fmt.Errorf("projector: encode resident state of %s: %w", id, err)
	}
	sealed := keystore.Seal(key.Material, key.ID, residentAAD(id), pt) // in place: pt is gone
	return proto.Marshal(sealed)
}

// errResidentLost means the stored resident state cannot be opened: its key
// is gone (destroyed outside the projector) or the value does not
// authenticate. The state is unreadable for good, so callers treat it as
// absent rather than retrying forever.
var errResidentLost = errors.New("projector: resident state unreadable")

// openResident unseals a stored resident state.
func openResident(keys KeyStore, id string, sealed *meridianv1.Sealed) (*meridianv1.IdentityState, error) {
	key, err := keys.Get(id, sealed.GetKeyId())
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return nil, fmt.Errorf("%w: identity %s: key %s: %w", errResidentLost, id, sealed.GetKeyId(), err)
	case err != nil:
		return nil, fmt.Errorf("projector: resident state of %s: %w", id, err)
	}
	pt, err := keystore.Unseal(key.Material, sealed, residentAAD(id))
	if err != nil {
		return nil, fmt.Errorf("%w: identity %s: %w", errResidentLost, id, err)
	}
	st := &meridianv1.IdentityState{}
	err = proto.Unmarshal(pt, st)
	clear(pt)
	if err != nil {
		return nil, fmt.Errorf("%w: identity %s: does not decode: %w", errResidentLost, id, err)
	}
	return st, nil
}
