package projector

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// Operator access to a read model (used by package ops: digests for
// verify and replay, the residency audit, re-seeding). Everything here
// reads one Pebble snapshot or works on a model no projector has open.

// StateVisitor receives one identity of a read model: its GLOBAL state
// (nil only for an orphaned resident state), its RESIDENT state unsealed
// (nil when none is held here), and why the resident state could not be
// opened (its key is gone, it does not authenticate), if so.
type StateVisitor func(id string, global, resident *meridianv1.IdentityState, residentErr error) error

// RangeStates calls fn for every identity of the model, in id order, as of
// one consistent snapshot, and returns the inbox sequence of that snapshot:
// the states are exactly the effects of the inbox up to it.
func (p *Projector) RangeStates(fn StateVisitor) (inboxSeq uint64, err error) {
	if err := p.open(); err != nil {
		return 0, err
	}
	defer p.mu.RUnlock()
	return p.eng.rangeStates(fn)
}

// RangeStates is Projector.RangeStates on a read-only model.
func (m *Model) RangeStates(fn StateVisitor) (inboxSeq uint64, err error) {
	return m.eng.rangeStates(fn)
}

func (e *engine) rangeStates(fn StateVisitor) (uint64, error) {
	snap := e.store.db.NewSnapshot()
	defer snap.Close()
	inboxSeq, err := snapUint(snap, metaInbox)
	if err != nil {
		return 0, err
	}
	git, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{pGlobal}, UpperBound: []byte{pGlobal + 1}})
	if err != nil {
		return 0, fmt.Errorf("projector: range states: %w", err)
	}
	defer git.Close()
	rit, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{pResident}, UpperBound: []byte{pResident + 1}})
	if err != nil {
		return 0, fmt.Errorf("projector: range states: %w", err)
	}
	defer rit.Close()

	// A merge join of the two key spaces, both in id order.
	gok, rok := git.First(), rit.First()
	for gok || rok {
		var gid, rid string
		if gok {
			gid = string(git.Key()[1:])
		}
		if rok {
			rid = string(rit.Key()[1:])
		}
		var (
			id    string
			g, r  *meridianv1.IdentityState
			rerr  error
			takeG = gok && (!rok || gid <= rid)
			takeR = rok && (!gok || rid <= gid)
		)
		if takeG {
			id = gid
			g = &meridianv1.IdentityState{}
			if err := proto.Unmarshal(git.Value(), g); err != nil {
				return inboxSeq, fmt.Errorf("projector: range states: state of %s: %w", id, err)
			}
		}
		if takeR {
			id = rid
			sealed := &meridianv1.Sealed{}
			if err := proto.Unmarshal(rit.Value(), sealed); err != nil {
				rerr = fmt.Errorf("%w: identity %s: stored resident state does not decode: %w", errResidentLost, id, err)
			} else {
				r, rerr = openResident(e.keys, id, sealed)
			}
		}
		if err := fn(id, g, r, rerr); err != nil {
			return inboxSeq, err
		}
		if takeG {
			gok = git.Next()
		}
		if takeR {
			rok = rit.Next()
		}
	}
	if err := errors.Join(git.Error(), rit.Error()); err != nil {
		return inboxSeq, fmt.Errorf("projector: range states: %w", err)
	}
	return inboxSeq, nil
}

func snapUint(snap *pebble.Snapshot, key []byte) (uint64, error) {
	v, closer, err := snap.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("projector: read model get: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("projector: read model key %q: value of %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// ResetInbox rewinds the read model in dir (which no projector may have
// open) to inbox sequence 0, keeping every state, and returns the sequence
// it held. A projector started on it then applies its inbox again from the
// first message. Merges are idempotent, so re-applying events the model
// already holds changes nothing: this is how a model survives the loss of
// its inbox stream (re-seed), where Rebuild from the new stream would drop
// the effects of events no stream holds any more. The origin stream
// positions are cleared too, since they name sequences of the old streams.
func ResetInbox(dir string) (previous uint64, err error) {
	if dir == "" {
		return 0, invalidf("dir", "required")
	}
	s, err := openStore(dir, false)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := s.close(); err == nil {
			err = cerr
		}
	}()
	if previous, err = s.inboxSeq(); err != nil {
		return 0, err
	}
	wb := s.db.NewBatch()
	defer wb.Close()
	if err := wb.Set(metaInbox, u64(0), nil); err != nil {
		return previous, err
	}
	if err := wb.DeleteRange([]byte{pSource}, []byte{pSource + 1}, nil); err != nil {
		return previous, err
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		return previous, fmt.Errorf("projector: reset inbox position: %w", err)
	}
	return previous, nil
}

// Stored returns what the model holds of one identity: its GLOBAL state
// (nil when unknown) and whether a RESIDENT state is stored (sealed; it
// is not opened).
func (p *Projector) Stored(id string) (global *meridianv1.IdentityState, residentHeld bool, err error) {
	if err := p.open(); err != nil {
		return nil, false, err
	}
	defer p.mu.RUnlock()
	if global, err = p.eng.store.global(id); err != nil {
		return nil, false, err
	}
	_, residentHeld, err = p.eng.store.get(residentKey(id))
	return global, residentHeld, err
}
