package projector

import (
	"errors"
	"fmt"

	"github.com/meridian-id/meridian/conflict"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The apply step is pure: it reads the current states and data keys
// through the current interface (the batch cache, which loads from the
// store) and returns what the message changes as an outcome. It writes
// nothing; the batch turns outcomes into one Pebble batch, puts arriving
// keys into the key store and destroys erased identities' keys.

// Quarantine codes: why a message can never be applied.
const (
	CodeBadSubject   = "bad_subject"   // not meridian.<origin>.<zone>.<type>
	CodeCorrupt      = "corrupt"       // bytes do not decode
	CodeUnknownType  = "unknown_type"  // a body type this build does not know
	CodeInvalid      = "invalid_event" // decodes but breaks a rule (names the field)
	CodeWrongZone    = "wrong_zone"    // RESIDENT data or a key of another zone
	CodeKeyUnwrap    = "key_unwrap"    // a key record the zone keys cannot open
	CodeKeyMissing   = "key_missing"   // a RESIDENT part sealed under a key not held here
	CodeUnsealFailed = "unseal_failed" // a RESIDENT part that does not authenticate
)

// internerOf returns the batch's string interner (none for other currents).
func internerOf(cur current) *interner {
	if b, ok := cur.(*batch); ok {
		return &b.in
	}
	return nil
}

// current is what the apply step reads.
type current interface {
	// global is the identity's GLOBAL state (nil: none yet).
	global(id string) (*meridianv1.IdentityState, error)
	// resident is the identity's RESIDENT state, unsealed (nil: none).
	resident(id string) (*meridianv1.IdentityState, error)
	// key is a data key (keystore.ErrNotFound when not held).
	key(id, keyID string) (keystore.Key, error)
}

type outcomeKind uint8

const (
	kindIdentity  outcomeKind = iota + 1 // a GLOBAL or RESIDENT part applied
	kindKey                              // a data key to store
	kindHeartbeat                        // an origin heartbeat
	kindIgnored                          // valid, but its identity is erased
	kindQuarantined
)

// outcome is what one message changes.
type outcome struct {
	kind outcomeKind
	// Where the message came from (for positions); origin is empty when
	// the subject does not parse, node when the bytes do not decode.
	origin, node, zone string
	originSeq          uint64
	hlc                uint64 // the event's HLC (observed.go)

	identity string
	global   *meridianv1.IdentityState // new GLOBAL state, nil: unchanged
	resident *meridianv1.IdentityState // new RESIDENT state, nil: unchanged
	changed  bool                      // the new state differs from the old
	erased   bool                      // the identity became erased now
	prune    bool                      // a GLOBAL remove may kill resident payloads
	putKey   *keyPut
	hb       *Heartbeat

	code, field, reason string // quarantine
}

type keyPut struct {
	identity, keyID string
	material        [keystore.KeySize]byte
}

// stepper applies messages for one region.
type stepper struct {
	merger *conflict.Merger
	zone   string
	unwrap *keystore.Unwrapper // the zone keys
}

var (
	bodyOneof     = (&meridianv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	dataKeyNumber = bodyOneof.Fields().ByName("data_key").Number()
	unmarshalOpts = proto.UnmarshalOptions{}
)

// apply decodes one inbox message and returns its effect. The error is
// transient (the key store failed) and the message must be retried; every
// permanent failure is an outcome of kindQuarantined.
func (s *stepper) apply(cur current, m *inMsg) (outcome, error) {
	var out outcome
	sp, err := m.subject()
	if err != nil {
		return out.quarantine(CodeBadSubject, "subject", err.Error()), nil
	}
	out.origin, out.zone, out.originSeq = sp.Origin, sp.Zone, m.OriginSeq

	// Recycled: nothing of an event outlives its apply step but strings
	// and bytes copied out of it (the states keep encoded values).
	d := getDecoded()
	defer d.release()
	in := internerOf(cur)
	if err := d.decode(m.Data, in); err != nil {
		return out.quarantine(CodeCorrupt, "data", fmt.Sprintf("not an Event: %v", err)), nil
	}
	ev := &d.ev
	out.node, out.hlc = ev.GetOriginNode(), ev.GetHlc()
	switch {
	case out.originSeq == 0:
		out.originSeq = ev.GetSequence()
	case ev.GetSequence() != 0 && ev.GetSequence() != out.originSeq:
		return out.quarantine(CodeInvalid, "sequence", fmt.Sprintf("record says %d, header %s says %d", ev.GetSequence(), SeqHeader, out.originSeq)), nil
	}
	which := ev.ProtoReflect().WhichOneof(bodyOneof)
	if which == nil {
		if u := ev.ProtoReflect().GetUnknown(); len(u) > 0 {
			num, _, _ := protowire.ConsumeTag(u)
			return out.quarantine(CodeUnknownType, "body", fmt.Sprintf("unknown field number %d: an event type this build does not know (is the writer newer?)", num)), nil
		}
		return out.quarantine(CodeInvalid, "body", "required: exactly one event type must be set"), nil
	}
	typ := string(which.Name())
	if which.Number() == dataKeyNumber {
		typ = region.KeyType
	}
	switch {
	case typ != sp.Type:
		return out.quarantine(CodeInvalid, "subject", fmt.Sprintf("type token %q but the body is %s", sp.Type, which.Name())), nil
	case ev.GetOriginRegion() != sp.Origin:
		return out.quarantine(CodeInvalid, "origin_region", fmt.Sprintf("%q, but the subject names origin %q", ev.GetOriginRegion(), sp.Origin)), nil
	}

	switch b := ev.GetBody().(type) {
	case *meridianv1.Event_Heartbeat:
		if sp.Zone != region.GlobalZone || ev.GetPart() != meridianv1.Part_PART_GLOBAL {
			return out.quarantine(CodeInvalid, "part", "a heartbeat is a GLOBAL record on a global subject"), nil
		}
		out.kind = kindHeartbeat
		out.hb = &Heartbeat{Node: out.node, SentAtUnixMs: b.Heartbeat.GetSentAtUnixMs(), OriginSeq: out.originSeq}
		return out, nil
	case *meridianv1.Event_DataKey:
		return s.applyKey(cur, out, sp, ev, b.DataKey)
	}

	out.identity = ev.GetIdentityId()
	if out.identity == "" {
		return out.quarantine(CodeInvalid, "identity_id", "required"), nil
	}
	switch ev.GetPart() {
	case meridianv1.Part_PART_GLOBAL:
		if sp.Zone != region.GlobalZone {
			return out.quarantine(CodeInvalid, "part", fmt.Sprintf("a GLOBAL part on zone %q; GLOBAL parts travel on %q", sp.Zone, region.GlobalZone)), nil
		}
		return s.applyGlobal(cur, out, ev)
	case meridianv1.Part_PART_RESIDENT:
		if err := s.checkZone(sp, ev); err != nil {
			return out.quarantine(CodeWrongZone, "zone", err.Error()), nil
		}
		return s.applyResident(cur, in, out, ev, which)
	}
	return out.quarantine(CodeInvalid, "part", fmt.Sprintf("%v: an identity event in a stream is split into a GLOBAL and a RESIDENT part", ev.GetPart())), nil
}

// checkZone refuses resident records of a zone this region is not in: they
// are never decrypted, stored or applied here.
func (s *stepper) checkZone(sp region.SubjectParts, ev *meridianv1.Event) error {
	switch {
	case sp.Zone == region.GlobalZone:
		return fmt.Errorf("%v record on a %q subject", ev.GetPart(), region.GlobalZone)
	case sp.Zone != ev.GetZone():
		return fmt.Errorf("record of zone %q on a subject of zone %q", ev.GetZone(), sp.Zone)
	case sp.Zone != s.zone:
		return fmt.Errorf("record of zone %q in a region of zone %q", sp.Zone, s.zone)
	}
	return nil
}

func (s *stepper) applyGlobal(cur current, out outcome, ev *meridianv1.Event) (outcome, error) {
	g, err := cur.global(out.identity)
	if err != nil {
		return out, err
	}
	wasErased := s.merger.Erased(g)
	// In place: the batch owns the state (see batch).
	ng, eff, err := s.merger.ApplyInPlace(g, ev)
	if err != nil {
		return out.quarantineMerge(err), nil
	}
	out.global, out.changed = ng, eff.Changed
	switch {
	case wasErased:
		out.kind = kindIgnored // the tombstone keeps (at most) an earlier erase stamp
	case eff.Erased:
		out.kind, out.erased = kindIdentity, true
	default:
		out.kind = kindIdentity
		// A GLOBAL remove may kill payloads the resident state holds.
		out.prune = eff.Removed
	}
	return out, nil
}

func (s *stepper) applyResident(cur current, in *interner, out outcome, ev *meridianv1.Event, which protoreflect.FieldDescriptor) (outcome, error) {
	g, err := cur.global(out.identity)
	if err != nil {
		return out, err
	}
	if s.merger.Erased(g) {
		out.kind = kindIgnored
		return out, nil
	}
	sealed := ev.GetSealed()
	if sealed == nil || sealed.GetKeyId() == "" {
		return out.quarantine(CodeInvalid, "sealed", "required on a RESIDENT part (with key_id)"), nil
	}
	key, err := cur.key(out.identity, sealed.GetKeyId())
	switch {
	case errors.Is(err, keystore.ErrNotFound), errors.Is(err, keystore.ErrInvalid):
		return out.quarantine(CodeKeyMissing, "sealed.key_id", fmt.Sprintf("data key %s of identity %s is not held here: %v", sealed.GetKeyId(), out.identity, err)), nil
	case err != nil:
		return out, err
	}
	var buf *[]byte // the batch's plaintext buffer, if any
	if b, ok := cur.(*batch); ok {
		buf = &b.plain
	}
	var pt []byte
	if buf != nil {
		pt, err = key.UnsealAppend((*buf)[:0], sealed, ev.GetEventId()+":r")
	} else {
		pt, err = key.Unseal(sealed, ev.GetEventId()+":r")
	}
	if err != nil {
		return out.quarantine(CodeUnsealFailed, "sealed", err.Error()), nil
	}
	defer func() {
		clear(pt)
		if buf != nil {
			*buf = pt[:0]
		}
	}()
	pd := getDecoded()
	defer pd.release()
	err = pd.decode(pt, in)
	plain := &pd.ev
	if err != nil {
		return out.quarantine(CodeCorrupt, "sealed", fmt.Sprintf("plaintext is not an Event: %v", err)), nil
	}
	if got := plain.ProtoReflect().WhichOneof(bodyOneof); got == nil || got.Number() != which.Number() {
		return out.quarantine(CodeInvalid, "sealed", fmt.Sprintf("plaintext body is not %s", which.Name())), nil
	}
	// The sealed plaintext holds only the body; the envelope (ids, stamp,
	// sequence) is the authenticated outer record's.
	plain.EventId, plain.IdentityId = ev.GetEventId(), ev.GetIdentityId()
	plain.OriginRegion, plain.OriginNode = ev.GetOriginRegion(), ev.GetOriginNode()
	plain.Sequence, plain.Hlc, plain.Zone = out.originSeq, ev.GetHlc(), ev.GetZone()
	plain.HomeRegion, plain.Part, plain.Observed = ev.GetHomeRegion(), meridianv1.Part_PART_RESIDENT, ev.GetObserved()
	r, err := cur.resident(out.identity)
	if err != nil {
		return out, err
	}
	nr, eff, err := s.merger.ApplyInPlace(r, plain)
	if err != nil {
		return out.quarantineMerge(err), nil
	}
	out.kind, out.resident, out.changed = kindIdentity, nr, eff.Changed
	return out, nil
}

func (s *stepper) applyKey(cur current, out outcome, sp region.SubjectParts, ev *meridianv1.Event, dk *meridianv1.DataKey) (outcome, error) {
	out.identity = sp.IdentityID
	switch {
	case ev.GetPart() != meridianv1.Part_PART_KEY:
		return out.quarantine(CodeInvalid, "part", fmt.Sprintf("%v: a data key record is PART_KEY", ev.GetPart())), nil
	case ev.GetIdentityId() != "" && ev.GetIdentityId() != sp.IdentityID:
		return out.quarantine(CodeInvalid, "identity_id", fmt.Sprintf("%q, but the subject names identity %q", ev.GetIdentityId(), sp.IdentityID)), nil
	case dk.GetKeyId() == "":
		return out.quarantine(CodeInvalid, "data_key.key_id", "required"), nil
	}
	if err := s.checkZone(sp, ev); err != nil {
		return out.quarantine(CodeWrongZone, "zone", err.Error()), nil
	}
	g, err := cur.global(out.identity)
	if err != nil {
		return out, err
	}
	if s.merger.Erased(g) {
		// Never bring an erased identity's key back.
		out.kind = kindIgnored
		return out, nil
	}
	material, err := s.unwrap.Unwrap(out.identity, dk)
	if err != nil {
		return out.quarantine(CodeKeyUnwrap, "data_key", err.Error()), nil
	}
	out.kind = kindKey
	out.putKey = &keyPut{identity: out.identity, keyID: dk.GetKeyId(), material: material}
	return out, nil
}

func (o outcome) quarantine(code, field, reason string) outcome {
	o.kind, o.code, o.field, o.reason = kindQuarantined, code, field, reason
	o.global, o.resident, o.changed, o.erased, o.prune, o.putKey, o.hb = nil, nil, false, false, false, nil, nil
	return o
}

func (o outcome) quarantineMerge(err error) outcome {
	var ee *conflict.EventError
	if errors.As(err, &ee) {
		code := CodeInvalid
		if ee.Field == "body" {
			code = CodeUnknownType
		}
		return o.quarantine(code, ee.Field, ee.Rule)
	}
	return o.quarantine(CodeInvalid, "body", err.Error())
}
