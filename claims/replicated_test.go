package claims_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/claims"
)

// startJSCluster starts three clustered JetStream servers (one domain), as a
// production claims region runs, and returns their client URLs.
func startJSCluster(t *testing.T) []string {
	t.Helper()
	var servers []*server.Server
	// The first server must have a route configured before it starts (a
	// clustered JetStream refuses to start without one), and its peers'
	// ports are not known yet: give it a route to a listener this test
	// holds open, which it keeps redialling harmlessly; the others route to
	// the first, and gossip joins them all.
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hold.Close() })
	seed := &url.URL{Scheme: "nats", Host: hold.Addr().String()}
	for i := range 3 {
		o := &server.Options{
			ServerName: fmt.Sprintf("claims-r%d", i), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			JetStream: true, JetStreamDomain: testDomain, StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "claims", Host: "127.0.0.1", Port: -1},
		}
		o.Routes = []*url.URL{seed}
		s, err := server.NewServer(o)
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
		if i == 0 {
			seed = &url.URL{Scheme: "nats", Host: s.ClusterAddr().String()}
		}
		servers = append(servers, s)
	}
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		current, leader := 0, false
		for _, s := range servers {
			if s.JetStreamIsClustered() && s.JetStreamIsCurrent() {
				current++
			}
			leader = leader || s.JetStreamIsLeader()
		}
		if current == len(servers) && leader {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("JetStream cluster not ready within 30s (%d current, leader %v)", current, leader)
		case <-tick.C:
		}
	}
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	return urls
}

// On a replicated (R3) bucket a contended loser may be told 10164 instead of
// 10071; either way exactly one contender wins and the others are told the
// value is taken. The raw codes are counted to show which the server used.
func TestReplicatedBucketRace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-server JetStream cluster")
	}
	urls := startJSCluster(t)
	ctx := testCtx(t)
	cs := make([]*claims.Claims, 6)
	var raw []jetstream.KeyValue
	for i := range cs {
		js := connectJS(t, urls[i%len(urls)])
		cs[i] = open(t, js, fmt.Sprintf("n%d", i), newClock().Now, func(c *claims.Config) { c.Replicas = 3 })
		kv, err := js.KeyValue(ctx, "claims")
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, kv)
	}
	codes := map[jetstream.ErrorCode]int{}
	for round := range 20 {
		h := newHash()
		ids := make([]string, len(cs))
		errs := make([]error, len(cs))
		for i := range ids {
			ids[i] = newIdentity()
		}
		var wg sync.WaitGroup
		for i := range cs {
			wg.Go(func() { errs[i] = cs[i].Claim(ctx, claims.Email, h, ids[i]) })
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, claims.ErrTaken):
				t.Fatalf("round %d, contender %d: %v; want taken", round, i, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d winners", round, won)
		}

		// The same race with raw Creates on a fresh key, to see the codes.
		key := fmt.Sprintf("race.%d", round)
		rawErrs := make([]error, len(raw))
		for i := range raw {
			wg.Go(func() { _, rawErrs[i] = raw[i].Create(context.Background(), key, []byte("x")) })
		}
		wg.Wait()
		for _, err := range rawErrs {
			var api *jetstream.APIError
			switch {
			case err == nil:
			case errors.As(err, &api):
				codes[api.ErrorCode]++
				if !claims.IsKeyExists(err) {
					t.Errorf("raw create lost with %v, not classified as key exists", err)
				}
			default:
				t.Errorf("raw create: %v", err)
			}
		}
	}
	t.Logf("losers' error codes on an R3 bucket: %v", codes)
}
