package writer

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

type benchTopology map[string]string

func (t benchTopology) ZoneOf(r string) (string, bool) { z, ok := t[r]; return z, ok }

// BenchmarkBuildRecords is the writer's own CPU per event, without the log:
// validate + split (prepare) and stamp + hash + seal + marshal (batch.add),
// plus the token. Compare with the per-append budget of the log.
//
//	go test ./writer -run '^$' -bench BenchmarkBuildRecords
func BenchmarkBuildRecords(b *testing.B) {
	dir := b.TempDir()
	l, err := eventlog.Open(eventlog.Options{Dir: filepath.Join(dir, "log"), Stamp: StampSequence})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ks, err := keystore.Open(keystore.Options{Dir: filepath.Join(dir, "keys")})
	if err != nil {
		b.Fatal(err)
	}
	defer ks.Close()
	var zk [32]byte
	rand.Read(zk[:])
	w, err := New(Config{Region: "eu-west", Node: "n1", Topology: benchTopology{"eu-west": "eu"}, Log: l, Keys: ks,
		ZoneKeys: map[string]keystore.ZoneKey{"eu": {ID: "eu-1", Key: zk}}, HashKey: []byte("0123456789abcdef")})
	if err != nil {
		b.Fatal(err)
	}
	id := uuid.NewString()
	if _, err := w.Append(context.Background(), &meridianv1.Event{IdentityId: id, HomeRegion: "eu-west",
		Body: &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: proto.String("x")}}}}); err != nil {
		b.Fatal(err)
	}
	events := map[string]*meridianv1.Event{
		"sealed": {IdentityId: id, HomeRegion: "eu-west", Body: &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{
			Traits: &meridianv1.Traits{Name: proto.String("Benchmark Person"), Phone: proto.String("+49 30 1234567"), Locale: proto.String("de-DE")}}}},
		"global": {IdentityId: id, HomeRegion: "eu-west", Body: &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: "member"}}},
	}
	for _, kind := range []string{"sealed", "global"} {
		ev := events[kind]
		b.Run("event="+kind, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				// As Append does for one event.
				o := new(one)
				o.preps[0] = &o.prep
				p := &o.prep
				if err := w.prepare(p, ev); err != nil {
					b.Fatal(err)
				}
				bt := w.newBatch(o.preps[:], o)
				if err := bt.add(p); err != nil {
					b.Fatal(err)
				}
				p.releaseScratch()
				w.resultInto(&o.res, o.token[:], 1, bt.ids, bt.zones)
			}
		})
	}
}
