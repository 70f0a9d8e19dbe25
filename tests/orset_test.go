package tests

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/meridian-id/meridian/cluster"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// TestORSetRevoke is issue #4 end to end: a revoke removes the grants its
// region had applied when it was written, and no other.
//
//   - A role granted in eu-west while eu-west is cut off, then revoked in
//     us-east with a later stamp: us-east never saw the grant, so once the
//     link heals every region holds the role (the old causal cut at the
//     revoke's stamp would have removed it everywhere).
//   - A role granted in eu-west, applied in us-east, then revoked there: it
//     is gone everywhere.
func TestORSetRevoke(t *testing.T) {
	t.Parallel()
	c := startCluster(t, cluster.Config{WANDelay: 0})
	ctx := testCtx(t, 4*time.Minute)
	eu, us := newClient(t, c.Node(euWest).URL()), newClient(t, c.Node(usEast).URL())
	const role = "auditor"

	unseen, seen := newID(), newID()
	for _, id := range []string{unseen, seen} {
		res := mustAppend(t, ctx, eu, identityCreated(id, euWest, &meridianv1.Traits{Name: ptr("OR-set")}))
		for _, r := range allRegions {
			readApplied(t, ctx, c, r, id, res.Token)
		}
	}

	// A grant the revoke did not observe.
	if !cutLink(t, c, euWest) {
		return // reported by cutLink: the cut did not hold
	}
	grant := mustAppend(t, ctx, eu, roleGranted(unseen, euWest, role))
	if got := readApplied(t, ctx, c, euWest, unseen, grant.Token); !slices.Contains(got.GetRoles(), role) {
		t.Fatalf("eu-west does not hold the role it granted: %v", got.GetRoles())
	}
	revoke := mustAppend(t, ctx, us, roleRevoked(unseen, euWest, role))
	if got := readApplied(t, ctx, c, usEast, unseen, revoke.Token); slices.Contains(got.GetRoles(), role) {
		t.Fatalf("us-east holds a role it never saw granted: %v", got.GetRoles())
	}
	g := logged(t, c, euWest, grant.EventIDs[0])
	rv := logged(t, c, usEast, revoke.EventIDs[0])
	switch {
	case rv.GetHlc() <= g.GetHlc():
		t.Fatalf("precondition: the revoke (hlc %d) is not stamped after the grant (hlc %d)", rv.GetHlc(), g.GetHlc())
	case rv.GetObserved() == nil:
		t.Fatalf("the revoke carries no causal context")
	case rv.GetObserved().GetHlc()[g.GetOriginNode()] >= g.GetHlc():
		t.Fatalf("the revoke's context %v claims us-east had applied the grant (hlc %d of %s) across the cut",
			rv.GetObserved().GetHlc(), g.GetHlc(), g.GetOriginNode())
	}
	c.Embedded.Link(euWest).Restore()
	for _, r := range allRegions {
		if got := readApplied(t, ctx, c, r, unseen, grant.Token, revoke.Token); !slices.Contains(got.GetRoles(), role) {
			t.Errorf("%s: the grant that the revoke did not observe was removed: roles %v", r, got.GetRoles())
		}
	}

	// A grant the revoke observed.
	grant = mustAppend(t, ctx, eu, roleGranted(seen, euWest, role))
	if got := readApplied(t, ctx, c, usEast, seen, grant.Token); !slices.Contains(got.GetRoles(), role) {
		t.Fatalf("us-east applied the grant but does not hold the role: %v", got.GetRoles())
	}
	revoke = mustAppend(t, ctx, us, roleRevoked(seen, euWest, role))
	g = logged(t, c, euWest, grant.EventIDs[0])
	if rv := logged(t, c, usEast, revoke.EventIDs[0]); rv.GetObserved().GetHlc()[g.GetOriginNode()] < g.GetHlc() {
		t.Fatalf("the revoke's context %v does not cover the grant (hlc %d of %s) us-east had applied",
			rv.GetObserved().GetHlc(), g.GetHlc(), g.GetOriginNode())
	}
	for _, r := range allRegions {
		if got := readApplied(t, ctx, c, r, seen, grant.Token, revoke.Token); slices.Contains(got.GetRoles(), role) {
			t.Errorf("%s: the observed grant survived its revoke: roles %v", r, got.GetRoles())
		}
	}
}

// readApplied reads id in region r once r has applied the appends of
// tokens, each waited for within convergeTimeout.
func readApplied(t *testing.T, ctx context.Context, c *cluster.Cluster, r, id string, tokens ...string) *meridianv1.Identity {
	t.Helper()
	var ident *meridianv1.Identity
	for _, tok := range tokens {
		eventually(t, convergeTimeout, r+" applied the writes to "+id, func() (bool, string) {
			res, err := getIdentity(ctx, c.Node(r).URL(), id, tok, 2*time.Second)
			if err != nil {
				return false, err.Error()
			}
			ident = res.Identity
			return res.Status == http.StatusOK, fmt.Sprintf("%d %s", res.Status, res.Body)
		})
	}
	return ident
}

// logged returns the GLOBAL record of event id in region r's log.
func logged(t *testing.T, c *cluster.Cluster, r, id string) *meridianv1.Event {
	t.Helper()
	for _, rec := range readLog(t, c.Node(r)) {
		if rec.Event.GetEventId() == id && rec.Event.GetPart() == meridianv1.Part_PART_GLOBAL {
			return rec.Event
		}
	}
	t.Fatalf("event %s is not in the log of %s", id, r)
	return nil
}
