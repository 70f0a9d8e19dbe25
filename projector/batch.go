package projector

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"google.golang.org/protobuf/proto"
)

// batch applies a run of inbox messages in memory and writes their effects
// as one Pebble batch. It is the cache the apply step reads through: the
// first touch of an identity loads its states from the store, later
// messages of the batch see the states the earlier ones made, and each
// identity is written once, however many messages touched it.
type batch struct {
	e       *engine
	entries map[string]*entry
	touched []*entry // in first-touch order, so writes are deterministic
	delta   *positions
	quar    []QuarantineRecord
	last    uint64 // inbox sequence of the last message in the batch
	n       batchCounts
	keyMemo map[keyRef]keystore.Key
}

type keyRef struct{ identity, keyID string }

type batchCounts struct {
	messages, identity, keys, heartbeats, ignored, quarantined, erased, lost uint64
}

type entry struct {
	id             string
	origGlobal     *meridianv1.IdentityState // as stored before the batch
	global         *meridianv1.IdentityState
	resident       *meridianv1.IdentityState // unsealed
	globalLoaded   bool
	residentLoaded bool
	globalDirty    bool
	residentDirty  bool
	erased         bool // became erased in this batch
	prune          bool
}

func newBatch(e *engine) *batch {
	return &batch{e: e, entries: map[string]*entry{}, delta: newPositions()}
}

func (b *batch) entry(id string) *entry {
	en := b.entries[id]
	if en == nil {
		en = &entry{id: id}
		b.entries[id] = en
		b.touched = append(b.touched, en)
	}
	return en
}

func (b *batch) global(id string) (*meridianv1.IdentityState, error) {
	en := b.entry(id)
	if !en.globalLoaded {
		if c, ok := b.e.cache.get(id); ok {
			en.origGlobal, en.global, en.globalLoaded = c.global, c.global, true
			if c.residentKnown && !en.residentLoaded {
				en.resident, en.residentLoaded = c.resident, true
			}
			return en.global, nil
		}
		var st *meridianv1.IdentityState
		if !b.e.absent.absent(id) {
			var err error
			if st, err = b.e.store.global(id); err != nil {
				return nil, err
			}
		}
		en.origGlobal, en.global, en.globalLoaded = st, st, true
	}
	return en.global, nil
}

func (b *batch) resident(id string) (*meridianv1.IdentityState, error) {
	en := b.entry(id)
	if en.residentLoaded {
		return en.resident, nil
	}
	if !en.globalLoaded {
		// The cache holds both states together.
		if _, err := b.global(id); err != nil {
			return nil, err
		}
		if en.residentLoaded {
			return en.resident, nil
		}
	}
	var sealed *meridianv1.Sealed
	if !b.e.absent.absent(id) {
		var err error
		if sealed, err = b.e.store.residentSealed(id); err != nil {
			return nil, err
		}
	}
	if sealed != nil {
		st, err := openResident(b.e.keys, id, sealed)
		switch {
		case errors.Is(err, errResidentLost):
			// Unreadable for good (its key was destroyed elsewhere):
			// what is left is ciphertext nobody can open. Start over.
			b.e.log.Warn("projector: dropping unreadable resident state", "identity", id, "err", err)
			b.n.lost++
			en.residentDirty = true
		case err != nil:
			return nil, err
		}
		en.resident = st
	}
	en.residentLoaded = true
	return en.resident, nil
}

// key memoises lookups: an identity's parts in one batch share a key.
func (b *batch) key(id, keyID string) (keystore.Key, error) {
	ref := keyRef{id, keyID}
	if k, ok := b.keyMemo[ref]; ok {
		return k, nil
	}
	k, err := b.e.keys.Get(id, keyID)
	if err != nil {
		return k, err
	}
	if b.keyMemo == nil {
		b.keyMemo = map[keyRef]keystore.Key{}
	}
	b.keyMemo[ref] = k
	return k, nil
}

// add applies one message. An error is transient: the batch is abandoned
// and retried from the stored position.
func (b *batch) add(m *inMsg) error {
	out, err := b.e.step.apply(b, m)
	if err != nil {
		return fmt.Errorf("projector: apply inbox seq %d: %w", m.Seq, err)
	}
	b.n.messages++
	switch out.kind {
	case kindIdentity, kindIgnored:
		if out.kind == kindIdentity {
			b.n.identity++
		} else {
			b.n.ignored++
		}
		en := b.entry(out.identity)
		if out.global != nil {
			en.global, en.globalDirty = out.global, true
		}
		if out.resident != nil {
			en.resident, en.residentDirty = out.resident, true
		}
		if out.erased {
			en.erased = true
			en.resident, en.residentLoaded, en.residentDirty, en.prune = nil, true, false, false
			b.n.erased++
		}
		en.prune = en.prune || out.prune
	case kindKey:
		// Stored (synced) before the batch commits: a resident state sealed
		// or a part applied in this batch may need it, and the batch must
		// never be durable without it. Put is idempotent, so a retry after
		// a crash puts it again harmlessly.
		k := out.putKey
		if err := b.e.keys.Put(k.identity, k.keyID, k.material[:]); err != nil {
			return fmt.Errorf("projector: store data key %s of %s (inbox seq %d): %w", k.keyID, k.identity, m.Seq, err)
		}
		clear(k.material[:])
		b.n.keys++
	case kindHeartbeat:
		hb := *out.hb
		hb.AppliedAtUnixMs = b.e.now()
		if prev, ok := b.heartbeat(out.origin); !ok || hb.SentAtUnixMs >= prev.SentAtUnixMs {
			b.delta.heartbeats[out.origin] = hb
		}
		b.n.heartbeats++
	case kindQuarantined:
		b.quar = append(b.quar, QuarantineRecord{
			StreamSeq: m.Seq, Subject: m.Subject, MsgID: m.MsgID, Origin: out.origin, OriginSeq: out.originSeq,
			Code: out.code, Field: out.field, Reason: out.reason, AtUnixMs: b.e.now(),
		})
		b.n.quarantined++
	}
	b.advance(m, &out)
	b.last = m.Seq
	return nil
}

// join adds the effects of o, a batch of other identities' messages of the
// same inbox run.
func (b *batch) join(o *batch) {
	for id, en := range o.entries {
		b.entries[id] = en // disjoint: each identity lives in one share
	}
	b.touched = append(b.touched, o.touched...)
	for k, v := range o.delta.applied {
		b.delta.applied[k] = max(b.delta.applied[k], v)
	}
	for k, v := range o.delta.source {
		b.delta.source[k] = max(b.delta.source[k], v)
	}
	for origin, hb := range o.delta.heartbeats {
		if prev, ok := b.delta.heartbeats[origin]; !ok || hb.SentAtUnixMs >= prev.SentAtUnixMs {
			b.delta.heartbeats[origin] = hb
		}
	}
	b.quar = append(b.quar, o.quar...)
	slices.SortFunc(b.quar, func(x, y QuarantineRecord) int { return cmp.Compare(x.StreamSeq, y.StreamSeq) })
	b.n.messages += o.n.messages
	b.n.identity += o.n.identity
	b.n.keys += o.n.keys
	b.n.heartbeats += o.n.heartbeats
	b.n.ignored += o.n.ignored
	b.n.quarantined += o.n.quarantined
	b.n.erased += o.n.erased
	b.n.lost += o.n.lost
}

func (b *batch) heartbeat(origin string) (Heartbeat, bool) {
	if hb, ok := b.delta.heartbeats[origin]; ok {
		return hb, true
	}
	hb, ok := b.e.pos.heartbeats[origin]
	return hb, ok
}

// advance moves the positions past m, whatever its outcome: a quarantined
// message is done with too, and a reader waiting for it must not wait
// forever.
func (b *batch) advance(m *inMsg, out *outcome) {
	if out.origin == "" {
		return
	}
	if out.node != "" && out.originSeq > 0 {
		k := nodeZone{out.origin, out.node, out.zone}
		if out.originSeq > b.delta.applied[k] && out.originSeq > b.e.pos.applied[k] {
			b.delta.applied[k] = out.originSeq
		}
	}
	if m.SrcSeq > 0 && m.SrcStream == region.OriginStream(out.origin) {
		b.delta.source[originZone{out.origin, out.zone}] = m.SrcSeq
	}
}

// write puts the batch's effects into wb; it returns the identities whose
// keys must be destroyed once wb is durable.
func (b *batch) write(wb *pebble.Batch) (erase []string, err error) {
	for _, en := range b.touched {
		if err := b.writeEntry(wb, en); err != nil {
			return nil, err
		}
		if en.erased {
			erase = append(erase, en.id)
		}
	}
	for k, v := range b.delta.applied {
		if err := wb.Set(positionKey(k), u64(v), nil); err != nil {
			return nil, err
		}
	}
	for k, v := range b.delta.source {
		if err := wb.Set(sourceKey(k), u64(v), nil); err != nil {
			return nil, err
		}
	}
	for origin, hb := range b.delta.heartbeats {
		v, _ := json.Marshal(hb)
		if err := wb.Set(heartbeatKey(origin), v, nil); err != nil {
			return nil, err
		}
	}
	for _, q := range b.quar {
		v, _ := json.Marshal(q)
		if err := wb.Set(quarantineKey(q.StreamSeq), v, nil); err != nil {
			return nil, err
		}
	}
	if len(b.quar) > 0 {
		if err := wb.Set(metaQuarantined, u64(b.e.quarantined+uint64(len(b.quar))), nil); err != nil {
			return nil, err
		}
	}
	if err := wb.Set(metaInbox, u64(b.last), nil); err != nil {
		return nil, err
	}
	return erase, nil
}

func (b *batch) writeEntry(wb *pebble.Batch, en *entry) error {
	id := en.id
	if en.erased {
		// The tombstone, no resident state, no index entries, and a marker
		// that keeps the key destruction owed until it is done.
		v, err := marshalState(id, en.global)
		if err != nil {
			return err
		}
		if err := wb.Set(globalKey(id), v, nil); err != nil {
			return err
		}
		if err := wb.Delete(residentKey(id), nil); err != nil {
			return err
		}
		if err := wb.Set(erasingKey(id), nil, nil); err != nil {
			return err
		}
		return writeIndexDiff(wb, id, indexesOf(en.origGlobal), indexes{})
	}
	if en.globalDirty {
		v, err := marshalState(id, en.global)
		if err != nil {
			return err
		}
		if err := wb.Set(globalKey(id), v, nil); err != nil {
			return err
		}
		if err := writeIndexDiff(wb, id, indexesOf(en.origGlobal), indexesOf(en.global)); err != nil {
			return err
		}
	}
	if en.prune && !en.residentLoaded {
		if _, err := b.resident(id); err != nil {
			return err
		}
	}
	if (en.residentDirty || en.prune) && en.resident != nil {
		// Nothing a GLOBAL remove has killed stays at rest (a removed
		// credential's material, say), and an erased global prunes all.
		pruned := b.e.merger.Prune(en.resident, en.global)
		if !en.residentDirty && proto.Equal(pruned, en.resident) {
			return nil
		}
		v, err := sealResident(b.e.keys, id, pruned)
		if errors.Is(err, errNoKey) {
			// Shredded under us: what cannot be sealed is not kept.
			b.e.log.Warn("projector: dropping resident state: no data key", "identity", id)
			en.resident = nil
			return wb.Delete(residentKey(id), nil)
		}
		if err != nil {
			return err
		}
		en.resident = pruned // what the store now holds, for the state cache
		return wb.Set(residentKey(id), v, nil)
	}
	if en.residentDirty && en.resident == nil {
		return wb.Delete(residentKey(id), nil) // was unreadable
	}
	return nil
}

func marshalState(id string, st *meridianv1.IdentityState) ([]byte, error) {
	v, err := stateMarshal.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("projector: encode state of %s: %w", id, err)
	}
	return v, nil
}
