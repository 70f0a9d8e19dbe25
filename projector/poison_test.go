package projector

import (
	"strconv"
	"testing"

	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Messages that can never apply are quarantined with a reason, counted and
// skipped; the projector applies what follows them.
func TestPoisonMessagesAreQuarantined(t *testing.T) {
	w := newWorld(t)
	id := newID()
	w.append(created(id, "c@example.org", "C"))

	envelope := func(part meridianv1.Part) *meridianv1.Event {
		return &meridianv1.Event{
			EventId: "0190f0e0-0000-7000-8000-000000000001", IdentityId: id, OriginRegion: originRegion,
			OriginNode: "eu-central-n1", Hlc: uint64(testNow) << 16, Zone: testZone, Part: part,
		}
	}
	marshal := func(ev *meridianv1.Event) []byte {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// A body type from a newer schema: field 40 in the oneof's range.
	future := protowire.AppendTag(marshal(envelope(meridianv1.Part_PART_GLOBAL)), 40, protowire.BytesType)
	future = protowire.AppendBytes(future, []byte{0x08, 0x01})

	// A key record wrapped by a zone key this region does not have.
	var stranger [32]byte
	foreign := envelope(meridianv1.Part_PART_KEY)
	foreign.Body = &meridianv1.Event_DataKey{DataKey: keystore.Wrap(keystore.ZoneKey{ID: "eu-9", Key: stranger}, id, "k1", stranger)}
	// A key record whose bytes were tampered with.
	tampered := envelope(meridianv1.Part_PART_KEY)
	dk := keystore.Wrap(w.zones["eu"], id, "k2", stranger)
	dk.WrappedKey[0] ^= 1
	tampered.Body = &meridianv1.Event_DataKey{DataKey: dk}
	// A resident part of another zone (the inbox filters should never let
	// one in; if one comes, it is neither decrypted nor stored).
	usPart := envelope(meridianv1.Part_PART_RESIDENT)
	usPart.Zone = "us"
	usPart.Sealed = &meridianv1.Sealed{KeyId: "k", Nonce: make([]byte, 12), Ciphertext: []byte("xxxxxxxxxxxxxxxxxxxx")}
	usPart.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{}}
	// A resident part sealed under a key nobody sent.
	noKey := envelope(meridianv1.Part_PART_RESIDENT)
	noKey.Sealed = &meridianv1.Sealed{KeyId: "missing", Nonce: make([]byte, 12), Ciphertext: []byte("xxxxxxxxxxxxxxxxxxxx")}
	noKey.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{}}
	// A GLOBAL part carrying a RESIDENT field (would leak personal data).
	leaky := envelope(meridianv1.Part_PART_GLOBAL)
	leaky.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Email: ptr("leak@example.org")}}}

	cases := []struct {
		subject string
		data    []byte
		code    string
		field   string
	}{
		{"meridian.eu-central.global.traits_updated", []byte{0xff, 0xff, 0xff}, CodeCorrupt, "data"},
		{"meridian.eu-central.global.unknown", future, CodeUnknownType, "body"},
		{"poison.not.a.meridian.subject", marshal(envelope(meridianv1.Part_PART_GLOBAL)), CodeBadSubject, "subject"},
		{"meridian.eu-central.eu.key." + id, marshal(foreign), CodeKeyUnwrap, "data_key"},
		{"meridian.eu-central.eu.key." + id, marshal(tampered), CodeKeyUnwrap, "data_key"},
		{"meridian.eu-central.us.traits_updated", marshal(usPart), CodeWrongZone, "zone"},
		{"meridian.eu-central.eu.traits_updated", marshal(noKey), CodeKeyMissing, "sealed.key_id"},
		{"meridian.eu-central.global.traits_updated", marshal(leaky), CodeInvalid, "traits_updated.traits.email"},
		{"meridian.eu-central.global.role_granted", marshal(leaky), CodeInvalid, "subject"},
	}
	var seqs []uint64
	for i, c := range cases {
		seqs = append(seqs, w.publishRaw(c.subject, c.data, map[string]string{"Nats-Msg-Id": "poison-" + strconv.Itoa(i)}))
	}
	w.append(grant(id, "after-poison"))

	p := w.start()
	w.sync(p)
	got, err := p.Get(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetRoles()) != 1 || got.GetRoles()[0] != "after-poison" {
		t.Fatalf("event after the poison not applied: roles %v", got.GetRoles())
	}
	if got.GetTraits().GetEmail() != "c@example.org" {
		t.Fatalf("email = %q: a poison message changed state", got.GetTraits().GetEmail())
	}
	recs, err := p.Quarantined()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(cases) {
		t.Fatalf("quarantined %d records, want %d: %+v", len(recs), len(cases), recs)
	}
	for i, c := range cases {
		r := recs[i]
		if r.StreamSeq != seqs[i] || r.Subject != c.subject || r.Code != c.code || r.Field != c.field || r.Reason == "" || r.MsgID != "poison-"+strconv.Itoa(i) || r.AtUnixMs != testNow {
			t.Errorf("case %d: record %+v, want seq %d code %s field %s", i, r, seqs[i], c.code, c.field)
		}
	}
	if st := p.Status(); st.Quarantined != uint64(len(cases)) {
		t.Errorf("status quarantined = %d", st.Quarantined)
	}
	if m := p.Metrics(); m.Quarantined != uint64(len(cases)) {
		t.Errorf("metrics quarantined = %d", m.Quarantined)
	}
	if keys, _ := w.keys.Keys(id); len(keys) != 1 {
		t.Errorf("keys held for %s: %d, want only the writer's (no key from a poison record)", id, len(keys))
	}

	// A restart neither redelivers nor re-counts them.
	p.Close()
	p2 := w.start()
	w.sync(p2)
	if st := p2.Status(); st.Quarantined != uint64(len(cases)) {
		t.Errorf("after restart quarantined = %d", st.Quarantined)
	}
	if m := p2.Metrics(); m.Messages != 0 {
		t.Errorf("after restart %d messages re-applied", m.Messages)
	}
}
