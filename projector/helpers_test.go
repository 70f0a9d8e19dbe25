package projector

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// The tests run one real JetStream server (embedded, port chosen by the OS)
// and real Pebble stores. Records are made by the real writer over a real
// event log in region eu-central and published to the inbox of eu-west
// (same zone, separate key store) the way the shipper does: subject from
// the record, Nats-Msg-Id = record id, Meridian-Seq = log sequence.

const (
	projRegion   = "eu-west"
	originRegion = "eu-central"
	testZone     = "eu"
	testDomain   = "test"
	testNow      = int64(1_795_219_200_000) // 2026-11-21T00:00:00Z
)

type topology map[string]string

func (t topology) ZoneOf(r string) (string, bool) { z, ok := t[r]; return z, ok }

var testTopology = topology{"eu-west": "eu", "eu-central": "eu", "us-east": "us"}

var testHashKey = []byte("0123456789abcdef0123456789abcdef")

func hashEmail(email string) []byte { return writer.EmailHash(testHashKey, email) }

// testCtx bounds every wait of a test.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func startServer(t testing.TB) *server.Server {
	t.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, JetStreamDomain: testDomain, StoreDir: t.TempDir(),
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// world is a server, an inbox stream, an origin writer and the projecting
// region's key store.
type world struct {
	t       testing.TB
	srv     *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  string
	zones   map[string]keystore.ZoneKey
	now     atomic.Int64
	origin  *originNode
	keysDir string
	keys    *keystore.Store
	dir     string // read model dir
}

type originNode struct {
	region, node string
	log          *eventlog.Log
	keys         *keystore.Store
	w            *writer.Writer
	shipped      uint64
}

func newWorld(t testing.TB) *world { return newWorldWith(t, false) }

// newWorldWith makes the world; with sourced, the inbox sources an origin
// stream (as in a deployment, minus the second domain), so messages carry
// Nats-Stream-Source and lag can be measured against the origin. Without
// it, records are published straight into the inbox.
func newWorldWith(t testing.TB, sourced bool) *world {
	t.Helper()
	w := &world{t: t, stream: region.InboxStream(projRegion)}
	w.now.Store(testNow)
	var eu, us [32]byte
	rand.Read(eu[:])
	rand.Read(us[:])
	w.zones = map[string]keystore.ZoneKey{"eu": {ID: "eu-1", Key: eu}, "us": {ID: "us-1", Key: us}}
	w.srv = startServer(t)
	w.nc, w.js = connect(t, w.srv.ClientURL())
	ctx := testCtx(t)
	inbox := jetstream.StreamConfig{
		Name: w.stream, Subjects: []string{"meridian.>", "poison.>"}, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	}
	if sourced {
		if _, err := w.js.CreateStream(ctx, jetstream.StreamConfig{
			Name: region.OriginStream(originRegion), Subjects: []string{region.OriginSubjects(originRegion)}, Duplicates: time.Minute,
		}); err != nil {
			t.Fatal(err)
		}
		inbox.Subjects = nil
		inbox.Sources = []*jetstream.StreamSource{
			{Name: region.OriginStream(originRegion), FilterSubject: region.ZoneFilter(originRegion, region.GlobalZone)},
			{Name: region.OriginStream(originRegion), FilterSubject: region.ZoneFilter(originRegion, testZone)},
		}
	}
	if _, err := w.js.CreateStream(ctx, inbox); err != nil {
		t.Fatal(err)
	}
	w.origin = w.newOrigin(originRegion)
	w.keysDir = filepath.Join(t.TempDir(), "keys")
	w.dir = filepath.Join(t.TempDir(), "model")
	w.openKeys()
	return w
}

func (w *world) openKeys() {
	w.t.Helper()
	ks, err := keystore.Open(keystore.Options{Dir: w.keysDir})
	if err != nil {
		w.t.Fatal(err)
	}
	w.keys = ks
	w.t.Cleanup(func() { ks.Close() })
}

func (w *world) newOrigin(regionName string) *originNode {
	t := w.t
	t.Helper()
	dir := t.TempDir()
	o := &originNode{region: regionName, node: regionName + "-n1"}
	var err error
	o.log, err = eventlog.Open(eventlog.Options{Dir: filepath.Join(dir, "log"), Stamp: writer.StampSequence})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.log.Close() })
	o.keys, err = keystore.Open(keystore.Options{Dir: filepath.Join(dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.keys.Close() })
	o.w, err = writer.New(writer.Config{
		Region: regionName, Node: o.node, Topology: testTopology, Log: o.log, Keys: o.keys,
		ZoneKeys: w.zones, HashKey: testHashKey, Now: w.now.Load,
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (w *world) config() Config {
	return Config{
		Region: projRegion, Zone: testZone, JS: w.js, Dir: w.dir, Keys: w.keys,
		ZoneKeys: w.zones, Now: w.now.Load, HashEmail: hashEmail, BatchSize: 64,
		Origins: map[string]string{originRegion: testDomain}, LagInterval: 50 * time.Millisecond,
	}
}

// start opens and starts a projector on the world's directories.
func (w *world) start(tweak ...func(*Config)) *Projector {
	w.t.Helper()
	cfg := w.config()
	for _, f := range tweak {
		f(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := p.Start(testCtx(w.t)); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { p.Close() })
	return p
}

// append writes events through the origin's writer and ships them.
func (w *world) append(evs ...*meridianv1.Event) *writer.Result {
	w.t.Helper()
	res, err := w.origin.w.Append(testCtx(w.t), evs...)
	if err != nil {
		w.t.Fatal(err)
	}
	w.ship(w.origin)
	return res
}

// ship publishes the origin's unshipped log records to the inbox, as the
// shipper would (subject, Nats-Msg-Id, Meridian-Seq).
func (w *world) ship(o *originNode) {
	w.t.Helper()
	ctx := testCtx(w.t)
	for {
		recs, err := o.log.Read(o.shipped+1, 4096)
		if err != nil {
			w.t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			subject, id := route(w.t, o.region, rec.Data)
			m := &nats.Msg{Subject: subject, Data: rec.Data, Header: nats.Header{}}
			m.Header.Set(jetstream.MsgIDHeader, id)
			m.Header.Set(SeqHeader, strconv.FormatUint(rec.Seq, 10))
			if _, err := w.js.PublishMsgAsync(m); err != nil {
				w.t.Fatal(err)
			}
			o.shipped = rec.Seq
		}
		select {
		case <-w.js.PublishAsyncComplete():
		case <-ctx.Done():
			w.t.Fatal("publish acks timed out")
		}
	}
}

func route(t testing.TB, regionName string, data []byte) (string, string) {
	var ev meridianv1.Event
	if err := proto.Unmarshal(data, &ev); err != nil {
		t.Fatal(err)
	}
	zone := writer.SubjectZone(&ev)
	if ev.GetPart() == meridianv1.Part_PART_KEY {
		return region.KeySubject(regionName, zone, ev.GetIdentityId()), writer.RecordID(&ev)
	}
	return region.Subject(regionName, zone, writer.SubjectType(&ev)), writer.RecordID(&ev)
}

// publishRaw puts an arbitrary message into the inbox.
func (w *world) publishRaw(subject string, data []byte, hdr map[string]string) uint64 {
	w.t.Helper()
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	ack, err := w.js.PublishMsg(testCtx(w.t), m)
	if err != nil {
		w.t.Fatal(err)
	}
	return ack.Sequence
}

func (w *world) lastSeq() uint64 {
	w.t.Helper()
	s, err := w.js.Stream(testCtx(w.t), w.stream)
	if err != nil {
		w.t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

// waitApplied waits (bounded) until the projector has applied the inbox up
// to its current last sequence, on the commit notifications.
func waitInbox(t testing.TB, p *Projector, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, have, _, next := p.eng.snapshot()
		if have >= seq {
			return
		}
		select {
		case <-next:
		case <-ctx.Done():
			t.Fatalf("projector reached inbox seq %d, want %d (status %+v)", have, seq, p.Status())
		}
	}
}

func (w *world) sync(p *Projector) { w.t.Helper(); waitInbox(w.t, p, w.lastSeq()) }

func newID() string { return uuid.Must(uuid.NewRandom()).String() }

func ptr[T any](v T) *T { return &v }

// Event builders (what a service would send).

func created(id, email, name string) *meridianv1.Event {
	return &meridianv1.Event{IdentityId: id, HomeRegion: originRegion, Body: &meridianv1.Event_IdentityCreated{
		IdentityCreated: &meridianv1.IdentityCreated{Traits: &meridianv1.Traits{Email: ptr(email), Name: ptr(name), Locale: ptr("de-DE")}},
	}}
}

func withBody(id string, body any) *meridianv1.Event {
	ev := &meridianv1.Event{IdentityId: id, HomeRegion: originRegion}
	switch b := body.(type) {
	case *meridianv1.TraitsUpdated:
		ev.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: b}
	case *meridianv1.RoleGranted:
		ev.Body = &meridianv1.Event_RoleGranted{RoleGranted: b}
	case *meridianv1.RoleRevoked:
		ev.Body = &meridianv1.Event_RoleRevoked{RoleRevoked: b}
	case *meridianv1.LoginFailed:
		ev.Body = &meridianv1.Event_LoginFailed{LoginFailed: b}
	case *meridianv1.SessionIssued:
		ev.Body = &meridianv1.Event_SessionIssued{SessionIssued: b}
	case *meridianv1.SessionRevoked:
		ev.Body = &meridianv1.Event_SessionRevoked{SessionRevoked: b}
	case *meridianv1.StateChanged:
		ev.Body = &meridianv1.Event_StateChanged{StateChanged: b}
	case *meridianv1.CredentialAdded:
		ev.Body = &meridianv1.Event_CredentialAdded{CredentialAdded: b}
	case *meridianv1.CredentialRemoved:
		ev.Body = &meridianv1.Event_CredentialRemoved{CredentialRemoved: b}
	case *meridianv1.IdentityErased:
		ev.Body = &meridianv1.Event_IdentityErased{IdentityErased: b}
	default:
		panic(fmt.Sprintf("withBody: %T", body))
	}
	return ev
}

func grant(id, role string) *meridianv1.Event {
	return withBody(id, &meridianv1.RoleGranted{Role: role})
}

func loginFailed(id string) *meridianv1.Event {
	return withBody(id, &meridianv1.LoginFailed{})
}

func session(id, sid string, expires int64) *meridianv1.Event {
	return withBody(id, &meridianv1.SessionIssued{Session: &meridianv1.Session{
		SessionId: sid, ExpiresAtUnixMs: expires, IssuedAtUnixMs: testNow - 120_000, Device: "phone", Ip: "192.0.2.1",
	}})
}

func erase(id string) *meridianv1.Event {
	return withBody(id, &meridianv1.IdentityErased{Reason: "gdpr request"})
}

// scanDir reports which needles appear in any file under dir.
func scanDir(t testing.TB, dir string, needles map[string][]byte) []string {
	t.Helper()
	var found []string
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for name, n := range needles {
			if bytes.Contains(b, n) {
				found = append(found, fmt.Sprintf("%s in %s", name, path))
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return found
}

func errAs[T error](err error, target *T) bool { return errors.As(err, target) }

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func equalState(a, b *meridianv1.IdentityState) bool { return proto.Equal(a, b) }

func equalIdentity(a, b *meridianv1.Identity) bool { return proto.Equal(a, b) }
