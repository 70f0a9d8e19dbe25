package tests

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/meridian-id/meridian/cluster"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// TestReadYourWrites appends in eu-west and reads with the append's token in
// eu-central across 35 ms links: the read returns the write. us-east, outside
// the zone, returns the GLOBAL part of it. With eu-central's link cut, the
// read answers 503 not_replicated naming eu-west once its wait bound is over,
// never stale data; after the link is restored the same read succeeds.
func TestReadYourWrites(t *testing.T) {
	t.Parallel()
	c := startCluster(t, cluster.Config{WANDelay: 35 * time.Millisecond})
	ctx := testCtx(t, 3*time.Minute)
	west, central, us := c.Node(euWest).URL(), c.Node(euCentral).URL(), c.Node(usEast).URL()
	cl := newClient(t, west)
	id := newID()

	// Replication must run end to end first: a fresh cluster's sources may
	// take one NATS retry interval to start.
	res := mustAppend(t, ctx, cl, identityCreated(id, euWest, &meridianv1.Traits{Name: ptr("Initial"), Locale: ptr("en")}))
	for _, url := range []string{central, us} {
		eventually(t, convergeTimeout, "the first write readable at "+url, func() (bool, string) {
			r, err := getIdentity(ctx, url, id, res.Token, 0)
			if err != nil {
				return false, err.Error()
			}
			return r.Status == http.StatusOK, fmt.Sprintf("%d %s", r.Status, r.Body)
		})
	}

	// Each write is read back at once. The wait bound is generous so that a
	// loaded machine cannot fail the test; the log shows the actual waits.
	const readBound = 10 * time.Second
	var waits []time.Duration
	for i := range 5 {
		name, locale := fmt.Sprintf("Name %d %s", i, randHex(4)), fmt.Sprintf("x-%d", i)
		res := mustAppend(t, ctx, cl, traitsUpdated(id, euWest, &meridianv1.Traits{Name: ptr(name), Locale: ptr(locale)}))
		r, err := getIdentity(ctx, central, id, res.Token, readBound)
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, r.Elapsed)
		if r.Status != http.StatusOK || r.Identity.GetTraits().GetName() != name || r.Identity.GetTraits().GetLocale() != locale {
			t.Fatalf("write %d read in eu-central with its token: %d %s; want 200 with name %q and locale %q", i, r.Status, r.Body, name, locale)
		}
		if got := r.Header.Get("Meridian-Resident"); got != "held" {
			t.Errorf("eu-central answers Meridian-Resident %q, want held", got)
		}
		r, err = getIdentity(ctx, us, id, res.Token, readBound)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.Status != http.StatusOK || r.Identity.GetTraits().GetLocale() != locale:
			t.Fatalf("write %d read in us-east with its token: %d %s; want 200 with locale %q", i, r.Status, r.Body, locale)
		case r.Identity.GetTraits().Name != nil:
			t.Errorf("us-east, outside zone eu, answers the resident name %q", r.Identity.GetTraits().GetName())
		case r.Header.Get("Meridian-Resident") != "not-held":
			t.Errorf("us-east answers Meridian-Resident %q, want not-held", r.Header.Get("Meridian-Resident"))
		}
	}

	t.Logf("reads with a token in eu-central answered after %v", waits)

	// Partitioned: the answer is the not-replicated status once the bound
	// is over, naming the region that took the write.
	if !cutLink(t, c, euCentral) {
		t.FailNow() // reported by cutLink: without isolation the rest means nothing
	}
	name := "Written during the cut " + randHex(4)
	res = mustAppend(t, ctx, cl, traitsUpdated(id, euWest, &meridianv1.Traits{Name: ptr(name)}))
	const bound = 500 * time.Millisecond
	r, err := getIdentity(ctx, central, id, res.Token, bound)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case r.Status != http.StatusServiceUnavailable || r.Code != "not_replicated" || r.HomeRegion != euWest:
		t.Fatalf("read in cut-off eu-central with the token: %d %s; want 503 not_replicated naming %s", r.Status, r.Body, euWest)
	case r.Elapsed < bound:
		t.Errorf("not_replicated after %v, before the %v bound", r.Elapsed, bound)
	case r.Header.Get("Retry-After") == "":
		t.Errorf("not_replicated without Retry-After")
	}
	t.Logf("not_replicated answered after %v (bound %v)", r.Elapsed.Round(time.Millisecond), bound)
	// The region that took the write reads it at once.
	if r, err := getIdentity(ctx, west, id, res.Token, 0); err != nil || r.Status != http.StatusOK || r.Identity.GetTraits().GetName() != name {
		t.Fatalf("read in eu-west with its own token: %v %d %s", err, r.Status, r.Body)
	}

	c.Embedded.Link(euCentral).Restore()
	eventually(t, convergeTimeout, "the write made during the cut readable in eu-central", func() (bool, string) {
		r, err := getIdentity(ctx, central, id, res.Token, 0)
		if err != nil {
			return false, err.Error()
		}
		if r.Status == http.StatusOK && r.Identity.GetTraits().GetName() != name {
			t.Fatalf("eu-central answers 200 with name %q for a token of the write of %q", r.Identity.GetTraits().GetName(), name)
		}
		return r.Status == http.StatusOK, fmt.Sprintf("%d %s", r.Status, r.Body)
	})
}
