package projector

import (
	"encoding/binary"
	"fmt"
	"maps"

	"github.com/cockroachdb/pebble/v2"
	"github.com/meridian-id/meridian/region"
)

// The region's causal context (issue #4): per origin node, the HLC of the
// newest GLOBAL record of that node the read model has applied. The writer
// stamps it into every event that removes set elements (Event.observed), so
// that the remove cuts only the adds this region had seen; an add it had
// not seen survives (see conflict.AWElement).
//
// Only GLOBAL records count (identity GLOBAL parts and heartbeats): every
// event has a GLOBAL part, which carries its set adds, and the records of
// one origin's global subject arrive in the origin's log order, while its
// zone subject travels through another source and may run ahead. A node's
// records are in its log in HLC order but for appends racing each other,
// so a context can count as observed an add that was appended concurrently
// with a later-stamped record of its node; such an add is concurrent with
// the remove by microseconds, and a remove without a context would cut it
// as well.
//
// The context is kept in positions and written in the same Pebble batch as
// the states it describes, so after a restart it is exactly what the
// restored read model holds.

// observe moves the node's observed HLC past a GLOBAL record applied.
func (b *batch) observe(out *outcome) {
	if out.zone != region.GlobalZone || out.node == "" || out.hlc == 0 || out.kind == kindQuarantined {
		return
	}
	if out.hlc > max(b.delta.observed[out.node], b.e.pos.observed[out.node]) {
		b.delta.observed[out.node] = out.hlc
	}
}

// joinObserved takes the larger HLC per node from another share's batch.
func (b *batch) joinObserved(o *batch) {
	for n, h := range o.delta.observed {
		b.delta.observed[n] = max(b.delta.observed[n], h)
	}
}

// writeObserved puts the batch's observed HLCs into wb.
func writeObserved(wb *pebble.Batch, observed map[string]uint64) error {
	for n, h := range observed {
		if err := wb.Set(observedKey(n), u64(h), nil); err != nil {
			return err
		}
	}
	return nil
}

// loadObserved reads the stored observed HLCs into ps.
func (s *store) loadObserved(ps *positions) error {
	return s.scan([]byte{pObserved}, func(k, v []byte) error {
		if len(k) < 2 || len(v) != 8 {
			return fmt.Errorf("projector: read model: bad observed key %q", k)
		}
		ps.observed[string(k[1:])] = binary.BigEndian.Uint64(v)
		return nil
	})
}

func observedKey(node string) []byte { return append([]byte{pObserved}, node...) }

// Observed returns the region's causal context as the committed read model
// holds it: per origin node, the HLC (conflict.Timestamp) of the newest
// GLOBAL record of that node applied. The map is the caller's. It is nil
// when p is nil or closed (no context: a writer then stamps none, and its
// removes keep the old rule).
func (p *Projector) Observed() map[string]uint64 {
	if p == nil {
		return nil
	}
	if err := p.open(); err != nil {
		return nil
	}
	defer p.mu.RUnlock()
	return p.eng.observed()
}

func (e *engine) observed() map[string]uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := maps.Clone(e.pos.observed)
	if out == nil {
		out = map[string]uint64{}
	}
	return out
}
