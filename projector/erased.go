package projector

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
)

// Erased markers. The writer asks, for every event it appends, whether the
// identity is erased in this region (writer.Tombstones). Answering from the
// GLOBAL state costs a Pebble read and a full IdentityState decode (plus,
// through Stored, a second read) per event. So the model keeps one small
// key per erased identity, 'd' id, written in the same Pebble batch as the
// tombstone state (batch.writeGlobal): the marker and the state can never
// disagree, whatever crashes. The live projector, Rebuild and Swap all apply
// through the batch, so every model this build writes has them. An erasure
// is permanent (REMOVE_WINS over the whole identity), so a marker is never
// deleted; it goes only with the model.
//
// Erased is then one point Get, and almost always a miss: the model's bloom
// filters (store.go, every level) answer it for the SSTables without
// reading their blocks.
//
// Models written by an older build have tombstones without markers, and no
// metaMarkers key. Opened writable (the projector, a rebuild resuming, a
// swap), openStore backfills them first: one scan of the GLOBAL states,
// markers for the erased, then metaMarkers, synced (a crash in between
// repeats the scan; Set is idempotent). Opened read-only (an operator's
// Model), nothing can be written, so isErased falls back to reading the
// state.

// loadMarkers reads metaMarkers and backfills the markers of a model from
// an older build (writable only).
func (s *store) loadMarkers(readOnly bool) error {
	v, err := s.getUint(metaMarkers)
	switch {
	case err != nil:
		return err
	case v != 0:
		s.markers = true
		return nil
	case readOnly:
		return nil
	}
	if _, err := s.backfillMarkers(); err != nil {
		return err
	}
	s.markers = true
	return nil
}

// backfillBatch bounds the markers written per Pebble batch.
const backfillBatch = 4096

// backfillMarkers writes the marker of every erased identity whose GLOBAL
// state is in the model, then metaMarkers, and returns how many erased
// identities it found.
func (s *store) backfillMarkers() (int, error) {
	wb := s.db.NewBatch()
	defer func() { wb.Close() }()
	found, pending := 0, 0
	err := s.scan([]byte{pGlobal}, func(k, v []byte) error {
		erased, err := stateErased(v)
		if err != nil {
			return fmt.Errorf("projector: erased markers: state of %s: %w", k[1:], err)
		}
		if !erased {
			return nil
		}
		found++
		pending++
		if err := wb.Set(erasedKey(string(k[1:])), nil, nil); err != nil {
			return err
		}
		if pending >= backfillBatch {
			if err := wb.Commit(pebble.NoSync); err != nil {
				return err
			}
			wb.Close()
			wb, pending = s.db.NewBatch(), 0
		}
		return nil
	})
	if err == nil {
		err = wb.Set(metaMarkers, u64(1), nil)
	}
	if err == nil {
		// Synced with the markers before it (a WAL prefix): metaMarkers is
		// never durable without them.
		err = wb.Commit(pebble.Sync)
	}
	if err != nil {
		return found, fmt.Errorf("projector: backfill erased markers: %w", err)
	}
	return found, nil
}

// erasedField is IdentityState.erased, the tombstone.
var erasedField = func() protowire.Number {
	fd := (&meridianv1.IdentityState{}).ProtoReflect().Descriptor().Fields().ByName("erased")
	if fd == nil {
		panic("projector: schema: IdentityState has no field erased")
	}
	return fd.Number()
}()

var errBadState = errors.New("malformed state encoding")

// stateErased reports whether an encoded IdentityState has its tombstone
// set (the field present, as conflict.Merger.Erased tests after decoding),
// without decoding the state.
func stateErased(b []byte) (bool, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, errBadState
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return false, errBadState
		}
		if num == erasedField && typ == protowire.BytesType {
			return true, nil
		}
		b = b[n+m:]
	}
	return false, nil
}

// isErased reports whether the model holds the identity's tombstone: one
// point read of its marker, or, in a read-only model of an older build,
// of its GLOBAL state.
func (s *store) isErased(id string) (bool, error) {
	if !s.markers {
		v, ok, err := s.get(globalKey(id))
		if err != nil || !ok {
			return false, err
		}
		return stateErased(v)
	}
	var buf [64]byte
	_, closer, err := s.db.Get(append(append(buf[:0], pErased), id...))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("projector: read model get: %w", err)
	}
	closer.Close()
	return true, nil
}

// Erased reports whether this region's read model holds the identity's
// tombstone (its IdentityErased is applied here). It reads one small key
// (see erased.go), so the writer can ask it for every event it appends.
// An unknown identity is not erased.
func (p *Projector) Erased(id string) (bool, error) {
	if err := p.open(); err != nil {
		return false, err
	}
	defer p.mu.RUnlock()
	return p.eng.store.isErased(id)
}
