package projector

import (
	"crypto/rand"
	"testing"
	"testing/quick"

	"github.com/meridian-id/meridian/conflict"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// memCurrent is an in-memory current for the pure apply step.
type memCurrent struct {
	globals, residents map[string]*meridianv1.IdentityState
	keys               map[string]keystore.Key
}

func (c *memCurrent) global(id string) (*meridianv1.IdentityState, error) { return c.globals[id], nil }
func (c *memCurrent) resident(id string) (*meridianv1.IdentityState, error) {
	return c.residents[id], nil
}
func (c *memCurrent) key(id, keyID string) (keystore.Key, error) {
	if k, ok := c.keys[id+"/"+keyID]; ok {
		return k, nil
	}
	return keystore.Key{}, keystore.ErrNotFound
}

func TestApplyStep(t *testing.T) {
	m, err := conflict.NewMerger()
	if err != nil {
		t.Fatal(err)
	}
	var zk keystore.ZoneKey
	zk.ID = "eu-1"
	rand.Read(zk.Key[:])
	var dataKey [32]byte
	rand.Read(dataKey[:])
	s := &stepper{merger: m, zone: "eu", unwrap: keystore.NewUnwrapper(map[string]keystore.ZoneKey{"eu": zk})}
	id := "0190f0e0-0000-7000-8000-0000000000aa"
	cur := &memCurrent{globals: map[string]*meridianv1.IdentityState{}, residents: map[string]*meridianv1.IdentityState{},
		keys: map[string]keystore.Key{id + "/k1": {ID: "k1", Material: dataKey}}}
	env := func(part meridianv1.Part, eventID string) *meridianv1.Event {
		return &meridianv1.Event{EventId: eventID, IdentityId: id, OriginRegion: "eu-central", OriginNode: "n1",
			Hlc: uint64(testNow) << 16, Zone: "eu", Part: part, Sequence: 7}
	}
	msg := func(subject string, ev *meridianv1.Event) *inMsg {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return &inMsg{Seq: 1, Subject: subject, Data: b}
	}

	hb := env(meridianv1.Part_PART_GLOBAL, "0190f0e0-0000-7000-8000-000000000001")
	hb.IdentityId = ""
	hb.Body = &meridianv1.Event_Heartbeat{Heartbeat: &meridianv1.Heartbeat{SentAtUnixMs: 42}}
	out, err := s.apply(cur, msg("meridian.eu-central.global.heartbeat", hb))
	if err != nil || out.kind != kindHeartbeat || out.hb.SentAtUnixMs != 42 || out.originSeq != 7 || out.node != "n1" {
		t.Fatalf("heartbeat: %+v %v", out, err)
	}

	key := env(meridianv1.Part_PART_KEY, "0190f0e0-0000-7000-8000-000000000002")
	key.Body = &meridianv1.Event_DataKey{DataKey: keystore.Wrap(zk, id, "k2", dataKey)}
	out, err = s.apply(cur, msg("meridian.eu-central.eu.key."+id, key))
	if err != nil || out.kind != kindKey || out.putKey.keyID != "k2" || out.putKey.material != dataKey {
		t.Fatalf("key record: %+v %v", out, err)
	}
	// The same record under another identity's subject does not unwrap.
	out, _ = s.apply(cur, msg("meridian.eu-central.eu.key.0190f0e0-0000-7000-8000-0000000000bb", func() *meridianv1.Event {
		k := proto.CloneOf(key)
		k.IdentityId = ""
		return k
	}()))
	if out.kind != kindQuarantined || out.code != CodeKeyUnwrap {
		t.Fatalf("replayed key: %+v", out)
	}

	plain, _ := proto.Marshal(&meridianv1.Event{Body: &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: proto.String("N")}}}})
	res := env(meridianv1.Part_PART_RESIDENT, "0190f0e0-0000-7000-8000-000000000003")
	res.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{}}
	res.Sealed = keystore.Seal(dataKey, "k1", res.EventId+":r", plain)
	out, err = s.apply(cur, msg("meridian.eu-central.eu.traits_updated", res))
	if err != nil || out.kind != kindIdentity || out.resident == nil || out.global != nil {
		t.Fatalf("resident part: %+v %v", out, err)
	}
	if v := m.View(out.resident); v.GetTraits().GetName() != "N" {
		t.Fatalf("resident view %v", v)
	}

	er := env(meridianv1.Part_PART_GLOBAL, "0190f0e0-0000-7000-8000-000000000004")
	er.Body = &meridianv1.Event_IdentityErased{IdentityErased: &meridianv1.IdentityErased{Reason: "x"}}
	out, err = s.apply(cur, msg("meridian.eu-central.global.identity_erased", er))
	if err != nil || !out.erased || !m.Erased(out.global) {
		t.Fatalf("erasure: %+v %v", out, err)
	}
	cur.globals[id] = out.global
	for _, tc := range []struct {
		subject string
		ev      *meridianv1.Event
	}{{"meridian.eu-central.eu.traits_updated", res}, {"meridian.eu-central.eu.key." + id, key}} {
		out, err = s.apply(cur, msg(tc.subject, tc.ev))
		if err != nil || out.kind != kindIgnored || out.putKey != nil || out.resident != nil {
			t.Fatalf("%s after erasure: %+v %v", tc.subject, out, err)
		}
	}
}

func TestParseSource(t *testing.T) {
	for _, c := range []struct {
		in     string
		stream string
		seq    uint64
	}{
		{"origin-eu-west:a1b2c3 17 meridian.eu-west.global.> > meridian.eu-west.global.heartbeat", "origin-eu-west", 17},
		{"origin-us-east 5 > >", "origin-us-east", 5},
		{"", "", 0},
		{"origin-x notanumber", "", 0},
		{"lonely", "", 0},
	} {
		if s, q := parseSource(c.in); s != c.stream || q != c.seq {
			t.Errorf("parseSource(%q) = %q %d, want %q %d", c.in, s, q, c.stream, c.seq)
		}
	}
}

func TestWireIdentityIDMatchesDecode(t *testing.T) {
	f := func(id, eventID string, seq uint64, garbage []byte) bool {
		ev := &meridianv1.Event{EventId: eventID, IdentityId: id, Sequence: seq,
			Sealed: &meridianv1.Sealed{Ciphertext: garbage}}
		b, err := proto.Marshal(ev)
		if err != nil {
			return true // invalid UTF-8: not an event the writer makes
		}
		return string(wireIdentityID(b)) == id
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
	if len(wireIdentityID([]byte{0xff, 0xff})) != 0 {
		t.Fatal("garbage yields an id")
	}
}

func TestAbsentFilterNeverHidesAnAddedID(t *testing.T) {
	f := newAbsentFilter()
	added := func(ids []string) bool {
		for _, id := range ids {
			f.add(id)
		}
		for _, id := range ids {
			if f.absent(id) {
				return false
			}
		}
		return true
	}
	if err := quick.Check(added, nil); err != nil {
		t.Fatal(err)
	}
	if !f.absent("never-added-"+newID()) && !f.absent("another-"+newID()) {
		t.Fatal("filter says maybe for everything")
	}
	var nilFilter *absentFilter
	if nilFilter.absent("x") {
		t.Fatal("a nil filter must say maybe")
	}
}
