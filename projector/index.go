package projector

import (
	"bytes"
	"slices"

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

// indexSnap is what the indexes of a GLOBAL state are made of, taken when
// a batch loads the state: the batch changes the state in place, but
// registers and set elements are replaced there, never changed
// (conflict.Merger.ApplyInPlace), so the snapshot's pointers keep showing
// the stored values, and an unchanged pointer is an unchanged index entry
// (no decoding).
type indexSnap struct {
	email, username *meridianv1.Register
	sessions        []*meridianv1.SetElement // sorted by key
}

func snapIndexes(st *meridianv1.IdentityState) indexSnap {
	if st == nil || st.GetErased() != nil {
		return indexSnap{}
	}
	return indexSnap{
		email:    findRegister(st, regEmailHash),
		username: findRegister(st, regUsernameHash),
		sessions: findSet(st, setSessions).GetElements(),
	}
}

// stable returns s with its own copy of the session list, which the state
// it came from may change in place.
func (s indexSnap) stable() indexSnap {
	s.sessions = slices.Clone(s.sessions)
	return s
}

// registerTraits decodes the Identity a traits register holds.
func registerTraits(r *meridianv1.Register) *meridianv1.Traits {
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
func writeIndexDiff(wb kvWriter, id string, old, cur indexSnap) error {
	if old.email != cur.email {
		if err := diffHash(wb, pEmail, id, registerTraits(old.email).GetEmailHash(), registerTraits(cur.email).GetEmailHash()); err != nil {
			return err
		}
	}
	if old.username != cur.username {
		if err := diffHash(wb, pUsername, id, registerTraits(old.username).GetUsernameHash(), registerTraits(cur.username).GetUsernameHash()); err != nil {
			return err
		}
	}
	// Both lists are sorted by key: walk them together.
	a, b := old.sessions, cur.sessions
	for len(a) > 0 || len(b) > 0 {
		var c int
		switch {
		case len(a) == 0:
			c = 1
		case len(b) == 0:
			c = -1
		case a[0] == b[0]:
			a, b = a[1:], b[1:]
			continue
		default:
			c = bytes.Compare(a[0].GetKey(), b[0].GetKey())
		}
		was := c <= 0 && a[0].GetAdded() != nil
		is := c >= 0 && b[0].GetAdded() != nil
		var key []byte
		if c <= 0 {
			key, a = a[0].GetKey(), a[1:]
		}
		if c >= 0 {
			key, b = b[0].GetKey(), b[1:]
		}
		switch {
		case was && !is:
			if err := wb.Delete(sessionKey(string(key)), nil); err != nil {
				return err
			}
		case is && !was:
			if err := wb.Set(sessionKey(string(key)), []byte(id), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func diffHash(wb kvWriter, prefix byte, id string, old, cur []byte) error {
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
