package projector

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"google.golang.org/protobuf/proto"
)

// batch applies a run of inbox messages in memory and writes their effects
// as one Pebble batch. It is the cache the apply step reads through: the
// first touch of an identity loads its states from the store (or the state
// cache), later messages of the batch see the states the earlier ones made,
// and each identity is written once, however many messages touched it.
//
// The batch owns the states it loaded: nothing else reads them until it
// commits (then the state cache holds them for the next batch), so the
// apply step changes them in place (conflict.Merger.ApplyInPlace).
type batch struct {
	e       *engine
	entries map[string]*entry
	touched []*entry // in first-touch order; written sorted by id
	delta   *positions
	quar    []QuarantineRecord
	last    uint64 // inbox sequence of the last message in the batch
	n       batchCounts
	// newKeys arrived in the batch's key records; they are stored (synced,
	// together) before the batch commits, and serve the batch from keyMemo
	// meanwhile.
	keyMemo  map[keyRef]keystore.Key
	newKeys  []keystore.PutKey
	firstNew map[string]keystore.Key // each identity's first key of newKeys
	buf, pt  []byte                  // scratch for encoding values (Pebble copies them)
	enc      stateEncoder
	in       interner // envelope strings shared between the batch's events
	plain    []byte   // scratch for RESIDENT parts' plaintexts (cleared after use)

	// at is the applied position of the origin node and zone of the last
	// message (see advance).
	at struct {
		k   nodeZone
		seq uint64
		ok  bool
	}

	// wb holds the writes of the touched identities (writeEntries), then
	// of the joined batches and the positions (writeMeta); erase lists
	// the identities whose keys go once it is durable.
	wb    *pebble.Batch
	erase []string
}

type keyRef struct{ identity, keyID string }

type batchCounts struct {
	messages, identity, keys, heartbeats, ignored, quarantined, erased, lost uint64
}

type entry struct {
	id             string
	origIx         indexSnap // the index entries as stored before the batch
	global         *meridianv1.IdentityState
	resident       *meridianv1.IdentityState // unsealed
	globalLoaded   bool
	residentLoaded bool
	globalDirty    bool
	residentDirty  bool
	erased         bool // became erased in this batch
	prune          bool
	key            keystore.Key // the last data key the identity's parts used
	// foreign: a state loaded from the store holds what the fast state
	// encoder leaves to proto (unknown fields of a newer build); the
	// merger's own writes never do.
	foreign bool
}

func newBatch(e *engine) *batch {
	return &batch{e: e, entries: map[string]*entry{}, delta: newPositions()}
}

// close releases the Pebble batch.
func (b *batch) close() {
	if b != nil && b.wb != nil {
		b.wb.Close()
		b.wb = nil
	}
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
			en.origIx, en.global, en.globalLoaded = snapIndexes(c.global).stable(), c.global, true
			en.foreign = c.foreign
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
		en.origIx, en.global, en.globalLoaded = snapIndexes(st).stable(), st, true
		en.foreign = en.foreign || foreign(st)
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
		en.foreign = en.foreign || foreign(st)
	}
	en.residentLoaded = true
	return en.resident, nil
}

// key returns a data key: the last one the identity's parts used in the
// batch, one that arrived in the batch and is not stored yet, or one from
// the key store.
func (b *batch) key(id, keyID string) (keystore.Key, error) {
	en := b.entry(id)
	if en.key.ID == keyID && keyID != "" {
		return en.key, nil
	}
	k, ok := b.keyMemo[keyRef{id, keyID}]
	if !ok {
		var err error
		if k, err = b.e.keys.Get(id, keyID); err != nil {
			return k, err
		}
	}
	en.key = k
	return k, nil
}

func (b *batch) memoKey(id string, k keystore.Key) {
	if b.keyMemo == nil {
		b.keyMemo = map[keyRef]keystore.Key{}
	}
	b.keyMemo[keyRef{id, k.ID}] = k
}

// currentKey is the key to seal the identity's resident state under: its
// current key, or, if it has none yet, the first key that arrived for it
// in the batch, which storeKeys makes current before the batch commits.
func (b *batch) currentKey(id string) (keystore.Key, bool, error) {
	k, ok, err := b.e.keys.Current(id)
	if err == nil && !ok {
		k, ok = b.firstNew[id]
	}
	return k, ok, err
}

// storeKeys stores the keys that arrived in the batch, synced, in one
// write where the key store can (keystore.Store.PutMany).
func (b *batch) storeKeys() error {
	if len(b.newKeys) == 0 {
		return nil
	}
	defer func() {
		for _, k := range b.newKeys {
			clear(k.Material)
		}
	}()
	if pm, ok := b.e.keys.(interface{ PutMany([]keystore.PutKey) error }); ok {
		if err := pm.PutMany(b.newKeys); err != nil {
			return fmt.Errorf("projector: store %d data keys of the batch: %w", len(b.newKeys), err)
		}
		return nil
	}
	for _, k := range b.newKeys {
		if err := b.e.keys.Put(k.IdentityID, k.KeyID, k.Material); err != nil {
			return fmt.Errorf("projector: store data key %s of %s: %w", k.KeyID, k.IdentityID, err)
		}
	}
	return nil
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
			en.global = out.global
			en.globalDirty = en.globalDirty || out.changed
		}
		if out.resident != nil {
			en.resident = out.resident
			en.residentDirty = en.residentDirty || out.changed
		}
		if out.erased {
			en.erased = true
			en.resident, en.residentLoaded, en.residentDirty, en.prune = nil, true, false, false
			b.n.erased++
		}
		en.prune = en.prune || out.prune
	case kindKey:
		// Stored (synced) before the batch commits, with the batch's other
		// keys: a resident state sealed or a part applied in this batch may
		// need it, and the batch must never be durable without it. Put is
		// idempotent, so a retry after a crash puts it again harmlessly.
		// Until then the batch's parts find it in keyMemo.
		k := out.putKey
		key := keystore.Key{ID: k.keyID, Material: k.material, Published: true}
		clear(k.material[:])
		if held, err := b.key(k.identity, k.keyID); err == nil && held.Material == key.Material && held.Published {
			b.n.keys++ // held already (a replay): nothing to store
			break
		}
		key = key.WithCipher()
		b.memoKey(k.identity, key)
		b.newKeys = append(b.newKeys, keystore.PutKey{IdentityID: k.identity, KeyID: k.keyID, Material: key.Material[:]})
		if _, ok := b.firstNew[k.identity]; !ok {
			if b.firstNew == nil {
				b.firstNew = map[string]keystore.Key{}
			}
			b.firstNew[k.identity] = key
		}
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
	b.observe(&out)
	b.last = m.Seq
	return nil
}

// join adds the effects of o, a batch of other identities' messages of the
// same inbox run.
func (b *batch) join(o *batch) error {
	for id, en := range o.entries {
		b.entries[id] = en // disjoint: each identity lives in one share
	}
	b.touched = append(b.touched, o.touched...)
	b.newKeys = append(b.newKeys, o.newKeys...)
	b.erase = append(b.erase, o.erase...)
	if o.wb != nil && !o.wb.Empty() {
		if b.wb == nil {
			b.wb = b.e.store.db.NewBatch()
		}
		if err := b.wb.Apply(o.wb, nil); err != nil {
			return fmt.Errorf("projector: join batches: %w", err)
		}
	}
	for k, v := range o.delta.applied {
		b.delta.applied[k] = max(b.delta.applied[k], v)
	}
	for k, v := range o.delta.source {
		b.delta.source[k] = max(b.delta.source[k], v)
	}
	b.joinObserved(o)
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
	return nil
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
		// Runs of messages share an origin node and zone: look the
		// position up once per run.
		k := nodeZone{out.origin, out.node, out.zone}
		if !b.at.ok || k != b.at.k {
			b.at.k, b.at.seq, b.at.ok = k, max(b.delta.applied[k], b.e.pos.applied[k]), true
		}
		if out.originSeq > b.at.seq {
			b.at.seq, b.delta.applied[k] = out.originSeq, out.originSeq
		}
	}
	if m.SrcSeq > 0 && m.SrcStream == region.OriginStream(out.origin) {
		b.delta.source[originZone{out.origin, out.zone}] = m.SrcSeq
	}
}

// writeEntries puts the states, index changes and erasure markers of the
// touched identities into b.wb (encoding and sealing them: the shards do
// it in parallel), and lists the identities whose keys must be destroyed
// once it is durable.
func (b *batch) writeEntries() error {
	if b.wb == nil {
		b.wb = b.e.store.db.NewBatch()
	}
	// In key order (see sortedWrites): the GLOBAL states by id, the
	// RESIDENT states by id, then the small writes, sorted.
	slices.SortFunc(b.touched, func(x, y *entry) int { return strings.Compare(x.id, y.id) })
	var small sortedWrites
	for _, en := range b.touched {
		if err := b.writeGlobal(b.wb, &small, en); err != nil {
			return fmt.Errorf("projector: build batch: %w", err)
		}
		if en.erased {
			b.erase = append(b.erase, en.id)
		}
	}
	for _, en := range b.touched {
		if err := b.writeResident(b.wb, en); err != nil {
			return fmt.Errorf("projector: build batch: %w", err)
		}
	}
	return small.flush(b.wb)
}

// writeMeta puts the positions, heartbeats, quarantine records and the
// inbox sequence reached into wb.
func (b *batch) writeMeta(wb *pebble.Batch) error {
	for k, v := range b.delta.applied {
		if err := wb.Set(positionKey(k), u64(v), nil); err != nil {
			return err
		}
	}
	for k, v := range b.delta.source {
		if err := wb.Set(sourceKey(k), u64(v), nil); err != nil {
			return err
		}
	}
	for origin, hb := range b.delta.heartbeats {
		v, _ := json.Marshal(hb)
		if err := wb.Set(heartbeatKey(origin), v, nil); err != nil {
			return err
		}
	}
	if err := writeObserved(wb, b.delta.observed); err != nil {
		return err
	}
	for _, q := range b.quar {
		v, _ := json.Marshal(q)
		if err := wb.Set(quarantineKey(q.StreamSeq), v, nil); err != nil {
			return err
		}
	}
	if len(b.quar) > 0 {
		if err := wb.Set(metaQuarantined, u64(b.e.quarantined+uint64(len(b.quar))), nil); err != nil {
			return err
		}
	}
	return wb.Set(metaInbox, u64(b.last), nil)
}

// writeGlobal writes an entry's GLOBAL state (into states) and the small
// writes that go with it: index changes, and for an erasure the resident
// state's deletion, the marker that keeps the key destruction owed until
// it is done, and the permanent erased marker.
func (b *batch) writeGlobal(states, small kvWriter, en *entry) error {
	id := en.id
	if en.erased {
		// The tombstone, no resident state, no index entries.
		if err := b.setState(states, globalKey(id), en, en.global); err != nil {
			return err
		}
		if err := small.Delete(residentKey(id), nil); err != nil {
			return err
		}
		if err := small.Set(erasingKey(id), nil, nil); err != nil {
			return err
		}
		// The erased marker (erased.go), in the same batch as the
		// tombstone: the writer's per-append check reads only it.
		if err := small.Set(erasedKey(id), nil, nil); err != nil {
			return err
		}
		return writeIndexDiff(small, id, en.origIx, indexSnap{})
	}
	if en.globalDirty {
		if err := b.setState(states, globalKey(id), en, en.global); err != nil {
			return err
		}
		if err := writeIndexDiff(small, id, en.origIx, snapIndexes(en.global)); err != nil {
			return err
		}
	}
	return nil
}

// writeResident writes an entry's RESIDENT state, pruned and sealed.
func (b *batch) writeResident(wb kvWriter, en *entry) error {
	id := en.id
	if en.erased {
		return nil // writeGlobal deleted it
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
		if !en.residentDirty && (pruned == en.resident || proto.Equal(pruned, en.resident)) {
			return nil
		}
		v, err := b.sealResident(en, pruned)
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

// encodeState encodes a state of en.
func (b *batch) encodeState(buf []byte, en *entry, st *meridianv1.IdentityState) ([]byte, error) {
	b.enc.trusted = !en.foreign
	return b.enc.encode(buf, st)
}

// foreign reports whether a state decoded from the store holds what the
// fast encoder must leave to proto.
func foreign(st *meridianv1.IdentityState) bool {
	if st == nil {
		return false
	}
	var e stateEncoder
	e.ok = true
	e.state(st)
	return !e.ok
}

// setState encodes st into the batch's scratch buffer and sets it at key
// (Pebble copies the value).
func (b *batch) setState(wb kvWriter, key []byte, en *entry, st *meridianv1.IdentityState) error {
	v, err := b.encodeState(b.buf[:0], en, st)
	if err != nil {
		return fmt.Errorf("projector: encode state of %s: %w", en.id, err)
	}
	b.buf = v
	return wb.Set(key, v, nil)
}
