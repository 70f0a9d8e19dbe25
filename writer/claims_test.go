package writer_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/claims"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
)

// claimer adapts *claims.Claims to writer.Claimer, as node does.
type claimer struct{ c *claims.Claims }

func (a claimer) Claim(ctx context.Context, ns writer.ClaimNamespace, hash []byte, id string) (writer.ClaimTicket, error) {
	t, err := a.c.Take(ctx, claims.Namespace(ns), hash, id)
	if errors.Is(err, claims.ErrTaken) {
		err = fmt.Errorf("%w: %w", writer.ErrClaimTaken, err)
	}
	return writer.ClaimTicket(t), err
}

func (a claimer) Abort(ctx context.Context, ns writer.ClaimNamespace, hash []byte, t writer.ClaimTicket) error {
	return a.c.Abort(ctx, claims.Namespace(ns), hash, claims.Ticket(t))
}

func (a claimer) Settle(ctx context.Context, id string, changes ...writer.ClaimChange) error {
	out := make([]claims.Change, len(changes))
	for i, c := range changes {
		out[i] = claims.Change{Namespace: claims.Namespace(c.Namespace), Hash: c.Hash, Stamp: c.Stamp, Creates: c.Creates}
	}
	return a.c.Settle(ctx, id, out...)
}

func (a claimer) ReleaseAll(ctx context.Context, id string) error { return a.c.ReleaseAll(ctx, id) }
func (a claimer) Region() string                                  { return a.c.Region() }

// countingClaimer counts calls and can run a hook after each Claim.
type countingClaimer struct {
	claimer
	calls     atomic.Int64
	afterTake func()
}

func (c *countingClaimer) Claim(ctx context.Context, ns writer.ClaimNamespace, hash []byte, id string) (writer.ClaimTicket, error) {
	c.calls.Add(1)
	t, err := c.claimer.Claim(ctx, ns, hash, id)
	if c.afterTake != nil {
		c.afterTake()
	}
	return t, err
}

// claimsEnv is a writer env with claims in a real JetStream server (the
// claims domain).
type claimsEnv struct {
	*env
	srv    *server.Server
	claims *claims.Claims
	cc     *countingClaimer
}

func newClaimsEnv(t *testing.T) *claimsEnv {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		ServerName: "claims", Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		JetStream: true, JetStreamDomain: "us-east", StoreDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, "us-east")
	if err != nil {
		t.Fatal(err)
	}
	ce := &claimsEnv{srv: srv}
	ce.env = newEnv(t, "eu-west", func(cfg *writer.Config) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ce.claims, err = claims.Open(ctx, claims.Config{
			JS: js, ClaimsRegion: "us-east", Region: "eu-west", Node: cfg.Node, Create: true,
			Timeout: 500 * time.Millisecond, Now: cfg.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		ce.cc = &countingClaimer{claimer: claimer{ce.claims}}
		cfg.Claimer = ce.cc
	})
	return ce
}

func (ce *claimsEnv) holder(t *testing.T, ns claims.Namespace, hash []byte) string {
	t.Helper()
	rec, err := ce.claims.Owner(context.Background(), ns, hash)
	if errors.Is(err, claims.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return rec.IdentityID
}

func (ce *claimsEnv) emailHolder(t *testing.T, email string) string {
	return ce.holder(t, claims.Email, writer.EmailHash(ce.hash, email))
}

func (ce *claimsEnv) usernameHolder(t *testing.T, name string) string {
	return ce.holder(t, claims.Username, writer.UsernameHash(ce.hash, name))
}

func erased(identity, home string) *meridianv1.Event {
	return &meridianv1.Event{
		IdentityId: identity, HomeRegion: home,
		Body: &meridianv1.Event_IdentityErased{IdentityErased: &meridianv1.IdentityErased{Reason: "gdpr"}},
	}
}

func wantWriterError(t *testing.T, err error, code string, status int, field string, index int) *writer.Error {
	t.Helper()
	var we *writer.Error
	if !errors.As(err, &we) {
		t.Fatalf("error %v (%T), want *writer.Error %s", err, err, code)
	}
	if we.Code != code || we.Status != status || we.Field != field || we.Index != index {
		t.Fatalf("error %+v; want code %s, status %d, field %q, index %d", we, code, status, field, index)
	}
	return we
}

func TestRegistrationClaims(t *testing.T) {
	ce := newClaimsEnv(t)
	ctx := context.Background()
	alice, bob := newIdentity(), newIdentity()

	if _, err := ce.w.Append(ctx, created(alice, "eu-west", &meridianv1.Traits{Email: ptr("Alice@Example.com"), Username: ptr("alice")})); err != nil {
		t.Fatal(err)
	}
	if ce.emailHolder(t, " alice@example.COM ") != alice || ce.usernameHolder(t, "ALICE") != alice {
		t.Fatal("registration did not claim the normalised email and username")
	}
	// The registration was settled: the owner register lists both.
	o, err := ce.claims.OwnerOf(ctx, alice)
	if err != nil || len(o.Values) != 2 {
		t.Fatalf("owner register %+v, %v", o, err)
	}

	// bob takes a free username but alice's email: 409 on the email, nothing
	// appended, and the username bob took is given back.
	last := ce.log.LastSeq()
	_, err = ce.w.Append(ctx, created(bob, "eu-west", &meridianv1.Traits{Email: ptr("alice@example.com"), Username: ptr("bob")}))
	we := wantWriterError(t, err, writer.CodeConflict, http.StatusConflict, "identity_created.traits.email", 0)
	if !errors.Is(err, writer.ErrConflict) || !strings.Contains(we.Message, "already registered to another identity") {
		t.Fatalf("conflict error %v", err)
	}
	if strings.Contains(err.Error(), "alice") || strings.Contains(err.Error(), alice) {
		t.Fatalf("conflict error %q leaks the value or its holder", err)
	}
	if ce.log.LastSeq() != last {
		t.Fatal("a refused registration appended records")
	}
	if h := ce.usernameHolder(t, "bob"); h != "" {
		t.Fatalf("username of the refused registration still claimed by %s", h)
	}
	// A username taken by another: the field names it.
	_, err = ce.w.Append(ctx, created(bob, "eu-west", &meridianv1.Traits{Email: ptr("bob@example.com"), Username: ptr("Alice")}))
	wantWriterError(t, err, writer.CodeConflict, http.StatusConflict, "identity_created.traits.username", 0)
	if h := ce.emailHolder(t, "bob@example.com"); h != "" {
		t.Fatalf("email of the refused registration still claimed by %s", h)
	}

	// A retry of alice's registration (same event id) is idempotent.
	ev := created(newIdentity(), "eu-west", &meridianv1.Traits{Email: ptr("carol@example.com")})
	ev.EventId = newEventID()
	for range 2 {
		if _, err := ce.w.Append(ctx, ev); err != nil {
			t.Fatalf("registration retry: %v", err)
		}
	}

	// Two registrations of one email in one request: the second is refused
	// and the first's claim given back (all or nothing).
	d1, d2 := newIdentity(), newIdentity()
	_, err = ce.w.Append(ctx,
		created(d1, "eu-west", &meridianv1.Traits{Email: ptr("dup@example.com")}),
		created(d2, "eu-west", &meridianv1.Traits{Email: ptr("dup@example.com")}))
	wantWriterError(t, err, writer.CodeConflict, http.StatusConflict, "identity_created.traits.email", 1)
	if h := ce.emailHolder(t, "dup@example.com"); h != "" {
		t.Fatalf("claim of a refused request kept by %s", h)
	}

	m := ce.w.ClaimMetrics()
	if m.Conflicts != 3 || m.Aborted != 2 || m.Unavailable != 0 || m.SettleErrors != 0 {
		t.Fatalf("claim metrics %+v", m)
	}
}

// After a durable change the old value is released (the writer does not
// know it; the owner register does); clearing and erasure release too.
func TestChangeAndEraseRelease(t *testing.T) {
	ce := newClaimsEnv(t)
	ctx := context.Background()
	alice, bob := newIdentity(), newIdentity()
	if _, err := ce.w.Append(ctx, created(alice, "eu-west", &meridianv1.Traits{Email: ptr("a1@example.com"), Username: ptr("alice")})); err != nil {
		t.Fatal(err)
	}
	if _, err := ce.w.Append(ctx, traitsUpdated(alice, "eu-west", &meridianv1.Traits{Email: ptr("a2@example.com")})); err != nil {
		t.Fatal(err)
	}
	if ce.emailHolder(t, "a1@example.com") != "" || ce.emailHolder(t, "a2@example.com") != alice || ce.usernameHolder(t, "alice") != alice {
		t.Fatal("after the change: the old email must be free, the new one and the username alice's")
	}
	// The old value can be registered by someone else now.
	if _, err := ce.w.Append(ctx, created(bob, "eu-west", &meridianv1.Traits{Email: ptr("a1@example.com")})); err != nil {
		t.Fatalf("registering alice's old email: %v", err)
	}
	// Changing to a taken value is refused, nothing changes.
	_, err := ce.w.Append(ctx, traitsUpdated(alice, "eu-west", &meridianv1.Traits{Email: ptr("A1@example.com")}))
	wantWriterError(t, err, writer.CodeConflict, http.StatusConflict, "traits_updated.traits.email", 0)
	if ce.emailHolder(t, "a2@example.com") != alice {
		t.Fatal("a refused change released the current email")
	}
	// Setting the same value again keeps it.
	if _, err := ce.w.Append(ctx, traitsUpdated(alice, "eu-west", &meridianv1.Traits{Email: ptr("a2@example.com")})); err != nil {
		t.Fatal(err)
	}
	if ce.emailHolder(t, "a2@example.com") != alice {
		t.Fatal("setting the same email again released it")
	}
	// Clearing the username releases it.
	if _, err := ce.w.Append(ctx, traitsUpdated(alice, "eu-west", &meridianv1.Traits{Username: ptr("")})); err != nil {
		t.Fatal(err)
	}
	if h := ce.usernameHolder(t, "alice"); h != "" {
		t.Fatalf("cleared username still held by %s", h)
	}
	// Erasure releases everything, once durable.
	if _, err := ce.w.Append(ctx, erased(bob, "eu-west")); err != nil {
		t.Fatal(err)
	}
	if h := ce.emailHolder(t, "a1@example.com"); h != "" {
		t.Fatalf("erased identity's email still held by %s", h)
	}
	carol := newIdentity()
	if _, err := ce.w.Append(ctx, created(carol, "eu-west", &meridianv1.Traits{Email: ptr("a1@example.com")})); err != nil {
		t.Fatalf("re-registration after erasure: %v", err)
	}
	if ce.emailHolder(t, "a1@example.com") != carol {
		t.Fatal("re-registration did not claim")
	}
}

// Writes without an email or username never touch the claims: they work
// with the claims region down, when registrations fail closed with a 503
// naming it.
func TestClaimsUnavailable(t *testing.T) {
	ce := newClaimsEnv(t)
	ctx := context.Background()
	alice := newIdentity()
	if _, err := ce.w.Append(ctx, created(alice, "eu-west", &meridianv1.Traits{Email: ptr("alice@example.com")})); err != nil {
		t.Fatal(err)
	}
	calls := ce.cc.calls.Load()
	ce.srv.Shutdown()
	ce.srv.WaitForShutdown()

	for _, ev := range []*meridianv1.Event{
		roleGranted(alice, "eu-west", "admin"),
		traitsUpdated(alice, "eu-west", &meridianv1.Traits{Name: ptr("Alice"), Locale: ptr("fr")}),
		created(newIdentity(), "eu-west", &meridianv1.Traits{Name: ptr("No Email")}),
	} {
		if _, err := ce.w.Append(ctx, ev); err != nil {
			t.Fatalf("%T with the claims region down: %v", ev.Body, err)
		}
	}
	if n := ce.cc.calls.Load(); n != calls {
		t.Fatalf("writes without email or username made %d claims", n-calls)
	}

	last := ce.log.LastSeq()
	began := time.Now()
	_, err := ce.w.Append(ctx, created(newIdentity(), "eu-west", &meridianv1.Traits{Email: ptr("bob@example.com")}))
	we := wantWriterError(t, err, writer.CodeClaimsUnavailable, http.StatusServiceUnavailable, "identity_created.traits.email", 0)
	if !errors.Is(err, writer.ErrClaimsUnavailable) || !errors.Is(err, claims.ErrUnavailable) ||
		!strings.Contains(we.Message, "claims region us-east unreachable") {
		t.Fatalf("unavailable error %v", err)
	}
	if ce.log.LastSeq() != last {
		t.Fatal("a registration that could not be checked appended records")
	}
	t.Logf("refused after %v: %v", time.Since(began).Round(time.Millisecond), err)
	if m := ce.w.ClaimMetrics(); m.Unavailable != 1 {
		t.Fatalf("claim metrics %+v", m)
	}
}

// An append that fails after the claims were taken gives them back; so does
// one that took longer than ClaimWindow to reach the log.
func TestFailedAppendReleases(t *testing.T) {
	ce := newClaimsEnv(t)
	ctx := context.Background()

	// The node's clock jumps past the window while claiming.
	ce.cc.afterTake = func() { ce.now.Add((writer.DefaultClaimWindow + time.Second).Milliseconds()) }
	last := ce.log.LastSeq()
	_, err := ce.w.Append(ctx, created(newIdentity(), "eu-west", &meridianv1.Traits{Email: ptr("slow@example.com")}))
	wantWriterError(t, err, writer.CodeClaimsUnavailable, http.StatusServiceUnavailable, "", -1)
	if ce.log.LastSeq() != last || ce.emailHolder(t, "slow@example.com") != "" {
		t.Fatal("an append past the claim window was written or kept its claim")
	}
	ce.cc.afterTake = nil

	// A cancelled request: the log refuses it before writing.
	cctx, cancel := context.WithCancel(ctx)
	ce.cc.afterTake = cancel
	_, err = ce.w.Append(cctx, created(newIdentity(), "eu-west", &meridianv1.Traits{Email: ptr("gone@example.com")}))
	wantWriterError(t, err, writer.CodeUnavailable, http.StatusServiceUnavailable, "", -1)
	if h := ce.emailHolder(t, "gone@example.com"); h != "" {
		t.Fatalf("claim of a cancelled append kept by %s", h)
	}
	ce.cc.afterTake = nil

	// The log closes under the writer.
	ce.log.Close()
	_, err = ce.w.Append(ctx, created(newIdentity(), "eu-west", &meridianv1.Traits{Email: ptr("closed@example.com")}))
	wantWriterError(t, err, writer.CodeUnavailable, http.StatusServiceUnavailable, "", -1)
	if h := ce.emailHolder(t, "closed@example.com"); h != "" {
		t.Fatalf("claim of a failed append kept by %s", h)
	}
	if m := ce.w.ClaimMetrics(); m.Aborted != 3 || m.AbortErrors != 0 {
		t.Fatalf("claim metrics %+v", m)
	}
}

// A request registering many identities claims every value (in parallel,
// bounded) and settles every identity.
func TestBulkRegistrationClaims(t *testing.T) {
	ce := newClaimsEnv(t)
	ctx := context.Background()
	const n = 40
	var evs []*meridianv1.Event
	for i := range n {
		evs = append(evs, created(newIdentity(), "eu-west", &meridianv1.Traits{
			Email: ptr(fmt.Sprintf("bulk-%d@example.com", i)), Username: ptr(fmt.Sprintf("bulk-%d", i)),
		}))
	}
	if _, err := ce.w.Append(ctx, evs...); err != nil {
		t.Fatal(err)
	}
	for i, ev := range evs {
		if ce.emailHolder(t, fmt.Sprintf("bulk-%d@example.com", i)) != ev.IdentityId ||
			ce.usernameHolder(t, fmt.Sprintf("bulk-%d", i)) != ev.IdentityId {
			t.Fatalf("identity %d: values not claimed by it", i)
		}
	}
	if m := ce.w.ClaimMetrics(); m.Claims != 2*n || m.Settled != n || m.SettleErrors != 0 {
		t.Fatalf("claim metrics %+v", m)
	}
	// One taken value refuses the whole request and gives every claim back.
	evs = evs[:0]
	for i := range n {
		email := fmt.Sprintf("bulk2-%d@example.com", i)
		if i == n-1 {
			email = "bulk-0@example.com"
		}
		evs = append(evs, created(newIdentity(), "eu-west", &meridianv1.Traits{Email: ptr(email)}))
	}
	_, err := ce.w.Append(ctx, evs...)
	wantWriterError(t, err, writer.CodeConflict, http.StatusConflict, "identity_created.traits.email", n-1)
	for i := range n - 1 {
		if h := ce.emailHolder(t, fmt.Sprintf("bulk2-%d@example.com", i)); h != "" {
			t.Fatalf("claim %d of a refused request kept by %s", i, h)
		}
	}
}
