package inspect

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/projector"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

// fakeModel is a StateRanger over maps, ranged in id order.
type fakeModel struct {
	global, resident map[string]*meridianv1.IdentityState
	broken           map[string]bool // resident states that do not open
	seq              uint64
}

func (m *fakeModel) RangeStates(fn projector.StateVisitor) (uint64, error) {
	ids := map[string]bool{}
	for id := range m.global {
		ids[id] = true
	}
	for id := range m.resident {
		ids[id] = true
	}
	for id := range m.broken {
		ids[id] = true
	}
	var sorted []string
	for id := range ids {
		sorted = append(sorted, id)
	}
	slices.Sort(sorted)
	for _, id := range sorted {
		var err error
		if m.broken[id] {
			err = errors.New("key gone")
		}
		if e := fn(id, m.global[id], m.resident[id], err); e != nil {
			return m.seq, e
		}
	}
	return m.seq, nil
}

func state(id string, hlc uint64) *meridianv1.IdentityState {
	return &meridianv1.IdentityState{IdentityId: id, UpdatedHlc: hlc}
}

func model(n int) *fakeModel {
	m := &fakeModel{global: map[string]*meridianv1.IdentityState{}, resident: map[string]*meridianv1.IdentityState{}, seq: 42}
	for i := range n {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		m.global[id] = state(id, uint64(i+1))
		if i%2 == 0 {
			m.resident[id] = state(id, uint64(100+i))
		}
	}
	return m
}

func TestComputeLocatesADifference(t *testing.T) {
	a, b := model(500), model(500)
	da, err := Compute(a, KindGlobal, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, _ := Compute(b, KindGlobal, nil)
	if da.Root != db.Root || da.Count != 500 || da.InboxSeq != 42 {
		t.Fatalf("equal models: roots %s / %s, count %d, seq %d", da.Root, db.Root, da.Count, da.InboxSeq)
	}
	victim := "00000000-0000-4000-8000-000000000123"
	b.global[victim] = state(victim, 999)
	db, _ = Compute(b, KindGlobal, nil)
	diff := DifferingBuckets(da, db)
	if da.Root == db.Root || !slices.Equal(diff, []int{BucketOf(victim)}) {
		t.Fatalf("one changed identity: roots equal %v, differing buckets %v, want [%d]", da.Root == db.Root, diff, BucketOf(victim))
	}
	ea, _ := Compute(a, KindGlobal, diff)
	eb, _ := Compute(b, KindGlobal, diff)
	ma, mb := ea.EntryMap(), eb.EntryMap()
	for id := range ma {
		if (ma[id] != mb[id]) != (id == victim) {
			t.Errorf("entry %s: %s vs %s", id, ma[id], mb[id])
		}
	}
	if err := eb.Check(); err != nil {
		t.Error(err)
	}
}

func TestComputeResident(t *testing.T) {
	m := model(10)
	m.broken = map[string]bool{"zz-broken": true}
	d, err := Compute(m, KindResident, []int{BucketOf("zz-broken")})
	if err != nil {
		t.Fatal(err)
	}
	if d.Count != 6 { // five resident states and the unreadable one
		t.Errorf("resident count %d, want 6", d.Count)
	}
	if got := d.EntryMap()["zz-broken"]; got != Unreadable {
		t.Errorf("unreadable state digested as %q", got)
	}
	if _, err := Compute(m, "other", nil); !errors.Is(err, ErrKind) {
		t.Errorf("unknown kind: %v", err)
	}
	if _, err := Compute(m, KindGlobal, []int{256}); err == nil {
		t.Error("bucket 256 accepted")
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAuditRecords(t *testing.T) {
	a, err := NewAuditor(region.DefaultDevPolicy(), region.DevUSEast)
	if err != nil {
		t.Fatal(err)
	}
	const id = "0193a1b2-0000-7000-8000-000000000001"
	global := &meridianv1.Event{EventId: "e1", IdentityId: id, Zone: "eu", Part: meridianv1.Part_PART_GLOBAL,
		Body: &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Locale: proto.String("de")}}}}
	leaky := proto.CloneOf(global)
	leaky.GetTraitsUpdated().Traits.Name = proto.String("Ada")
	sealedOnGlobal := proto.CloneOf(global)
	sealedOnGlobal.Sealed = &meridianv1.Sealed{KeyId: "k", Ciphertext: []byte("x")}
	residentEU := &meridianv1.Event{EventId: "e2", IdentityId: id, Zone: "eu", Part: meridianv1.Part_PART_RESIDENT,
		Sealed: &meridianv1.Sealed{KeyId: "k", Ciphertext: []byte("x")}, Body: &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{}}}
	residentUS := proto.CloneOf(residentEU)
	residentUS.Zone = "us"
	keyUS := &meridianv1.Event{EventId: "e3", IdentityId: id, Zone: "us", Part: meridianv1.Part_PART_KEY, Body: &meridianv1.Event_DataKey{DataKey: &meridianv1.DataKey{KeyId: "k", WrappedKey: []byte("w")}}}
	for _, tc := range []struct {
		name, subject string
		ev            proto.Message
		data          []byte
		want          []string
	}{
		{"clean global record", region.Subject(region.DevEUWest, "global", "traits_updated"), global, nil, nil},
		{"clean global log record", "", global, nil, nil},
		{"resident field in a global record", "", leaky, nil, []string{RuleResidentField}},
		{"sealed part on a global record", "", sealedOnGlobal, nil, []string{RuleResidentField}},
		{"resident part of another zone (log)", "", residentEU, nil, []string{RuleOutsideZone}},
		{"resident subject of another zone", region.Subject(region.DevEUWest, "eu", "traits_updated"), residentEU, nil, []string{RuleOutsideZone}},
		{"own zone resident part", region.Subject(region.DevUSEast, "us", "traits_updated"), residentUS, nil, nil},
		{"own zone resident part on a global subject", region.Subject(region.DevUSEast, "global", "traits_updated"), residentUS, nil, []string{RuleResidentOnGlobal}},
		{"own zone key record", region.KeySubject(region.DevUSEast, "us", id), keyUS, nil, nil},
		{"global record on a zone subject", region.Subject(region.DevUSEast, "us", "traits_updated"), global, nil, []string{RuleSubjectMismatch}},
		{"undecodable", "", nil, []byte{0x0a, 0x05, 'a'}, []string{RuleUndecodable}},
		{"not a meridian subject", "$KV.claims.x", nil, []byte("whatever"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if tc.ev != nil {
				data = mustMarshal(t, tc.ev)
			}
			var got []string
			for _, f := range a.Record("test", 7, tc.subject, data) {
				got = append(got, f.Rule)
				if f.Region != region.DevUSEast || f.Seq != 7 || f.Detail == "" {
					t.Errorf("finding lacks context: %+v", f)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("rules %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAuditStates(t *testing.T) {
	a, err := NewAuditor(region.DefaultDevPolicy(), region.DevUSEast)
	if err != nil {
		t.Fatal(err)
	}
	reg := func(path string, ident *meridianv1.Identity) *meridianv1.Register {
		return &meridianv1.Register{Path: path, Stamp: &meridianv1.Stamp{Hlc: 1, Node: "n", EventId: "e"}, Value: mustMarshal(t, ident)}
	}
	home := func(r string) *meridianv1.IdentityState {
		return &meridianv1.IdentityState{IdentityId: "i", Registers: []*meridianv1.Register{reg("home_region", &meridianv1.Identity{HomeRegion: r})}}
	}
	leaky := home(region.DevUSEast)
	leaky.Registers = append(leaky.Registers, reg("traits.name", &meridianv1.Identity{Traits: &meridianv1.Traits{Name: proto.String("Ada")}}))
	resident := &meridianv1.IdentityState{IdentityId: "i"}
	for _, tc := range []struct {
		name             string
		global, resident *meridianv1.IdentityState
		want             []string
	}{
		{"own zone identity with resident state", home(region.DevUSEast), resident, nil},
		{"other zone identity without resident state", home(region.DevEUWest), nil, nil},
		{"other zone identity with resident state", home(region.DevEUWest), resident, []string{RuleOutsideZone}},
		{"resident state before its global part", nil, resident, nil},
		{"resident field in the global state", leaky, nil, []string{RuleResidentField}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, f := range a.State("i", tc.global, tc.resident, nil) {
				got = append(got, f.Rule)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("rules %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReadHeaderMatchesDecode(t *testing.T) {
	for _, ev := range []*meridianv1.Event{
		{EventId: "e1", IdentityId: "i1", OriginNode: "n1", Zone: "eu", Part: meridianv1.Part_PART_GLOBAL, Body: &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: "r"}}},
		{EventId: "e2", IdentityId: "i2", Zone: "eu", Part: meridianv1.Part_PART_KEY, Body: &meridianv1.Event_DataKey{DataKey: &meridianv1.DataKey{KeyId: "k", WrappedKey: []byte("w")}}},
		{EventId: "e3", IdentityId: "i3", Zone: "eu", Part: meridianv1.Part_PART_KEY, Body: &meridianv1.Event_DataKey{DataKey: &meridianv1.DataKey{KeyId: "k"}}},
	} {
		b := writer.StampSequence(9, mustMarshal(t, ev))
		h, err := ReadHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		want := Header{EventID: ev.EventId, IdentityID: ev.IdentityId, Zone: ev.Zone, OriginNode: ev.OriginNode, Part: ev.Part, Sequence: 9,
			WrappedKey: len(ev.GetDataKey().GetWrappedKey()) > 0}
		if h != want {
			t.Errorf("header %+v, want %+v", h, want)
		}
	}
	if _, err := ReadHeader([]byte{0x0a, 0x05}); err == nil {
		t.Error("truncated record read")
	}
}

// TestRedactKeyRecords redacts a data-key record in a real log and proves
// that no file of the log holds the wrapped key afterwards, although the
// log's WAL held it before (Pebble recycles WAL files, keeping old bytes).
func TestRedactKeyRecords(t *testing.T) {
	dir := t.TempDir()
	l, err := eventlog.Open(eventlog.Options{Dir: dir, Stamp: writer.StampSequence})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	const id = "0193a1b2-0000-7000-8000-000000000001"
	wrapped := make([]byte, 48)
	rand.Read(wrapped)
	key := &meridianv1.Event{EventId: "e-key", IdentityId: id, Zone: "eu", Part: meridianv1.Part_PART_KEY,
		Body: &meridianv1.Event_DataKey{DataKey: &meridianv1.DataKey{KeyId: "k1", ZoneKeyId: "z", Nonce: []byte("123456789012"), WrappedKey: wrapped}}}
	other := &meridianv1.Event{EventId: "e-other", IdentityId: id, Zone: "eu", Part: meridianv1.Part_PART_GLOBAL,
		Body: &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: "r"}}}
	for i := range 50 {
		recs := [][]byte{mustMarshal(t, other)}
		if i == 10 {
			recs = append(recs, mustMarshal(t, key))
		}
		if _, err := l.Append(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	if !dirHolds(t, dir, wrapped) {
		t.Fatal("the wrapped key is not in the log's files before the redaction: the test proves nothing")
	}
	live, redacted, err := KeyRecords(ctx, l, id)
	if err != nil || len(live) != 1 || redacted != 0 {
		t.Fatalf("key records: %d live, %d redacted, err %v", len(live), redacted, err)
	}
	data, secrets, err := RedactKeyRecord(live[0].Data)
	if err != nil || len(secrets) != 1 || !bytes.Equal(secrets[0], wrapped) {
		t.Fatalf("redact: %v, secrets %d", err, len(secrets))
	}
	if _, _, err := RedactKeyRecord(mustMarshal(t, other)); err == nil {
		t.Error("redacted a record that is not a key record")
	}
	st, err := l.Redact(ctx, []eventlog.Record{{Seq: live[0].Seq, Data: data}}, secrets)
	t.Logf("redact: %+v", st)
	if err != nil {
		t.Fatal(err)
	}
	live, redacted, err = KeyRecords(ctx, l, id)
	if err != nil || len(live) != 0 || redacted != 1 {
		t.Fatalf("after redaction: %d live, %d redacted, err %v", len(live), redacted, err)
	}
	recs, err := l.Read(1, 1000)
	if err != nil || len(recs) != 51 {
		t.Fatalf("log after redaction: %d records, %v", len(recs), err)
	}
	// Pebble deletes obsolete SSTs in the background: poll for it.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for dirHolds(t, dir, wrapped) {
		if time.Now().After(deadline) {
			t.Fatal("a file of the log still holds the wrapped key")
		}
		<-tick.C
	}
	if _, err := l.Redact(ctx, []eventlog.Record{{Seq: 999, Data: data}}, nil); !errors.Is(err, eventlog.ErrInvalid) {
		t.Errorf("redact of a missing record: %v", err)
	}
}

func dirHolds(t *testing.T, dir string, needle []byte) bool {
	t.Helper()
	found := false
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, needle) {
			found = true
		}
		return nil
	})
	return found
}
