package writer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/google/uuid"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Writer is a region's write path. It is safe for concurrent use.
type Writer struct {
	cfg     Config
	zone    string           // this region's zone
	zoneKey keystore.ZoneKey // wraps the data keys made here
	plans   bodyPlans

	stats struct {
		appends, events, records, keysCreated   atomic.Uint64
		invalid, tooLarge, wrongRegion, unavail atomic.Uint64
	}
	claimStats claimStats // claims.go
}

// Result is the acknowledgement of a durable Append.
type Result struct {
	// EventIDs are the events' ids, in request order.
	EventIDs []string
	// First and Last are the log sequences of the request's records.
	First, Last uint64
	// Sequences is the last sequence per subject zone ("global" and the
	// identity zone) among the request's records.
	Sequences map[string]uint64
	// Token is the encoded ConsistencyToken (Meridian-Token header).
	Token string
}

// Metrics is a snapshot of the writer's counters.
type Metrics struct {
	Appends     uint64 // successful Append calls
	Events      uint64 // events in them
	Records     uint64 // log records written (parts and key records)
	KeysCreated uint64 // data keys this writer created
	// Rejections by code.
	Invalid, TooLarge, WrongRegion, Unavailable uint64
}

// New checks cfg, applies defaults and precomputes the split plan of every
// event type from the schema's options.
func New(cfg Config) (*Writer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	plans, err := buildBodyPlans()
	if err != nil {
		return nil, err
	}
	zone, _ := cfg.Topology.ZoneOf(cfg.Region)
	return &Writer{cfg: cfg, zone: zone, zoneKey: cfg.ZoneKeys[zone], plans: plans}, nil
}

// Metrics returns a snapshot of the counters.
func (w *Writer) Metrics() Metrics {
	s := &w.stats
	return Metrics{
		Appends: s.appends.Load(), Events: s.events.Load(), Records: s.records.Load(),
		KeysCreated: s.keysCreated.Load(), Invalid: s.invalid.Load(), TooLarge: s.tooLarge.Load(),
		WrongRegion: s.wrongRegion.Load(), Unavailable: s.unavail.Load(),
	}
}

// Append validates, stamps, splits, seals and durably appends events, all
// or nothing, and returns once the log has synced them. Every error is an
// *Error; on any error nothing was appended. The events are not modified.
//
// Retrying with the same (client-supplied) event ids after an ambiguous
// failure appends the records again; the stream's duplicate window drops
// the repeats, as their record ids are equal.
func (w *Writer) Append(ctx context.Context, events ...*meridianv1.Event) (*Result, error) {
	res, err := w.append(ctx, events)
	if err != nil {
		w.count(err)
		return nil, err
	}
	return res, nil
}

func (w *Writer) count(err *Error) {
	switch err.Code {
	case CodeInvalid:
		w.stats.invalid.Add(1)
	case CodeTooLarge:
		w.stats.tooLarge.Add(1)
	case CodeWrongRegion:
		w.stats.wrongRegion.Add(1)
	case CodeUnavailable:
		w.stats.unavail.Add(1)
	}
}

func (w *Writer) append(ctx context.Context, events []*meridianv1.Event) (*Result, *Error) {
	switch {
	case len(events) == 0:
		return nil, invalidf("events", "required: at least one event")
	case len(events) > w.cfg.MaxEvents:
		return nil, tooLargef("events", "%d events in one request; the limit is %d (MaxEvents)", len(events), w.cfg.MaxEvents)
	}
	var o *one
	var preps []*prepared
	if len(events) == 1 {
		o = new(one)
		o.preps[0] = &o.prep
		preps = o.preps[:]
	} else {
		preps = make([]*prepared, len(events))
		for i := range preps {
			preps[i] = new(prepared)
		}
	}
	total := 0
	for i, ev := range events {
		if err := w.prepare(preps[i], ev); err != nil {
			return nil, err.at(i)
		}
		total += preps[i].size
	}
	if total > w.cfg.MaxRequestBytes {
		return nil, tooLargef("events", "events total %d bytes encoded; the limit per request is %d (MaxRequestBytes)", total, w.cfg.MaxRequestBytes)
	}
	if err := checkDuplicateIDs(events); err != nil {
		return nil, err
	}
	if err := w.checkErased(ctx, preps); err != nil {
		return nil, err
	}
	// Uniqueness claims (claims.go): taken here, all or nothing; given back
	// if nothing is appended; settled once the records are durable.
	claims, cerr := w.takeClaims(ctx, preps)
	if cerr != nil {
		return nil, cerr
	}

	b := w.newBatch(preps, o)
	if err := b.fetchKeys(preps); err != nil {
		claims.abort(ctx)
		return nil, err
	}
	for _, p := range preps {
		if err := b.add(p); err != nil {
			claims.abort(ctx)
			return nil, err
		}
	}
	if err := claims.beforeAppend(ctx); err != nil {
		return nil, err
	}
	first, err := w.cfg.Log.Append(ctx, b.recs...)
	// The log keeps nothing of the records once Append returns (it copied
	// them into its batch, or never took them).
	for _, p := range preps {
		p.releaseScratch()
	}
	if err != nil {
		claims.appendFailed(ctx, err)
		return nil, logError(err)
	}
	claims.settle(ctx, b.ids, b.hlcs)
	for _, k := range b.newKeys {
		// Best effort: an unmarked key is only published once more.
		_ = w.cfg.Keys.MarkPublished(k.identity, k.keyID)
	}
	w.stats.appends.Add(1)
	w.stats.events.Add(uint64(len(events)))
	w.stats.records.Add(uint64(len(b.recs)))
	if o == nil {
		return w.result(first, b.ids, b.zones), nil
	}
	res := &o.res
	w.resultInto(res, o.token[:], first, b.ids, b.zones)
	// The Result keeps o alive: drop what only the append needed (the
	// caller's event, the records' slices, the data key).
	o.prep, o.batch = prepared{}, oneEvent{}
	return res, nil
}

// one backs a one-event Append, the common request, in a single
// allocation: what its Result keeps (the Result, its EventIDs, a generated
// event id's and the token's bytes) and what only the append uses (the
// prepared event, the batch's slices), cleared before Append returns.
type one struct {
	res   Result
	ids   [1]string
	id    [uuidLen]byte
	token [tokenRoom]byte
	preps [1]*prepared
	prep  prepared
	batch oneEvent
}

func logError(err error) *Error {
	if errors.Is(err, eventlog.ErrInvalid) {
		// The log's own batch limits; the writer's limits keep requests
		// below them, so this means the two were configured apart.
		return tooLargef("events", "the log refused the batch: %v", err)
	}
	return unavailable("append to log", err)
}

func checkDuplicateIDs(events []*meridianv1.Event) *Error {
	if len(events) < 2 {
		return nil
	}
	var seen map[string]int
	for i, ev := range events {
		if ev.EventId == "" {
			continue
		}
		if seen == nil {
			seen = make(map[string]int)
		}
		if j, ok := seen[ev.EventId]; ok {
			return invalidf("event_id", "%s is also the id of event %d; ids must be unique", ev.EventId, j).at(i)
		}
		seen[ev.EventId] = i
	}
	return nil
}

func (w *Writer) result(first uint64, ids []string, zones []string) *Result {
	res := new(Result)
	w.resultInto(res, nil, first, ids, zones)
	return res
}

// resultInto fills res; the token is encoded into token if it fits.
func (w *Writer) resultInto(res *Result, token []byte, first uint64, ids []string, zones []string) {
	// The last sequence per zone (records are in sequence order), on the
	// stack: a request's records name two zones or three.
	var buf [4]zoneSeq
	zs := buf[:0]
	for i, z := range zones {
		seq := first + uint64(i)
		j := slices.IndexFunc(zs, func(e zoneSeq) bool { return e.zone == z })
		if j < 0 {
			zs = append(zs, zoneSeq{z, seq})
		} else {
			zs[j].seq = seq
		}
	}
	seqs := make(map[string]uint64, len(zs))
	for _, e := range zs {
		seqs[e.zone] = e.seq
	}
	*res = Result{
		EventIDs:  ids,
		First:     first,
		Last:      first + uint64(len(zones)) - 1,
		Sequences: seqs,
		Token:     encodeZoneSeqs(token, w.cfg.Region, w.cfg.Node, zs),
	}
}

// AppendHeartbeat appends a heartbeat record (GLOBAL, no identity) carrying
// the node's clock, from which every region measures its replication lag
// from this origin.
func (w *Writer) AppendHeartbeat(ctx context.Context) (*Result, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, unavailable("event id", err)
	}
	ev := &meridianv1.Event{
		EventId:      id.String(),
		OriginRegion: w.cfg.Region,
		OriginNode:   w.cfg.Node,
		Hlc:          uint64(w.cfg.Clock.Now()),
		Part:         meridianv1.Part_PART_GLOBAL,
		Body:         &meridianv1.Event_Heartbeat{Heartbeat: &meridianv1.Heartbeat{SentAtUnixMs: w.cfg.Now()}},
	}
	rec, merr := marshalRecord(ev)
	if merr != nil {
		return nil, merr
	}
	first, lerr := w.cfg.Log.Append(ctx, rec)
	if lerr != nil {
		e := logError(lerr)
		w.count(e)
		return nil, e
	}
	w.stats.records.Add(1)
	return w.result(first, []string{ev.EventId}, []string{GlobalZone}), nil
}

// newBatch makes the batch that builds the records of preps; o, if not nil,
// backs a one-event request's slices.
func (w *Writer) newBatch(preps []*prepared, o *one) batch {
	if o != nil {
		m := &o.batch
		return batch{w: w, recs: m.recs[:0], zones: m.zones[:0], ids: o.ids[:0], idBuf: o.id[:], hlcs: m.hlcs[:0], keys: m.keys[:0]}
	}
	return batch{w: w,
		recs:  make([][]byte, 0, 2*len(preps)),
		zones: make([]string, 0, 2*len(preps)),
		ids:   make([]string, 0, len(preps)),
		hlcs:  make([]uint64, 0, len(preps)),
	}
}

// batch builds the records of one Append.
type batch struct {
	w       *Writer
	recs    [][]byte
	zones   []string       // subject zone per record
	ids     []string       // event ids per request event
	idBuf   []byte         // room for the event ids the batch generates
	hlcs    []uint64       // HLC stamped per request event (claims.go)
	keys    []batchKey     // data keys used in this batch; most requests name one identity
	keyIdx  map[string]int // index into keys, once there are many
	newKeys []newKey       // key records in this batch, to mark published
}

// oneEvent backs the slices of a batch of one event: its GLOBAL record,
// possibly a key record, and its RESIDENT record.
type oneEvent struct {
	recs  [3][]byte
	zones [3]string
	hlcs  [1]uint64
	keys  [1]batchKey
}

type batchKey struct {
	identity string
	key      keystore.Key
	emitted  bool // the key record (if the key needs one) is in recs
}

type newKey struct{ identity, keyID string }

func (b *batch) add(p *prepared) *Error {
	w := b.w
	ev := p.ev
	id := ev.EventId
	if id == "" {
		id = b.newID()
	}
	b.ids = append(b.ids, id)
	hlc := w.cfg.Clock.Now()
	if p.proposed != 0 {
		hlc = w.cfg.Clock.Update(p.proposed)
	}
	b.hlcs = append(b.hlcs, uint64(hlc))
	env := envelope{
		eventID: id, identityID: ev.IdentityId, originRegion: w.cfg.Region, originNode: w.cfg.Node,
		zone: p.zone, homeRegion: p.home, hlc: uint64(hlc), observed: w.observed(p), // observed.go
	}
	var derivedBuf [derivedRoom]byte
	derived := w.derive(p, derivedBuf[:0])

	// Both records in one allocation of their exact sizes (and the
	// sequence's room); each is capped, so one that outgrew its share
	// would move rather than run into the other.
	gSize := env.encodedSize(meridianv1.Part_PART_GLOBAL) + protowire.SizeTag(p.plan.num) +
		protowire.SizeBytes(len(p.parts.global)+len(derived)) + stampRoom
	rSize := 0
	if p.parts.hasResident {
		keyID := keyIDRoom
		if i := b.find(ev.IdentityId); i >= 0 {
			keyID = len(b.keys[i].key.ID)
		}
		rSize = env.encodedSize(meridianv1.Part_PART_RESIDENT) + sealedSize(keyID, p.plan.num, len(p.parts.resident)) +
			protowire.SizeTag(p.plan.num) + protowire.SizeBytes(len(p.parts.keys)) + stampRoom
	}
	// And the resident part's record id (the AD it is sealed for), after
	// them: written once, read by Seal only.
	ridSize := 0
	if p.parts.hasResident {
		ridSize = len(id) + len(":r")
	}
	// In the event's scratch buffer, after its parts, when it has room.
	var buf []byte
	if sp := p.scratch; sp != nil && cap(*sp)-len(*sp) >= gSize+rSize+ridSize {
		buf = (*sp)[len(*sp):]
		*sp = (*sp)[:len(*sp)+gSize+rSize+ridSize]
	} else {
		buf = make([]byte, 0, gSize+rSize+ridSize)
	}
	rec := buf[:0:gSize]
	rec = appendEnvelope(rec, &env, meridianv1.Part_PART_GLOBAL)
	rec = appendBody(rec, p.plan.num, p.parts.global, derived)
	b.pushRaw(rec, GlobalZone)
	if !p.parts.hasResident {
		return nil
	}

	key, err := b.key(ev.IdentityId, p)
	if err != nil {
		return err
	}
	rid := append(append(buf[gSize+rSize:gSize+rSize], id...), ":r"...)
	rec = buf[gSize : gSize : gSize+rSize]
	rec = appendEnvelope(rec, &env, meridianv1.Part_PART_RESIDENT)
	rec = appendSealedBody(rec, key, unsafe.String(unsafe.SliceData(rid), len(rid)), p.plan.num, p.parts.resident)
	rec = appendBody(rec, p.plan.num, p.parts.keys)
	b.pushRaw(rec, p.zone)
	return nil
}

// newID generates an event id into the batch's room for them (a one-event
// batch's is in its one; a larger batch makes room for all it may need).
func (b *batch) newID() string {
	if len(b.idBuf) < uuidLen {
		b.idBuf = make([]byte, uuidLen*max(cap(b.ids)-len(b.ids), 1))
	}
	dst := b.idBuf[:uuidLen:uuidLen]
	b.idBuf = b.idBuf[uuidLen:]
	newEventID(dst)
	return unsafe.String(unsafe.SliceData(dst), uuidLen)
}

// GCM's nonce and tag sizes (keystore seals with AES-256-GCM, standard
// sizes); appendSealedBody checks what Seal returned against them.
const (
	gcmNonce = 12
	gcmTag   = 16
)

var zeroNonce [gcmNonce]byte

// sealedSize is what appendSealedBody appends for a key id and a resident
// part of these lengths in body field num.
func sealedSize(keyID int, num protowire.Number, resident int) int {
	ptLen := protowire.SizeTag(num) + protowire.SizeBytes(resident)
	inner := protowire.SizeTag(sealedKeyID) + protowire.SizeBytes(keyID) +
		protowire.SizeTag(sealedNonce) + protowire.SizeBytes(gcmNonce) +
		protowire.SizeTag(sealedCiphertext) + protowire.SizeBytes(ptLen+gcmTag)
	return protowire.SizeTag(evSealed) + protowire.SizeBytes(inner)
}

// keyIDRoom is the key id length assumed when the key is not known yet (a
// UUIDv7 where this region made it; a longer one only costs a move).
const keyIDRoom = 36

// appendSealedBody appends Event.sealed holding the body field num with
// the resident part r, sealed under key for recordID. The plaintext is
// written where the ciphertext goes and sealed there in place (the GCM
// tag fits in rec's capacity, see sealedSize): no plaintext buffer of its
// own, no copy of the ciphertext, and no plaintext left behind in rec. If
// Seal ever answers otherwise (another nonce or tag size, a copy), the
// field is written from what it returned.
func appendSealedBody(rec []byte, key keystore.Key, recordID string, num protowire.Number, r []byte) []byte {
	start := len(rec)
	ptLen := protowire.SizeTag(num) + protowire.SizeBytes(len(r))
	ctLen := ptLen + gcmTag
	inner := protowire.SizeTag(sealedKeyID) + protowire.SizeBytes(len(key.ID)) +
		protowire.SizeTag(sealedNonce) + protowire.SizeBytes(gcmNonce) +
		protowire.SizeTag(sealedCiphertext) + protowire.SizeBytes(ctLen)
	rec = protowire.AppendTag(rec, evSealed, protowire.BytesType)
	rec = protowire.AppendVarint(rec, uint64(inner))
	rec = protowire.AppendTag(rec, sealedKeyID, protowire.BytesType)
	rec = protowire.AppendString(rec, key.ID)
	rec = protowire.AppendTag(rec, sealedNonce, protowire.BytesType)
	rec = protowire.AppendVarint(rec, gcmNonce)
	noncePos := len(rec)
	rec = append(rec, zeroNonce[:]...)
	rec = protowire.AppendTag(rec, sealedCiphertext, protowire.BytesType)
	rec = protowire.AppendVarint(rec, uint64(ctLen))
	ctPos := len(rec)
	if cap(rec)-ctPos < ctLen {
		// Not room for the tag (sealedRoom's bound was not asked for):
		// grow before writing plaintext into rec.
		rec = append(rec, make([]byte, ctLen)...)[:ctPos]
	}
	rec = appendBody(rec, num, r)
	sealed := key.Seal(recordID, rec[ctPos:]) // in place: the tag fits in the capacity
	ct := sealed.Ciphertext
	if len(sealed.Nonce) == gcmNonce && sealed.KeyId == key.ID && len(ct) == ctLen {
		copy(rec[noncePos:], sealed.Nonce)
		rec = rec[:ctPos+ctLen]
		if &ct[0] != &rec[ctPos] {
			copy(rec[ctPos:], ct)
		}
		return rec
	}
	// Written from Seal's answer; what was appended here (plaintext, if
	// Seal did not seal in place) is cleared first.
	clear(rec[start:cap(rec)])
	return appendSealed(rec[:start], sealed)
}

// fetchKeys looks up the data key of every identity of the request that
// has a resident part, creating the missing ones with one call of the key
// store, so that a request naming many new identities waits for one
// key-store fsync, not one per identity.
func (b *batch) fetchKeys(preps []*prepared) *Error {
	var one [1]string
	ids := one[:0]
	for _, p := range preps {
		// Repeats are allowed (the key store answers each); consecutive
		// ones, the common case, are dropped here.
		if id := p.ev.IdentityId; p.parts.hasResident && (len(ids) == 0 || ids[len(ids)-1] != id) {
			ids = append(ids, id)
		}
	}
	switch len(ids) {
	case 0:
		return nil
	case 1:
		// Most requests name one identity: no slices to allocate.
		k, created, err := b.w.cfg.Keys.CurrentOrCreate(ids[0])
		if err != nil {
			return unavailable("data key", err)
		}
		b.addKey(ids[0], k, created)
		return nil
	}
	keys, created, err := b.w.cfg.Keys.CurrentOrCreateMany(ids)
	if err != nil {
		return unavailable("data key", err)
	}
	for i, id := range ids {
		if b.find(id) < 0 {
			b.addKey(id, keys[i], created[i])
		}
	}
	return nil
}

// find returns the index of the identity in b.keys, -1 if absent.
func (b *batch) find(identity string) int {
	if b.keyIdx != nil {
		if i, ok := b.keyIdx[identity]; ok {
			return i
		}
		return -1
	}
	for i, bk := range b.keys {
		if bk.identity == identity {
			return i
		}
	}
	return -1
}

func (b *batch) addKey(identity string, k keystore.Key, created bool) {
	if created {
		b.w.stats.keysCreated.Add(1)
	}
	b.keys = append(b.keys, batchKey{identity: identity, key: k})
	if b.keyIdx != nil {
		b.keyIdx[identity] = len(b.keys) - 1
	} else if len(b.keys) > 8 {
		b.keyIdx = make(map[string]int, 2*len(b.keys))
		for i, bk := range b.keys {
			b.keyIdx[bk.identity] = i
		}
	}
}

// key returns the identity's current data key (fetched by fetchKeys) and
// emits its wrapped key record (before the resident record that needs it)
// while the key is not known to be in the log.
func (b *batch) key(identity string, p *prepared) (keystore.Key, *Error) {
	i := b.find(identity)
	if i < 0 {
		// Not fetched (fetchKeys covers every resident part): look it up.
		k, created, err := b.w.cfg.Keys.CurrentOrCreate(identity)
		if err != nil {
			return keystore.Key{}, unavailable("data key", err)
		}
		b.addKey(identity, k, created)
		i = len(b.keys) - 1
	}
	bk := &b.keys[i]
	if bk.emitted {
		return bk.key, nil
	}
	bk.emitted = true
	k := bk.key
	if k.Published {
		return k, nil
	}
	w := b.w
	u, uerr := uuid.NewV7()
	if uerr != nil {
		return keystore.Key{}, unavailable("event id", uerr)
	}
	kev := &meridianv1.Event{
		EventId:      u.String(),
		IdentityId:   identity,
		OriginRegion: w.cfg.Region,
		OriginNode:   w.cfg.Node,
		Hlc:          uint64(w.cfg.Clock.Now()),
		Zone:         p.zone,
		HomeRegion:   p.home,
		Part:         meridianv1.Part_PART_KEY,
		Body:         &meridianv1.Event_DataKey{DataKey: keystore.Wrap(w.zoneKey, identity, k.ID, k.Material)},
	}
	if err := b.push(kev, p.zone); err != nil {
		return keystore.Key{}, err
	}
	b.newKeys = append(b.newKeys, newKey{identity, k.ID})
	return k, nil
}

func (b *batch) push(ev *meridianv1.Event, zone string) *Error {
	rec, err := marshalRecord(ev)
	if err != nil {
		return err
	}
	b.pushRaw(rec, zone)
	return nil
}

func (b *batch) pushRaw(rec []byte, zone string) {
	b.recs = append(b.recs, rec)
	b.zones = append(b.zones, zone)
}

// marshalRecord leaves room for StampSequence to append in place.
func marshalRecord(ev *meridianv1.Event) ([]byte, *Error) {
	return marshalWithRoom(ev, stampRoom)
}

func marshalWithRoom(m proto.Message, room int) ([]byte, *Error) {
	n := proto.Size(m)
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(make([]byte, 0, n+room), m)
	if err != nil {
		// Validated input marshals; this would be a writer bug.
		return nil, invalidf("", "cannot encode record: %v", err)
	}
	return b, nil
}

// derivedRoom bounds what derive appends: two 32-byte hashes with their
// tags and lengths inside a traits field, or a home region, or a LoginFailed
// time and count.
const derivedRoom = 128

// derive appends to d the fields the writer computes for the GLOBAL body:
// keyed hashes of email and username, IdentityCreated.home_region when only
// the envelope named it, LoginFailed's time (if the client left it 0) and
// its count. They follow the split bytes inside the body field: a scalar
// that appears twice keeps the last value, and a message field that appears
// twice (traits) is merged, so the decoder sees one body.
func (w *Writer) derive(p *prepared, d []byte) []byte {
	switch b := p.ev.Body.(type) {
	case *meridianv1.Event_IdentityCreated:
		if b.IdentityCreated.GetHomeRegion() == "" {
			d = appendString(d, icHomeRegion, p.home)
		}
		d = w.appendTraitHashes(d, icTraits, b.IdentityCreated.GetTraits())
	case *meridianv1.Event_TraitsUpdated:
		d = w.appendTraitHashes(d, tuTraits, b.TraitsUpdated.GetTraits())
	case *meridianv1.Event_EmailVerified:
		d = appendBytesField(d, evEmailHash, EmailHash(w.cfg.HashKey, b.EmailVerified.GetEmail()))
	case *meridianv1.Event_LoginFailed:
		if b.LoginFailed.GetAtUnixMs() == 0 {
			d = appendVarintField(d, lfAtUnixMs, uint64(w.cfg.Now()))
		}
		if !b.LoginFailed.GetCounted() {
			d = appendVarintField(d, lfCounted, 1)
		}
	}
	return d
}

// appendTraitHashes appends a traits field (number num) holding the hashes of
// the request's email and username; an email or username set to "" gets an
// empty hash, which clears it.
func (w *Writer) appendTraitHashes(d []byte, num protowire.Number, in *meridianv1.Traits) []byte {
	if in == nil || (in.Email == nil && in.Username == nil) {
		return d
	}
	var buf [2 * (2 + 32)]byte
	t := buf[:0]
	if in.Email != nil {
		t = appendBytesField(t, trEmailHash, hashOrClear(w.cfg.HashKey, *in.Email, EmailHash))
	}
	if in.Username != nil {
		t = appendBytesField(t, trUsernameHash, hashOrClear(w.cfg.HashKey, *in.Username, UsernameHash))
	}
	return appendBytesField(d, num, t)
}

func hashOrClear(key []byte, v string, h func([]byte, string) []byte) []byte {
	if strings.TrimSpace(v) == "" {
		return nil
	}
	return h(key, v)
}

// String helps debugging and error messages.
func (w *Writer) String() string {
	return fmt.Sprintf("writer(%s/%s, zone %s)", w.cfg.Region, w.cfg.Node, w.zone)
}

// MaxRequestBytes is the request body limit DecodeRequest applies (for an
// HTTP server's own body limit).
func (w *Writer) MaxRequestBytes() int { return w.cfg.MaxRequestBytes }
