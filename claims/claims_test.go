package claims_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/claims"
)

func TestClaimTakenRefreshRelease(t *testing.T) {
	s := startServer(t)
	clk := newClock()
	c := open(t, connectJS(t, s.ClientURL()), "us-east-n1", clk.Now)
	ctx := testCtx(t)
	a, b := newIdentity(), newIdentity()
	h := newHash()

	t1, err := c.Take(ctx, claims.Email, h, a)
	if err != nil || !t1.Created {
		t.Fatalf("first claim: %+v, %v; want created", t1, err)
	}
	// The holder claiming again (a retry) succeeds and refreshes.
	t2, err := c.Take(ctx, claims.Email, h, a)
	if err != nil || t2.Created || t2.Revision <= t1.Revision {
		t.Fatalf("re-claim by holder: %+v, %v; want refreshed at a later revision than %d", t2, err, t1.Revision)
	}
	// Anyone else: taken, with nothing personal in the error.
	err = c.Claim(ctx, claims.Email, h, b)
	var taken *claims.TakenError
	if !errors.As(err, &taken) || !errors.Is(err, claims.ErrTaken) || taken.Namespace != claims.Email {
		t.Fatalf("claim by another identity: %v; want *TakenError{email}", err)
	}
	for _, secret := range []string{a, b, hex.EncodeToString(h)} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("taken error %q leaks %q", err, secret)
		}
	}
	// Namespaces are separate: the same hash as a username is free.
	if err := c.Claim(ctx, claims.Username, h, b); err != nil {
		t.Fatalf("same hash as username: %v", err)
	}

	rec, err := c.Owner(ctx, claims.Email, h)
	if err != nil {
		t.Fatal(err)
	}
	if rec.IdentityID != a || rec.Region != "us-east" || rec.Node != "us-east-n1" || rec.ClaimedAt != testNow ||
		len(rec.Claimants) != 1 || rec.Claimants[0].At != testNow || rec.Revision != t2.Revision {
		t.Fatalf("record %+v", rec)
	}

	// Release only by the holder.
	if err := c.Release(ctx, claims.Email, h, b); !errors.Is(err, claims.ErrNotOwner) {
		t.Fatalf("release by another identity: %v; want ErrNotOwner", err)
	}
	ownerOf(t, c, claims.Email, h, a)
	if err := c.Release(ctx, claims.Email, h, a); err != nil {
		t.Fatalf("release by holder: %v", err)
	}
	ownerOf(t, c, claims.Email, h, "")
	if err := c.Release(ctx, claims.Email, h, a); err != nil {
		t.Fatalf("release of a released claim: %v; want nil", err)
	}
	// A released value (a delete marker in the bucket) can be claimed again.
	if t3, err := c.Take(ctx, claims.Email, h, b); err != nil || !t3.Created {
		t.Fatalf("claim after release: %+v, %v", t3, err)
	}
	ownerOf(t, c, claims.Email, h, b)

	m := c.Metrics()
	if m.Created != 3 || m.Refreshed != 1 || m.Taken != 1 || m.Released != 1 || m.NotOwner != 1 || m.ClaimLatency.Count != 5 {
		t.Fatalf("metrics %+v", m)
	}
	if m.ClaimLatency.P50 <= 0 || m.ClaimLatency.P99 < m.ClaimLatency.P50 || m.ClaimLatency.Max < m.ClaimLatency.P99 {
		t.Fatalf("latency %+v", m.ClaimLatency)
	}
}

// Abort and the reaper delete by revision: a claim refreshed or re-taken
// after it was read is not released.
func TestCompareAndDelete(t *testing.T) {
	s := startServer(t)
	c := open(t, connectJS(t, s.ClientURL()), "n1", newClock().Now)
	ctx := testCtx(t)
	a := newIdentity()
	h := newHash()

	first, err := c.Take(ctx, claims.Email, h, a)
	if err != nil {
		t.Fatal(err)
	}
	// A second append of the same identity refreshes the claim; the first
	// append fails and aborts its ticket: the claim must stay.
	second, err := c.Take(ctx, claims.Email, h, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Abort(ctx, claims.Email, h, first); !errors.Is(err, claims.ErrNotOwner) {
		t.Fatalf("abort of a stale ticket: %v; want ErrNotOwner", err)
	}
	ownerOf(t, c, claims.Email, h, a)
	// Aborting a refresh never releases: the identity held it before.
	if err := c.Abort(ctx, claims.Email, h, second); err != nil {
		t.Fatalf("abort of a refresh: %v", err)
	}
	ownerOf(t, c, claims.Email, h, a)
	if err := c.ReleaseRevision(ctx, claims.Email, h, second.Revision); err != nil {
		t.Fatalf("release at the current revision: %v", err)
	}
	ownerOf(t, c, claims.Email, h, "")
	if err := c.ReleaseRevision(ctx, claims.Email, h, second.Revision); !errors.Is(err, claims.ErrNotOwner) {
		t.Fatalf("release of a deleted claim at an old revision: %v; want ErrNotOwner", err)
	}
	// A fresh take aborted at once is released.
	tk, err := c.Take(ctx, claims.Username, h, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Abort(ctx, claims.Username, h, tk); err != nil {
		t.Fatalf("abort: %v", err)
	}
	ownerOf(t, c, claims.Username, h, "")
}

// Many identities claim one value at once, round after round (each round
// on a released key too, which exercises the create-over-delete-marker
// path): exactly one wins, the others are told it is taken.
func TestClaimRace(t *testing.T) {
	s := startServer(t)
	js := connectJS(t, s.ClientURL())
	// Separate Claims per contender, as separate nodes would have.
	const contenders = 6
	cs := make([]*claims.Claims, contenders)
	for i := range cs {
		cs[i] = open(t, js, fmt.Sprintf("n%d", i), newClock().Now)
	}
	ctx := testCtx(t)
	h := newHash()
	rounds := 30
	if testing.Short() {
		rounds = 5
	}
	for round := range rounds {
		ids := make([]string, contenders)
		errs := make([]error, contenders)
		for i := range ids {
			ids[i] = newIdentity()
		}
		var wg sync.WaitGroup
		for i := range cs {
			wg.Go(func() { errs[i] = cs[i].Claim(ctx, claims.Email, h, ids[i]) })
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: both %d and %d won", round, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, claims.ErrTaken):
				t.Fatalf("round %d: contender %d: %v; want taken", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody won", round)
		}
		ownerOf(t, cs[0], claims.Email, h, ids[winner])
		if err := cs[winner].Release(ctx, claims.Email, h, ids[winner]); err != nil {
			t.Fatal(err)
		}
	}
}

// Both "key exists" codes mean taken; only the classification can be
// produced for 10164 on one server (TestReplicatedBucketRace produces it).
func TestKeyExistsCodes(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want bool
	}{
		"ErrKeyExists":           {jetstream.ErrKeyExists, true},
		"wrapped ErrKeyExists":   {fmt.Errorf("create: %w", jetstream.ErrKeyExists), true},
		"10071":                  {&jetstream.APIError{Code: 400, ErrorCode: 10071, Description: "wrong last sequence: 5"}, true},
		"10164":                  {&jetstream.APIError{Code: 400, ErrorCode: 10164, Description: "wrong last sequence"}, true},
		"wrapped 10164":          {fmt.Errorf("x: %w", &jetstream.APIError{Code: 400, ErrorCode: 10164}), true},
		"ErrKeyRevisionMismatch": {jetstream.ErrKeyRevisionMismatch, true},
		"stream not found":       {&jetstream.APIError{Code: 404, ErrorCode: 10059}, false},
		"timeout":                {context.DeadlineExceeded, false},
		"nil":                    {nil, false},
	} {
		if got := claims.IsKeyExists(tc.err); got != tc.want {
			t.Errorf("%s: IsKeyExists = %v, want %v", name, got, tc.want)
		}
	}
}

// A claims region that does not answer is reported as unavailable, naming
// it, within the timeout; nothing is claimed; once it is back, claims work.
func TestUnavailable(t *testing.T) {
	s := startServer(t)
	url := s.ClientURL()
	const timeout = 500 * time.Millisecond
	c := open(t, connectJS(t, url), "eu-west-n1", newClock().Now, func(cfg *claims.Config) {
		cfg.Region, cfg.Timeout = "eu-west", timeout
	})
	ctx := testCtx(t)
	h, a := newHash(), newIdentity()
	s.Shutdown()
	s.WaitForShutdown()

	began := time.Now()
	err := c.Claim(ctx, claims.Email, h, a)
	took := time.Since(began)
	var ue *claims.UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, claims.ErrUnavailable) || ue.Region != "us-east" {
		t.Fatalf("claim with the server down: %v; want *UnavailableError naming us-east", err)
	}
	if !strings.Contains(err.Error(), "us-east") {
		t.Fatalf("error %q does not name the claims region", err)
	}
	// A sanity bound, not a speed target: the operation is cut at Timeout.
	if took > timeout+2*time.Second {
		t.Fatalf("unavailable after %v; the timeout is %v", took, timeout)
	}
	t.Logf("unavailable after %v (timeout %v): %v", took.Round(time.Millisecond), timeout, err)
	for name, op := range map[string]func() error{
		"release": func() error { return c.Release(ctx, claims.Email, h, a) },
		"owner":   func() error { _, err := c.Owner(ctx, claims.Email, h); return err },
		"settle": func() error {
			return c.Settle(ctx, a, claims.Change{Namespace: claims.Email, Hash: h, Stamp: stamp(testNow, "n")})
		},
		"releaseAll": func() error { return c.ReleaseAll(ctx, a) },
	} {
		if err := op(); !errors.Is(err, claims.ErrUnavailable) {
			t.Errorf("%s with the server down: %v; want ErrUnavailable", name, err)
		}
	}
	if m := c.Metrics(); m.Unavailable < 5 {
		t.Errorf("metrics count %d unavailable operations, want at least 5", m.Unavailable)
	}
}

// Only a Claims with Create makes the bucket; the others bind to it once it
// exists and report unavailable before. Creating twice is harmless.
func TestBucketCreation(t *testing.T) {
	s := startServer(t)
	js := connectJS(t, s.ClientURL())
	ctx := testCtx(t)
	binder, err := claims.New(claims.Config{JS: js, ClaimsRegion: "us-east", Region: "eu-west", Node: "eu-west-n1", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = binder.Claim(ctx, claims.Email, newHash(), newIdentity())
	if !errors.Is(err, claims.ErrUnavailable) || !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("claim before the bucket exists: %v; want unavailable (bucket not found)", err)
	}
	c1 := open(t, js, "us-east-n1", newClock().Now)
	c2 := open(t, js, "us-east-n2", newClock().Now) // idempotent
	kv, err := js.KeyValue(ctx, "claims")
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 1 {
		t.Fatalf("bucket history %d, want 1", st.History())
	}
	info, err := js.Stream(ctx, "KV_claims")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := info.CachedInfo().Config; cfg.Storage != jetstream.FileStorage || cfg.Replicas != 1 {
		t.Fatalf("stream config storage=%v replicas=%d", cfg.Storage, cfg.Replicas)
	}
	h, a := newHash(), newIdentity()
	if err := binder.Claim(ctx, claims.Email, h, a); err != nil {
		t.Fatalf("claim once the bucket exists: %v", err)
	}
	ownerOf(t, c1, claims.Email, h, a)
	ownerOf(t, c2, claims.Email, h, a)
}

func TestInvalidArguments(t *testing.T) {
	s := startServer(t)
	c := open(t, connectJS(t, s.ClientURL()), "n1", newClock().Now)
	ctx := testCtx(t)
	for name, err := range map[string]error{
		"namespace":   c.Claim(ctx, claims.Namespace("phone"), newHash(), newIdentity()),
		"short hash":  c.Claim(ctx, claims.Email, []byte("short"), newIdentity()),
		"no identity": c.Claim(ctx, claims.Email, newHash(), ""),
		"bad id":      c.Claim(ctx, claims.Email, newHash(), "a.b>"),
		"settle hash": c.Settle(ctx, newIdentity(), claims.Change{Namespace: claims.Email, Hash: []byte("x")}),
		"revision":    c.ReleaseRevision(ctx, claims.Email, newHash(), 0),
	} {
		if !errors.Is(err, claims.ErrInvalid) {
			t.Errorf("%s: %v; want ErrInvalid", name, err)
		}
	}
	if _, err := claims.New(claims.Config{}); !errors.Is(err, claims.ErrInvalid) ||
		!strings.Contains(err.Error(), "Config.JS") || !strings.Contains(err.Error(), "Config.Node") {
		t.Errorf("empty config: %v", err)
	}
}
