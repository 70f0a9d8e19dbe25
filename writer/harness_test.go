package writer_test

import (
	"crypto/rand"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"google.golang.org/protobuf/proto"
)

// topology is a plain region -> zone table (region.Policy in production).
type topology map[string]string

func (t topology) ZoneOf(region string) (string, bool) {
	z, ok := t[region]
	return z, ok
}

var testTopology = topology{"eu-west": "eu", "eu-central": "eu", "us-east": "us"}

// testNow is the node clock of every test writer: 2026-11-21T00:00:00Z.
const testNow = int64(1_795_219_200_000)

type env struct {
	dir    string
	log    *eventlog.Log
	keys   *keystore.Store
	w      *writer.Writer
	zones  map[string]keystore.ZoneKey
	hash   []byte
	now    atomic.Int64
	region string
}

func zoneKeys() map[string]keystore.ZoneKey {
	var eu, us [32]byte
	rand.Read(eu[:])
	rand.Read(us[:])
	return map[string]keystore.ZoneKey{"eu": {ID: "eu-1", Key: eu}, "us": {ID: "us-1", Key: us}}
}

// newEnv opens a real log and key store in a temp dir and a writer over them.
func newEnv(t testing.TB, region string, tweak ...func(*writer.Config)) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), zones: zoneKeys(), hash: []byte("0123456789abcdef0123456789abcdef"), region: region}
	e.now.Store(testNow)
	var err error
	e.log, err = eventlog.Open(eventlog.Options{Dir: filepath.Join(e.dir, "log"), Stamp: writer.StampSequence})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.log.Close() })
	e.keys, err = keystore.Open(keystore.Options{Dir: filepath.Join(e.dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.keys.Close() })
	cfg := writer.Config{
		Region: region, Node: region + "-n1", Topology: testTopology,
		Log: e.log, Keys: e.keys, ZoneKeys: e.zones, HashKey: e.hash,
		Now: e.now.Load,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	e.w, err = writer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// records reads the whole log and decodes every record.
func (e *env) records(t testing.TB) []*meridianv1.Event {
	t.Helper()
	recs, err := e.log.Read(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*meridianv1.Event, len(recs))
	for i, r := range recs {
		ev := &meridianv1.Event{}
		if err := proto.Unmarshal(r.Data, ev); err != nil {
			t.Fatalf("record %d does not decode: %v", r.Seq, err)
		}
		if ev.Sequence != r.Seq {
			t.Fatalf("record %d carries sequence %d", r.Seq, ev.Sequence)
		}
		out[i] = ev
	}
	return out
}

func newIdentity() string { return uuid.NewString() }

func newEventID() string { return uuid.Must(uuid.NewV7()).String() }

func ptr[T any](v T) *T { return &v }

func created(identity, home string, traits *meridianv1.Traits) *meridianv1.Event {
	return &meridianv1.Event{
		IdentityId: identity,
		HomeRegion: home,
		Body: &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{
			HomeRegion: home, Traits: traits,
		}},
	}
}

func roleGranted(identity, home, role string) *meridianv1.Event {
	return &meridianv1.Event{
		IdentityId: identity,
		HomeRegion: home,
		Body:       &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: role}},
	}
}

func traitsUpdated(identity, home string, traits *meridianv1.Traits) *meridianv1.Event {
	return &meridianv1.Event{
		IdentityId: identity,
		HomeRegion: home,
		Body:       &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: traits}},
	}
}

func asWriterError(err error, target **writer.Error) bool { return errors.As(err, target) }

func isErr(err, target error) bool { return errors.Is(err, target) }
