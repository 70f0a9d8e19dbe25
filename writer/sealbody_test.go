package writer

import (
	"bytes"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// appendSealedBody seals in place where the record has room and still
// writes a correct Event.sealed where it has not: the field decodes, names
// the key, opens to exactly the body field appendBody makes, and no
// plaintext is left anywhere in the record's memory.
func TestAppendSealedBody(t *testing.T) {
	var material [keystore.KeySize]byte
	rand.Read(material[:])
	key := keystore.Key{ID: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", Material: material}.WithCipher()
	prefix := []byte("envelope-bytes")
	for _, c := range []struct {
		name string
		num  protowire.Number
		r    string
		room func(need int) int // capacity given after the prefix
	}{
		{"room, small", 2, "Zelda Secret-Name", func(need int) int { return need }},
		{"room, long (two-byte lengths)", 2, strings.Repeat("Zelda Secret-Name ", 20), func(need int) int { return need }},
		{"room, two-byte tag", 31, "Zelda Secret-Name", func(need int) int { return need }},
		{"no room for the tag", 2, "Zelda Secret-Name", func(need int) int { return need - 20 }},
		{"no room at all", 2, strings.Repeat("Zelda Secret-Name ", 20), func(int) int { return 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			need := sealedSize(len(key.ID), c.num, len(c.r))
			rec := append(make([]byte, 0, len(prefix)+c.room(need)), prefix...)
			out := appendSealedBody(rec, key, "rec-1:r", c.num, []byte(c.r))
			if !bytes.Equal(out[:len(prefix)], prefix) {
				t.Fatalf("prefix changed: %q", out[:len(prefix)])
			}
			if bytes.Contains(out[:cap(out)], []byte("Zelda")) {
				t.Fatal("plaintext left in the record's memory")
			}
			// The rest is exactly one Event.sealed field.
			ev := &meridianv1.Event{}
			if err := proto.Unmarshal(out[len(prefix):], ev); err != nil {
				t.Fatal(err)
			}
			s := ev.GetSealed()
			if s.GetKeyId() != key.ID || len(s.GetNonce()) != gcmNonce {
				t.Fatalf("sealed %v", s)
			}
			if n := protowire.SizeTag(evSealed) + protowire.SizeBytes(proto.Size(s)); n != len(out)-len(prefix) {
				t.Fatalf("%d bytes after the prefix, the sealed field is %d", len(out)-len(prefix), n)
			}
			pt, err := key.Unseal(s, "rec-1:r")
			if err != nil {
				t.Fatal(err)
			}
			if want := appendBody(nil, c.num, []byte(c.r)); !bytes.Equal(pt, want) {
				t.Fatalf("opens to %x, want %x", pt, want)
			}
			if _, err := key.Unseal(s, "rec-2:r"); err == nil {
				t.Fatal("opens under another record id")
			}
		})
	}
}

// batch.add sizes each record exactly: what it wrote plus the room
// StampSequence appends in place, so no record is moved or over-allocated.
func TestRecordsSizedExactly(t *testing.T) {
	dir := t.TempDir()
	l, err := eventlog.Open(eventlog.Options{Dir: filepath.Join(dir, "log"), Stamp: StampSequence})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ks, err := keystore.Open(keystore.Options{Dir: filepath.Join(dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	var zk [32]byte
	rand.Read(zk[:])
	w, err := New(Config{Region: "eu-west", Node: "n1", Topology: benchTopology{"eu-west": "eu"}, Log: l, Keys: ks,
		ZoneKeys: map[string]keystore.ZoneKey{"eu": {ID: "eu-1", Key: zk}}, HashKey: []byte("0123456789abcdef"),
		Observed: func() map[string]uint64 { return map[string]uint64{"n1": 1 << 50, "n2": 7} }})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	long := strings.Repeat("x", 300)
	for _, ev := range []*meridianv1.Event{
		{IdentityId: id, HomeRegion: "eu-west", Body: &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{
			Traits: &meridianv1.Traits{Email: proto.String("A@example.org"), Username: proto.String("a"), Name: proto.String(long)}}}},
		{IdentityId: id, HomeRegion: "eu-west", EventId: uuid.Must(uuid.NewV7()).String(), Body: &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{
			Traits: &meridianv1.Traits{Name: proto.String("N"), Locale: proto.String(long)}}}},
		{IdentityId: id, HomeRegion: "eu-west", Body: &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: "member"}}},
		{IdentityId: id, HomeRegion: "eu-west", Body: &meridianv1.Event_RoleRevoked{RoleRevoked: &meridianv1.RoleRevoked{Role: "member"}}},
		{IdentityId: id, HomeRegion: "eu-west", Body: &meridianv1.Event_LoginFailed{LoginFailed: &meridianv1.LoginFailed{}}},
		{IdentityId: id, HomeRegion: "eu-west", Body: &meridianv1.Event_EmailVerified{EmailVerified: &meridianv1.EmailVerified{Email: "A@example.org"}}},
	} {
		p := new(prepared)
		if perr := w.prepare(p, ev); perr != nil {
			t.Fatal(perr)
		}
		b := w.newBatch([]*prepared{p}, nil)
		if err := b.fetchKeys([]*prepared{p}); err != nil {
			t.Fatal(err)
		}
		if err := b.add(p); err != nil {
			t.Fatal(err)
		}
		for i, rec := range b.recs {
			if room := cap(rec) - len(rec); room != stampRoom {
				t.Errorf("%T record %d: %d bytes of room after %d, want %d", ev.Body, i, room, len(rec), stampRoom)
			}
			if err := proto.Unmarshal(rec, &meridianv1.Event{}); err != nil {
				t.Errorf("%T record %d: %v", ev.Body, i, err)
			}
		}
	}
}
