package projector

import (
	"bytes"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// Secondary indexes are derived from the GLOBAL state alone (keyed hashes
// and session ids are GLOBAL), so every region has them. A batch computes
// them from the state it loaded and the state it writes and stores the
// difference, in the same Pebble batch, so the index always matches the
// stored states. An erased identity's state is a tombstone, so erasure
// deletes its entries: its email hash is free again.

// Register paths and set names of the indexed fields (see
// conflict's IdentityState layout).
const (
	regEmailHash    = "traits.email_hash"
	regUsernameHash = "traits.username_hash"
	setSessions     = "sessions"
)

type indexes struct {
	email, username []byte
	sessions        []string // sorted
}

func indexesOf(st *meridianv1.IdentityState) indexes {
	var ix indexes
	if st == nil || st.GetErased() != nil {
		return ix
	}
	ix.email = registerTraits(st, regEmailHash).GetEmailHash()
	ix.username = registerTraits(st, regUsernameHash).GetUsernameHash()
	for _, e := range findSet(st, setSessions).GetElements() {
		if e.GetAdded() != nil {
			ix.sessions = append(ix.sessions, string(e.GetKey()))
		}
	}
	return ix
}

// registerTraits decodes the Identity a traits register holds.
func registerTraits(st *meridianv1.IdentityState, path string) *meridianv1.Traits {
	r := findRegister(st, path)
	if r == nil {
		return nil
	}
	var id meridianv1.Identity
	if proto.Unmarshal(r.GetValue(), &id) != nil {
		return nil
	}
	return id.GetTraits()
}

// writeIndexDiff stores what changed from old to cur for identity id.
func writeIndexDiff(wb *pebble.Batch, id string, old, cur indexes) error {
	if err := diffHash(wb, pEmail, id, old.email, cur.email); err != nil {
		return err
	}
	if err := diffHash(wb, pUsername, id, old.username, cur.username); err != nil {
		return err
	}
	for _, s := range old.sessions {
		if _, ok := slices.BinarySearch(cur.sessions, s); !ok {
			if err := wb.Delete(sessionKey(s), nil); err != nil {
				return err
			}
		}
	}
	for _, s := range cur.sessions {
		if _, ok := slices.BinarySearch(old.sessions, s); !ok {
			if err := wb.Set(sessionKey(s), []byte(id), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func diffHash(wb *pebble.Batch, prefix byte, id string, old, cur []byte) error {
	if bytes.Equal(old, cur) {
		return nil
	}
	if len(old) > 0 {
		if err := wb.Delete(hashIndexKey(prefix, old, id), nil); err != nil {
			return err
		}
	}
	if len(cur) > 0 {
		return wb.Set(hashIndexKey(prefix, cur, id), nil, nil)
	}
	return nil
}

// findSet and findRegister look into the state's sorted lists (a handful
// of entries each, so a scan is as fast as a search).
func findSet(st *meridianv1.IdentityState, name string) *meridianv1.SetState {
	for _, s := range st.GetSets() {
		if s.GetName() == name {
			return s
		}
	}
	return nil
}

func findRegister(st *meridianv1.IdentityState, path string) *meridianv1.Register {
	for _, r := range st.GetRegisters() {
		if r.GetPath() == path {
			return r
		}
	}
	return nil
}
