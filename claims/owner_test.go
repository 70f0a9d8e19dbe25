package claims_test

import (
	"encoding/hex"
	"testing"

	"github.com/meridian-id/meridian/claims"
)

// The owner register is how an old value is released after a change: the
// writer settles each durable change, the register keeps the last writer by
// stamp and whichever value lost is released.
func TestSettleReleasesTheLoser(t *testing.T) {
	s := startServer(t)
	c := open(t, connectJS(t, s.ClientURL()), "n1", newClock().Now)
	ctx := testCtx(t)
	id := newIdentity()
	a, b, late, user := newHash(), newHash(), newHash(), newHash()

	take := func(ns claims.Namespace, h []byte) {
		t.Helper()
		if err := c.Claim(ctx, ns, h, id); err != nil {
			t.Fatal(err)
		}
	}
	settle := func(chs ...claims.Change) {
		t.Helper()
		if err := c.Settle(ctx, id, chs...); err != nil {
			t.Fatal(err)
		}
	}
	register := func(ns claims.Namespace) string {
		t.Helper()
		o, err := c.OwnerOf(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return o.Values[ns].Hash
	}

	// Created with email a and a username, settled in one call.
	take(claims.Email, a)
	take(claims.Username, user)
	created := stamp(testNow, "n1")
	settle(claims.Change{Namespace: claims.Email, Hash: a, Stamp: created, Creates: true},
		claims.Change{Namespace: claims.Username, Hash: user, Stamp: created, Creates: true})
	if register(claims.Email) != hex.EncodeToString(a) || register(claims.Username) != hex.EncodeToString(user) {
		t.Fatal("register does not hold the created values")
	}
	settle(claims.Change{Namespace: claims.Email, Hash: a, Stamp: created, Creates: true}) // a retry changes nothing
	ownerOf(t, c, claims.Email, a, id)

	// Changed to b: a is released once the change is settled.
	take(claims.Email, b)
	ownerOf(t, c, claims.Email, a, id)
	settle(claims.Change{Namespace: claims.Email, Hash: b, Stamp: stamp(testNow+20, "n1")})
	ownerOf(t, c, claims.Email, a, "")
	ownerOf(t, c, claims.Email, b, id)

	// A concurrent change elsewhere with an earlier stamp settles late: it
	// lost the last-writer-wins race, so its own value is released and b
	// stays.
	take(claims.Email, late)
	settle(claims.Change{Namespace: claims.Email, Hash: late, Stamp: stamp(testNow+10, "n2")})
	ownerOf(t, c, claims.Email, late, "")
	ownerOf(t, c, claims.Email, b, id)
	if register(claims.Email) != hex.EncodeToString(b) {
		t.Fatal("a losing change replaced the register")
	}

	// Clearing the email releases b; the username is untouched.
	settle(claims.Change{Namespace: claims.Email, Hash: nil, Stamp: stamp(testNow+30, "n1")})
	ownerOf(t, c, claims.Email, b, "")
	ownerOf(t, c, claims.Username, user, id)
	if register(claims.Email) != "" {
		t.Fatal("register keeps a cleared email")
	}

	// An old value taken meanwhile by someone else is not released.
	other := newIdentity()
	take(claims.Email, a)
	settle(claims.Change{Namespace: claims.Email, Hash: a, Stamp: stamp(testNow+40, "n1")})
	if err := c.Release(ctx, claims.Email, a, id); err != nil {
		t.Fatal(err)
	}
	if err := c.Claim(ctx, claims.Email, a, other); err != nil {
		t.Fatal(err)
	}
	take(claims.Email, b)
	settle(claims.Change{Namespace: claims.Email, Hash: b, Stamp: stamp(testNow+50, "n1")})
	ownerOf(t, c, claims.Email, a, other)
}

// Erasure releases everything the register lists, and every later change
// of the erased identity loses.
func TestReleaseAll(t *testing.T) {
	s := startServer(t)
	c := open(t, connectJS(t, s.ClientURL()), "n1", newClock().Now)
	ctx := testCtx(t)
	id := newIdentity()
	email, user, late := newHash(), newHash(), newHash()
	for ns, h := range map[claims.Namespace][]byte{claims.Email: email, claims.Username: user} {
		if err := c.Claim(ctx, ns, h, id); err != nil {
			t.Fatal(err)
		}
		if err := c.Settle(ctx, id, claims.Change{Namespace: ns, Hash: h, Stamp: stamp(testNow, "n1")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.ReleaseAll(ctx, id); err != nil {
		t.Fatal(err)
	}
	ownerOf(t, c, claims.Email, email, "")
	ownerOf(t, c, claims.Username, user, "")
	o, err := c.OwnerOf(ctx, id)
	if err != nil || !o.Erased || len(o.Values) != 0 {
		t.Fatalf("register after erasure: %+v, %v", o, err)
	}
	if err := c.ReleaseAll(ctx, id); err != nil {
		t.Fatalf("second erasure: %v", err)
	}
	// A change appended concurrently with the erasure settles after it.
	if err := c.Claim(ctx, claims.Email, late, id); err != nil {
		t.Fatal(err)
	}
	if err := c.Settle(ctx, id, claims.Change{Namespace: claims.Email, Hash: late, Stamp: stamp(testNow+99, "n1")}); err != nil {
		t.Fatal(err)
	}
	ownerOf(t, c, claims.Email, late, "")
	// The value is free for a new identity.
	if err := c.Claim(ctx, claims.Email, email, newIdentity()); err != nil {
		t.Fatalf("re-registration after erasure: %v", err)
	}
	// An identity that never settled anything erases cleanly too.
	if err := c.ReleaseAll(ctx, newIdentity()); err != nil {
		t.Fatal(err)
	}
}
