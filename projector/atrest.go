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

// sealResident encodes and seals st under the identity's current key, in
// the batch's scratch buffers: the result is valid until the next call
// (Pebble copies it).
func (b *batch) sealResident(en *entry, st *meridianv1.IdentityState) ([]byte, error) {
	id := en.id
	key, ok, err := b.currentKey(id)
	switch {
	case err != nil:
		return nil, fmt.Errorf("projector: seal resident state of %s: %w", id, err)
	case !ok:
		return nil, fmt.Errorf("%w for identity %s", errNoKey, id)
	}
	pt, err := b.encodeState(b.pt[:0], en, st)
	if err != nil {
		return nil, fmt.Errorf("projector: encode resident state of %s: %w", id, err)
	}
	if cap(pt)-len(pt) < 16 { // no room for the tag: seal into a larger buffer
		grown := append(make([]byte, 0, 2*len(pt)+16), pt...)
		clear(pt)
		pt = grown
	}
	sealed := key.Seal(residentAAD(id), pt) // in place: pt is gone
	b.pt = pt[:0]
	out, err := proto.MarshalOptions{}.MarshalAppend(b.buf[:0], sealed)
	if err != nil {
		return nil, fmt.Errorf("projector: encode sealed resident state of %s: %w", id, err)
	}
	b.buf = out
	return out, nil
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
	pt, err := key.Unseal(sealed, residentAAD(id))
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
