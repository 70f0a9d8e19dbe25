package node

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/eventlog"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

// fullRoute is the reference: decode the whole event, then name it.
func fullRoute(regionName string, data []byte) (string, string, error) {
	var ev meridianv1.Event
	if err := proto.Unmarshal(data, &ev); err != nil {
		return "", "", err
	}
	if ev.GetPart() == meridianv1.Part_PART_KEY {
		return region.KeySubject(regionName, writer.SubjectZone(&ev), ev.GetIdentityId()), writer.RecordID(&ev), nil
	}
	return region.Subject(regionName, writer.SubjectZone(&ev), writer.SubjectType(&ev)), writer.RecordID(&ev), nil
}

func TestRouteMatchesFullDecode(t *testing.T) {
	const id = "0193a1b2-0000-7000-8000-000000000001"
	events := []*meridianv1.Event{
		{EventId: "e1", IdentityId: id, Zone: "eu", Part: meridianv1.Part_PART_GLOBAL, Body: &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: "admin"}}},
		{EventId: "e2", IdentityId: id, Zone: "eu", Part: meridianv1.Part_PART_RESIDENT, Sealed: &meridianv1.Sealed{KeyId: "k", Ciphertext: []byte("x")}, Body: &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{}}},
		{EventId: "e3", IdentityId: id, Zone: "eu", Part: meridianv1.Part_PART_KEY, Body: &meridianv1.Event_DataKey{DataKey: &meridianv1.DataKey{KeyId: "key-1", WrappedKey: []byte("w")}}},
		{EventId: "e4", Part: meridianv1.Part_PART_GLOBAL, Sequence: 9, Body: &meridianv1.Event_Heartbeat{Heartbeat: &meridianv1.Heartbeat{SentAtUnixMs: 5}}},
	}
	route := Route("eu-west")
	for _, ev := range events {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		b = writer.StampSequence(42, b)
		wantS, wantID, err := fullRoute("eu-west", b)
		if err != nil {
			t.Fatal(err)
		}
		gotS, gotID, err := route(eventlog.Record{Seq: 42, Data: b})
		if err != nil {
			t.Fatalf("%s: %v", ev.EventId, err)
		}
		if gotS != wantS || gotID != wantID {
			t.Errorf("%s: route = (%q, %q), full decode = (%q, %q)", ev.EventId, gotS, gotID, wantS, wantID)
		}
	}
}

func TestRouteRejects(t *testing.T) {
	route := Route("eu-west")
	noBody, _ := proto.Marshal(&meridianv1.Event{EventId: "e", Part: meridianv1.Part_PART_GLOBAL})
	noZone, _ := proto.Marshal(&meridianv1.Event{EventId: "e", Part: meridianv1.Part_PART_RESIDENT, Body: &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{}}})
	for name, data := range map[string][]byte{
		"truncated": {0x0a, 0x05, 'a'},
		"no body":   noBody,
		"no zone":   noZone,
	} {
		if _, _, err := route(eventlog.Record{Seq: 1, Data: data}); err == nil {
			t.Errorf("%s: route accepted it", name)
		}
	}
}

func BenchmarkRoute(b *testing.B) {
	rec, _ := proto.Marshal(&meridianv1.Event{EventId: "0193a1b2-0000-7000-8000-000000000002", IdentityId: "0193a1b2-0000-7000-8000-000000000001", Zone: "eu", Part: meridianv1.Part_PART_GLOBAL, Hlc: 1 << 40, OriginRegion: "eu-west", OriginNode: "eu-west-1", Body: &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Locale: proto.String("en")}}}})
	route := Route("eu-west")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := route(eventlog.Record{Seq: 1, Data: rec}); err != nil {
			b.Fatal(err)
		}
	}
}
