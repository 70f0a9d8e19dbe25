package projector

import (
	"math/rand"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// randomEvent makes envelopes with every field unset, empty or set, and
// bodies of several types.
func randomEvent(r *rand.Rand) *meridianv1.Event {
	pick := func(xs ...string) string { return xs[r.Intn(len(xs))] }
	ev := &meridianv1.Event{
		EventId: pick("", "0190f0e0-0000-7000-8000-000000000001"), IdentityId: pick("", "id-1", "ïd"),
		OriginRegion: pick("", "eu-west", "eu-central"), OriginNode: pick("", "n1"), Zone: pick("", "eu"),
		HomeRegion: pick("", "eu-west"), Sequence: uint64(r.Intn(3)) << uint(r.Intn(40)), Hlc: uint64(r.Int63()) >> uint(r.Intn(64)),
		Part: meridianv1.Part([]int32{0, 1, 2, 3, 7, -1}[r.Intn(6)]),
	}
	if r.Intn(2) == 0 {
		ev.Sealed = &meridianv1.Sealed{KeyId: pick("", "k1"), Nonce: []byte(pick("", "123456789012")), Ciphertext: []byte(pick("", "ciphertext"))}
	}
	if r.Intn(3) == 0 {
		ev.Observed = &meridianv1.CausalContext{}
		for range r.Intn(3) {
			ev.Observed.Hlc = map[string]uint64{pick("", "n1", "n2"): uint64(r.Int63()) >> uint(r.Intn(64))}
		}
	}
	traits := func() *meridianv1.Traits {
		if r.Intn(5) == 0 {
			return nil
		}
		opt := func(xs ...string) *string {
			if r.Intn(2) == 0 {
				return nil
			}
			return ptr(pick(xs...))
		}
		bytes := func() []byte {
			switch r.Intn(3) {
			case 0:
				return nil
			case 1:
				return []byte{}
			}
			return []byte("0123456789abcdef0123456789abcdef")
		}
		t := &meridianv1.Traits{Email: opt("", "a@example.org"), Username: opt("", "u"), Name: opt("", "N", "Zoë"), Phone: opt("+49"),
			Locale: opt("de-DE"), EmailHash: bytes(), UsernameHash: bytes()}
		switch r.Intn(6) {
		case 0:
			t.Metadata = map[string]string{"k": "v"}
		case 1:
			t.Address = &meridianv1.Address{}
		}
		return t
	}
	switch r.Intn(8) {
	case 0:
		ev.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: ptr(pick("", "N")), Metadata: map[string]string{"k": "v"}}}}
	case 6:
		ev.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: traits()}}
	case 7:
		ev.Body = &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{HomeRegion: pick("", "eu-west"), Traits: traits()}}
	case 1:
		ev.Body = &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: pick("", "admin")}}
	case 2:
		ev.Body = &meridianv1.Event_Heartbeat{Heartbeat: &meridianv1.Heartbeat{}}
	case 3:
		ev.Body = &meridianv1.Event_SessionIssued{SessionIssued: &meridianv1.SessionIssued{Session: &meridianv1.Session{SessionId: "s", Device: "d"}}}
	case 4:
		ev.Body = &meridianv1.Event_DataKey{DataKey: &meridianv1.DataKey{KeyId: "k", WrappedKey: []byte{1, 2}}}
	}
	return ev
}

// mutate breaks an encoding the ways a corrupt or hostile record might:
// flipped bytes, a cut, a field twice, an unknown field, a second body.
func mutate(r *rand.Rand, b []byte) []byte {
	b = append([]byte(nil), b...)
	pick := func(xs ...string) string { return xs[r.Intn(len(xs))] }
	switch r.Intn(7) {
	case 0:
		if len(b) > 0 {
			b[r.Intn(len(b))] ^= byte(1 << r.Intn(8))
		}
	case 1:
		b = b[:r.Intn(len(b)+1)]
	case 2: // a field twice
		b = append(b, b[:r.Intn(len(b)+1)]...)
	case 3: // an unknown field
		b = protowire.AppendVarint(protowire.AppendTag(b, protowire.Number(11+r.Intn(9)), protowire.VarintType), 5)
	case 4: // a second body, maybe of another type
		b = protowire.AppendBytes(protowire.AppendTag(b, protowire.Number(20+r.Intn(14)), protowire.BytesType), nil)
	case 5: // a string that is not UTF-8
		b = protowire.AppendBytes(protowire.AppendTag(b, fOriginNode, protowire.BytesType), []byte{0xff})
	case 6: // a body with a field twice, an unknown field or a string that is not UTF-8
		body := protowire.AppendBytes(protowire.AppendTag(nil, fCreatedHomeRegion, protowire.BytesType), []byte("eu"))
		traits := protowire.AppendBytes(protowire.AppendTag(nil, protowire.Number(1+r.Intn(9)), protowire.BytesType), []byte(pick("x", "\xff")))
		if r.Intn(2) == 0 {
			traits = append(traits, traits...)
		}
		body = protowire.AppendBytes(protowire.AppendTag(body, fCreatedTraits, protowire.BytesType), traits)
		if r.Intn(3) == 0 {
			body = append(body, body...)
		}
		b = protowire.AppendBytes(protowire.AppendTag(b, fIdentityCreated, protowire.BytesType), body)
	}
	return b
}

// decode makes of every record what proto.Unmarshal makes of it: the same
// event, or an error where proto has one (the same error).
func TestDecodeMatchesProto(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	var in interner
	fast, fastBodies := 0, 0
	for i := range 20000 {
		b, err := proto.Marshal(randomEvent(r))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			b = mutate(r, b)
		}
		var want meridianv1.Event
		wantErr := proto.Unmarshal(b, &want)
		d := getDecoded()
		err = d.decode(b, &in)
		switch {
		case (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error():
			t.Fatalf("record %d (%x): error %v, proto's %v", i, b, err, wantErr)
		case err == nil && !proto.Equal(&d.ev, &want):
			t.Fatalf("record %d (%x): decoded\n%v\nproto\n%v", i, b, &d.ev, &want)
		}
		if d.fast(b, &in) {
			fast++
			switch want.Body.(type) {
			case *meridianv1.Event_IdentityCreated, *meridianv1.Event_TraitsUpdated:
				if fastBody(b[len(b)-len(bodyField(b)):], &meridianv1.Event{}) {
					fastBodies++
				}
			}
		}
		d.release()
	}
	if fast < 10000 || fastBodies < 1000 {
		t.Fatalf("the fast path read only %d of 20000 records, %d bodies of new identities and traits", fast, fastBodies)
	}
}

// bodyField returns the last field of b (a marshalled event's body comes
// last).
func bodyField(b []byte) []byte {
	last := b
	for len(b) > 0 {
		_, _, n := protowire.ConsumeField(b)
		if n < 0 {
			return nil
		}
		last, b = b[:n], b[n:]
	}
	return last
}
