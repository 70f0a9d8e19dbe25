package claims_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/claims"
	"github.com/meridian-id/meridian/conflict"
)

const testDomain = "us-east"

// testNow is the fake clock of every test Claims: 2026-11-21T00:00:00Z.
const testNow = int64(1_795_219_200_000)

// startServer starts a real JetStream server (its own domain, as the claims
// region runs) on an OS-chosen port with its store in a temp dir.
func startServer(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "claims-test", Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		JetStream: true, JetStreamDomain: testDomain, StoreDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func connectJS(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, testDomain)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// clock is an injected node clock in unix ms.
type clock struct{ ms atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ms.Store(testNow)
	return c
}

func (c *clock) Now() int64              { return c.ms.Load() }
func (c *clock) Advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// open returns Claims of node on the server's claims bucket (created).
func open(t testing.TB, js jetstream.JetStream, node string, now func() int64, tweak ...func(*claims.Config)) *claims.Claims {
	t.Helper()
	cfg := claims.Config{
		JS: js, ClaimsRegion: "us-east", Region: "us-east", Node: node, Create: true,
		Timeout: 5 * time.Second, Now: now,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := claims.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newHash() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func newIdentity() string { return uuid.NewString() }

var eventSeq atomic.Uint64

// stamp is the stamp of a made-up event at hlc (physical ms) on node.
func stamp(ms int64, node string) conflict.Stamp {
	return conflict.Stamp{HLC: conflict.MakeTimestamp(ms, 0), Node: node, EventID: fmt.Sprintf("ev-%06d", eventSeq.Add(1))}
}

// ownerOf fails the test unless (ns, hash) is held by want ("" = nobody).
func ownerOf(t testing.TB, c *claims.Claims, ns claims.Namespace, hash []byte, want string) {
	t.Helper()
	rec, err := c.Owner(context.Background(), ns, hash)
	switch {
	case want == "" && err == nil:
		t.Fatalf("%s claim held by %s, want released", ns, rec.IdentityID)
	case want == "":
		if err != claims.ErrNotFound {
			t.Fatalf("%s claim: %v, want ErrNotFound", ns, err)
		}
	case err != nil:
		t.Fatalf("%s claim: %v, want held by %s", ns, err, want)
	case rec.IdentityID != want:
		t.Fatalf("%s claim held by %s, want %s", ns, rec.IdentityID, want)
	}
}
