package tests

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/client"
	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/ops"
	"github.com/meridian-id/meridian/ops/inspect"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// Helpers of the operator-toolkit suites (ops_*_test.go). Every name here
// starts with "ops" so that it never collides with the other suites'.

// opsStartCluster starts the three regions in a temp dir.
func opsStartCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Config{Dir: t.TempDir(), Logger: opsLogger()})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

// opsDeployment describes the running cluster to the operator tools.
func opsDeployment(t *testing.T, c *cluster.Cluster) *ops.Deployment {
	t.Helper()
	eps := map[string]ops.Endpoint{}
	for r, ep := range c.Endpoints() {
		eps[r] = ops.Endpoint{HTTP: ep.HTTP, NATS: ep.NATS}
	}
	d, err := ops.NewDeployment(c.Policy, eps)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func opsCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func opsEventID() string { return uuid.Must(uuid.NewV7()).String() }

func opsEvent(id, home string) *meridianv1.Event {
	return &meridianv1.Event{EventId: opsEventID(), IdentityId: id, HomeRegion: home}
}

func opsCreated(id, home, email, name string) *meridianv1.Event {
	e := opsEvent(id, home)
	e.Body = &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{HomeRegion: home,
		Traits: &meridianv1.Traits{Email: proto.String(email), Name: proto.String(name), Locale: proto.String("de-DE")}}}
	return e
}

func opsRenamed(id, home, name string) *meridianv1.Event {
	e := opsEvent(id, home)
	e.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: proto.String(name)}}}
	return e
}

func opsLocale(id, home, locale string) *meridianv1.Event {
	e := opsEvent(id, home)
	e.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Locale: proto.String(locale)}}}
	return e
}

func opsRole(id, home, role string) *meridianv1.Event {
	e := opsEvent(id, home)
	e.Body = &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: role}}
	return e
}

// opsIdentity is an identity the suites wrote.
type opsIdentity struct {
	ID, Home, Email, Name string
}

// opsCreate creates n identities spread over the regions (each written in
// its home region) with RESIDENT traits, and updates some of them.
func opsCreate(t *testing.T, ctx context.Context, c *cluster.Cluster, n int, tag string) []opsIdentity {
	t.Helper()
	return opsCreateIn(t, ctx, c, n, tag, euWest, euCentral, usEast)
}

// opsCreateIn is opsCreate with identities homed in the given regions.
func opsCreateIn(t *testing.T, ctx context.Context, c *cluster.Cluster, n int, tag string, homes ...string) []opsIdentity {
	t.Helper()
	var out []opsIdentity
	byHome := map[string][]*meridianv1.Event{}
	for i := range n {
		home := homes[i%len(homes)]
		id := opsIdentity{ID: uuid.NewString(), Home: home,
			Email: fmt.Sprintf("%s-%d-%s@example.test", tag, i, opsHex(4)), Name: fmt.Sprintf("Person %s %d %s", tag, i, opsHex(4))}
		out = append(out, id)
		byHome[home] = append(byHome[home], opsCreated(id.ID, home, id.Email, id.Name))
		if i%3 == 0 {
			byHome[home] = append(byHome[home], opsRole(id.ID, home, "reader"))
		}
	}
	for home, evs := range byHome {
		cl := opsClient(t, c, home)
		for len(evs) > 0 {
			k := min(len(evs), 50)
			if _, err := cl.Append(ctx, evs[:k]...); err != nil {
				t.Fatalf("append in %s: %v", home, err)
			}
			evs = evs[k:]
		}
	}
	return out
}

func opsClient(t *testing.T, c *cluster.Cluster, r string) *client.Client {
	t.Helper()
	cl, err := client.New(c.Node(r).URL())
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// opsSources are the running nodes as digest sources.
func opsSources(t *testing.T, d *ops.Deployment, regions ...string) []ops.DigestSource {
	t.Helper()
	var out []ops.DigestSource
	for _, name := range regions {
		r, _ := d.Region(name)
		cl, err := ops.NewNodeClient(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ops.NodeSource{Client: cl})
	}
	return out
}

// opsWaitConverged waits until every region holds the same GLOBAL states
// of at least want identities and the eu regions the same RESIDENT states.
func opsWaitConverged(t *testing.T, ctx context.Context, d *ops.Deployment, want int) {
	t.Helper()
	opsEventually(t, 60*time.Second, "regions converged", func() (bool, string) {
		g, err := ops.Compare(ctx, inspect.KindGlobal, opsSources(t, d, allRegions...), ops.CompareOptions{})
		if err != nil {
			return false, err.Error()
		}
		for r, n := range g.Identities {
			if n < want {
				return false, fmt.Sprintf("%s holds %d of %d identities", r, n, want)
			}
		}
		if !g.Equal {
			return false, fmt.Sprintf("global: %d identities differ, e.g. %+v", len(g.Differences), g.Differences[0])
		}
		res, err := ops.Compare(ctx, inspect.KindResident, opsSources(t, d, euWest, euCentral), ops.CompareOptions{})
		if err != nil {
			return false, err.Error()
		}
		if !res.Equal {
			return false, fmt.Sprintf("resident: %d identities differ, e.g. %+v", len(res.Differences), res.Differences[0])
		}
		return true, ""
	})
}

// opsReport renders a report for failure messages.
func opsReport(v any) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%+v", v)
	return b.String()
}

func opsLogger() *slog.Logger {
	if lvl := os.Getenv("MERIDIAN_TEST_LOG"); lvl != "" {
		var l slog.Level
		_ = l.UnmarshalText([]byte(lvl))
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	}
	return slog.New(slog.DiscardHandler)
}

func opsHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// opsEventually polls cond (every 50 ms) until it holds; past timeout it
// fails the test with cond's account of what is missing.
func opsEventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v: %s", what, timeout, why)
		}
		<-tick.C
	}
}

// opsWaitShipped waits until region r's shipper has nothing left to ship.
func opsWaitShipped(t *testing.T, c *cluster.Cluster, r string) {
	t.Helper()
	n := c.Node(r)
	opsEventually(t, 30*time.Second, r+" shipped its log", func() (bool, string) {
		st := n.Status()
		return st.Shipper != nil && st.Shipper.Backlog == 0, opsReport(st.Shipper)
	})
}

// opsAllJS connects to every region's domain; the connections close with
// the test.
func opsAllJS(t *testing.T, ctx context.Context, d *ops.Deployment) map[string]jetstream.JetStream {
	t.Helper()
	conns := d.Connect()
	t.Cleanup(conns.Close)
	jss := map[string]jetstream.JetStream{}
	for _, name := range allRegions {
		js, err := conns.JS(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		jss[name] = js
	}
	return jss
}
