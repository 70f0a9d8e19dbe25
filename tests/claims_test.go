package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/claims"
	"github.com/meridian-id/meridian/client"
	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/node"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

var claimsRounds = flag.Int("claims.rounds", 100, "rounds of each claims race in TestClaimRaces")

// claimClient is a client of one region that makes a single attempt per
// append, so that every 409 and 503 is seen.
func claimClient(t testing.TB, c *cluster.Cluster, r string) *client.Client {
	return newClient(t, c.Node(r).URL(), client.WithRetry(1, 10*time.Millisecond, 10*time.Millisecond))
}

// claimHolder returns the identity holding an email claim ("" if none),
// read in the claims region's domain.
func claimHolder(t testing.TB, c *cluster.Cluster, email string) string {
	t.Helper()
	cl, err := claimsClient(t, c, usEast, "claims-test")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := cl.Owner(context.Background(), claims.Email, writer.EmailHash(c.HashKey(), email))
	if errors.Is(err, claims.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("read claim: %v", err)
	}
	return rec.IdentityID
}

var claimsClients sync.Map // *cluster.Cluster+region -> *claims.Claims

// claimsClient is a claims client connected to region r's server, bound to
// the claims domain.
func claimsClient(t testing.TB, c *cluster.Cluster, r, nodeID string) (*claims.Claims, error) {
	key := fmt.Sprintf("%p/%s/%s", c, r, nodeID)
	if v, ok := claimsClients.Load(key); ok {
		return v.(*claims.Claims), nil
	}
	nc, err := nats.Connect(c.Embedded.ClientURL(r), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		claimsClients.Delete(key)
		nc.Close()
	})
	cr, _ := c.Policy.ClaimsRegion()
	domain, _ := c.Policy.Domain(cr)
	js, err := jetstream.NewWithDomain(nc, domain)
	if err != nil {
		return nil, err
	}
	cl, err := claims.New(claims.Config{JS: js, ClaimsRegion: cr, Region: r, Node: nodeID})
	if err != nil {
		return nil, err
	}
	claimsClients.Store(key, cl)
	return cl, nil
}

// registration registers a new identity whose home is r (email and
// username are RESIDENT: they are written in the identity's zone).
func registration(r, email string) *meridianv1.Event {
	return identityCreated(newID(), r, &meridianv1.Traits{Email: ptr(email), Name: ptr("racer")})
}

// wantAPIError fails unless err is an API error with this status and code.
func wantAPIError(t testing.TB, err error, status int, code string) *client.APIError {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Fatalf("error %v; want %d %s", err, status, code)
	}
	return ae
}

// TestClaimRaces: the same email registered from all three regions at
// once, round after round: exactly one identity wins each time, the others
// get 409 conflict naming the field. Then email-change races, and erasure
// followed by re-registration.
func TestClaimRaces(t *testing.T) {
	c := startCluster(t, cluster.Config{})
	ctx := testCtx(t, 5*time.Minute)
	clients := map[string]*client.Client{}
	for _, r := range allRegions {
		clients[r] = claimClient(t, c, r)
	}
	rounds := *claimsRounds
	if testing.Short() {
		rounds = min(rounds, 20)
	}

	t.Run("registration", func(t *testing.T) {
		wins := map[string]int{}
		began := time.Now()
		for round := range rounds {
			email := fmt.Sprintf("Race-%d-%s@Example.com", round, randHex(4))
			evs := map[string]*meridianv1.Event{}
			errs := map[string]error{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, r := range allRegions {
				ev := registration(r, email)
				evs[r] = ev
				wg.Go(func() {
					_, err := clients[r].Append(ctx, ev)
					mu.Lock()
					errs[r] = err
					mu.Unlock()
				})
			}
			wg.Wait()
			winner := ""
			for _, r := range allRegions {
				err := errs[r]
				if err == nil {
					if winner != "" {
						t.Fatalf("round %d: both %s and %s registered %s", round, winner, r, email)
					}
					winner = r
					continue
				}
				ae := wantAPIError(t, err, http.StatusConflict, writer.CodeConflict)
				if ae.Field != "identity_created.traits.email" || !strings.Contains(ae.Message, "already registered to another identity") {
					t.Fatalf("round %d: %s: %+v", round, r, ae)
				}
			}
			if winner == "" {
				t.Fatalf("round %d: nobody registered %s: %v", round, email, errs)
			}
			wins[winner]++
			if got := claimHolder(t, c, email); got != evs[winner].IdentityId {
				t.Fatalf("round %d: claim held by %q, winner is %s (%s)", round, got, evs[winner].IdentityId, winner)
			}
		}
		t.Logf("%d rounds in %v; wins by region: %v", rounds, time.Since(began).Round(time.Millisecond), wins)
	})

	t.Run("email change", func(t *testing.T) {
		// One identity per region, each with its own email.
		ids := map[string]string{}
		emails := map[string]string{}
		for _, r := range allRegions {
			ev := registration(r, "changer-"+r+"-"+randHex(4)+"@example.com")
			mustAppend(t, ctx, clients[r], ev)
			ids[r], emails[r] = ev.IdentityId, *ev.GetIdentityCreated().Traits.Email
		}
		changeRounds := max(rounds/5, 5)
		for round := range changeRounds {
			target := fmt.Sprintf("wanted-%d-%s@example.com", round, randHex(4))
			errs := map[string]error{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, r := range allRegions {
				wg.Go(func() {
					_, err := clients[r].Append(ctx, traitsUpdated(ids[r], r, &meridianv1.Traits{Email: ptr(target)}))
					mu.Lock()
					errs[r] = err
					mu.Unlock()
				})
			}
			wg.Wait()
			winner := ""
			for _, r := range allRegions {
				if errs[r] == nil {
					if winner != "" {
						t.Fatalf("round %d: both %s and %s changed to %s", round, winner, r, target)
					}
					winner = r
					continue
				}
				ae := wantAPIError(t, errs[r], http.StatusConflict, writer.CodeConflict)
				if ae.Field != "traits_updated.traits.email" {
					t.Fatalf("round %d: %s: field %q", round, r, ae.Field)
				}
			}
			if winner == "" {
				t.Fatalf("round %d: nobody changed to %s: %v", round, target, errs)
			}
			// The winner's old email is free once the change is durable (it
			// is released before the 200); the losers keep theirs.
			if h := claimHolder(t, c, emails[winner]); h != "" {
				t.Fatalf("round %d: %s's old email still held by %s", round, winner, h)
			}
			for _, r := range allRegions {
				if r != winner {
					if h := claimHolder(t, c, emails[r]); h != ids[r] {
						t.Fatalf("round %d: %s lost the race but its email is held by %q", round, r, h)
					}
				}
			}
			if h := claimHolder(t, c, target); h != ids[winner] {
				t.Fatalf("round %d: %s held by %q, want %s", round, target, h, ids[winner])
			}
			emails[winner] = target
		}
	})

	t.Run("erase then re-register", func(t *testing.T) {
		email := "erased-" + randHex(4) + "@example.com"
		first := registration(euWest, email)
		mustAppend(t, ctx, clients[euWest], first)
		_, err := clients[euCentral].Append(ctx, registration(euCentral, email))
		wantAPIError(t, err, http.StatusConflict, writer.CodeConflict)

		erase := ev(first.IdentityId, euWest)
		erase.Body = &meridianv1.Event_IdentityErased{IdentityErased: &meridianv1.IdentityErased{Reason: "gdpr"}}
		mustAppend(t, ctx, clients[euWest], erase)
		// The erasure reaches the read models (through the projector).
		for _, r := range allRegions {
			eventually(t, convergeTimeout, "erasure of "+first.IdentityId+" in "+r, func() (bool, string) {
				st, err := httpStatus(ctx, c.Node(r).URL()+"/v1/identities/"+first.IdentityId)
				return st == http.StatusGone, fmt.Sprintf("status %d, %v", st, err)
			})
		}
		second := registration(euCentral, email)
		mustAppend(t, ctx, clients[euCentral], second)
		if h := claimHolder(t, c, email); h != second.IdentityId {
			t.Fatalf("re-registered email held by %q, want %s", h, second.IdentityId)
		}
	})
}

func httpStatus(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// ---- crash between claim and append ---------------------------------------

const claimChildEnv = "MERIDIAN_CLAIMS_CRASH_CHILD"

// claimChildConfig is what the parent hands the child (in a file).
type claimChildConfig struct {
	Dir      string                      `json:"dir"`
	Policy   json.RawMessage             `json:"policy"`
	NATSURL  string                      `json:"nats_url"`
	HashKey  []byte                      `json:"hash_key"`
	ZoneKeys map[string]keystore.ZoneKey `json:"zone_keys"`
	Identity string                      `json:"identity"`
	Email    string                      `json:"email"`
	Window   time.Duration               `json:"window"`
}

// blockingClaimer takes the claim for real, reports it, and never returns:
// the process is killed between the claim and the append.
type blockingClaimer struct{ writer.Claimer }

func (b blockingClaimer) Claim(ctx context.Context, ns writer.ClaimNamespace, hash []byte, id string) (writer.ClaimTicket, error) {
	_, err := b.Claimer.Claim(ctx, ns, hash, id)
	if err != nil {
		fmt.Fprintln(os.Stderr, "claim:", err)
		os.Exit(3)
	}
	fmt.Println("claimed", id)
	select {}
}

// TestClaimCrashChild is the child of TestClaimCrashReaper: it runs the
// eu-west node's writer on the node's own data dir (the node is stopped)
// and registers an identity; its Claimer takes the claim and blocks, and
// the parent kills the process with SIGKILL.
func TestClaimCrashChild(t *testing.T) {
	path := os.Getenv(claimChildEnv)
	if path == "" {
		t.Skip("helper process for TestClaimCrashReaper")
	}
	var cfg claimChildConfig
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	pol, err := region.LoadPolicyJSON(cfg.Policy)
	if err != nil {
		t.Fatal(err)
	}
	nodeID, err := os.ReadFile(filepath.Join(cfg.Dir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(eventlog.Options{Dir: filepath.Join(cfg.Dir, "log"), Stamp: writer.StampSequence})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keystore.Open(keystore.Options{Dir: filepath.Join(cfg.Dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(cfg.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	cr, _ := pol.ClaimsRegion()
	domain, _ := pol.Domain(cr)
	js, err := jetstream.NewWithDomain(nc, domain)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(string(nodeID))
	cl, err := claims.New(claims.Config{JS: js, ClaimsRegion: cr, Region: euWest, Node: id})
	if err != nil {
		t.Fatal(err)
	}
	w, err := writer.New(writer.Config{
		Region: euWest, Node: id, Topology: pol, Log: l, Keys: ks, ZoneKeys: cfg.ZoneKeys, HashKey: cfg.HashKey,
		Claimer: blockingClaimer{node.ClaimerFor(cl)}, ClaimWindow: cfg.Window,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.Append(context.Background(), identityCreated(cfg.Identity, euWest, &meridianv1.Traits{Email: ptr(cfg.Email)}))
	t.Fatalf("append returned (%v); the claimer should have blocked", err)
}

// TestClaimCrashReaper: a node killed between claim and append leaves a
// claim no identity holds. The claims region's reaper releases it after
// the grace period, only once the read model has seen the crashed node's
// log past the claim (while the node is down, nothing is released), and
// never releases a live claim.
func TestClaimCrashReaper(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	c := startCluster(t, cluster.Config{HeartbeatInterval: 100 * time.Millisecond})
	ctx := testCtx(t, 3*time.Minute)
	clients := map[string]*client.Client{}
	for _, r := range allRegions {
		clients[r] = claimClient(t, c, r)
	}
	// Live claims, taken before the crash in the crashing region and in
	// another one.
	liveEU := registration(euWest, "live-eu-"+randHex(4)+"@example.com")
	liveUS := registration(usEast, "live-us-"+randHex(4)+"@example.com")
	mustAppend(t, ctx, clients[euWest], liveEU)
	mustAppend(t, ctx, clients[usEast], liveUS)

	// The crash: eu-west's node stops, a child process runs its writer on
	// its data dir, takes the claim and is killed before appending.
	if err := c.StopNode(euWest); err != nil {
		t.Fatal(err)
	}
	const window = time.Second // the child's ClaimWindow, and the reaper's
	crashed := newID()
	crashedEmail := "crashed-" + randHex(4) + "@example.com"
	pol, err := c.Policy.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "child.json")
	b, _ := json.Marshal(claimChildConfig{
		Dir: c.NodeDir(euWest), Policy: pol, NATSURL: c.Embedded.ClientURL(euWest), HashKey: c.HashKey(),
		ZoneKeys: c.ZoneKeys(euWest), Identity: crashed, Email: crashedEmail, Window: window,
	})
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestClaimCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), claimChildEnv+"="+cfgPath)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	defer func() {
		cmd.Process.Kill()
		for range lines {
		}
		cmd.Wait()
	}()
	deadline := time.After(60 * time.Second)
	for claimed := false; !claimed; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("child exited before claiming: %v", cmd.Wait())
			}
			claimed = line == "claimed "+crashed
		case <-deadline:
			t.Fatal("child did not claim within 60s")
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	cmd.Wait()
	if h := claimHolder(t, c, crashedEmail); h != crashed {
		t.Fatalf("crashed claim held by %q, want %s", h, crashed)
	}
	// Nobody else can register it meanwhile.
	_, err = clients[euCentral].Append(ctx, registration(euCentral, crashedEmail))
	wantAPIError(t, err, http.StatusConflict, writer.CodeConflict)

	reaper := c.Node(usEast).ClaimsReaper()
	reaper.Window = window
	sweep := func() claims.SweepResult {
		t.Helper()
		res, err := reaper.Sweep(ctx)
		if err != nil {
			t.Fatalf("sweep: %v", err)
		}
		for _, live := range []*meridianv1.Event{liveEU, liveUS} {
			if h := claimHolder(t, c, *live.GetIdentityCreated().Traits.Email); h != live.IdentityId {
				t.Fatalf("the reaper released a live claim (%s, now held by %q); sweep %+v", live.IdentityId, h, res)
			}
		}
		return res
	}

	// Within the grace period: not looked at.
	reaper.Grace = time.Hour
	if res := sweep(); res.Young < 3 || res.Released != 0 {
		t.Fatalf("sweep within the grace period: %+v", res)
	}
	// Past the grace period, but eu-west's node is down: its log may still
	// hold the append, so nothing of it is released however long it stays
	// down.
	reaper.Grace = time.Millisecond
	if res := sweep(); res.Released != 0 || res.Unsettled == 0 {
		t.Fatalf("sweep with the claimant's node down: %+v", res)
	}
	if h := claimHolder(t, c, crashedEmail); h != crashed {
		t.Fatal("released a claim of a node that is down")
	}

	// The node restarts on its data dir; once us-east has applied its
	// heartbeats past claim time + window, the claim is released.
	if err := c.StartNode(ctx, euWest); err != nil {
		t.Fatal(err)
	}
	clients[euWest] = claimClient(t, c, euWest)
	var last claims.SweepResult
	eventually(t, convergeTimeout, "the reaper releases the crashed claim", func() (bool, string) {
		last = sweep()
		return claimHolder(t, c, crashedEmail) == "", fmt.Sprintf("last sweep %+v", last)
	})
	t.Logf("released by sweep %+v", last)
	// The value is free again.
	mustAppend(t, ctx, clients[euCentral], registration(euCentral, crashedEmail))
	// And still no live claim released, whatever the sweeps.
	for range 3 {
		if res := sweep(); res.Released != 0 {
			t.Fatalf("a sweep released %d claims of live identities: %+v", res.Released, res)
		}
	}
}

// ---- the claims domain cut off -----------------------------------------------

// TestClaimsCutOff: the claims region (us-east) becomes unreachable, by its
// link proxy cutting it off or by its NATS server stopping. A registration
// in eu-west fails closed with 503 claims_unavailable naming us-east, within
// the claims timeout; other writes and reads in eu-west are unaffected.
// Restored, registrations in eu-west succeed again.
func TestClaimsCutOff(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cut         func(t *testing.T, c *cluster.Cluster)
		restore     func(t *testing.T, c *cluster.Cluster)
		usAvailable bool // us-east itself still registers during the cut
	}{{
		name: "link cut",
		cut: func(t *testing.T, c *cluster.Cluster) {
			link := c.Embedded.Link(usEast)
			link.Cut()
			eventually(t, convergeTimeout, "us-east isolated", func() (bool, string) {
				own, hub := c.Embedded.Server(usEast).NumLeafNodes(), c.Embedded.Hub().NumLeafNodes()
				return own == 0 && hub == 2, fmt.Sprintf("us-east has %d leaf connections, the hub %d", own, hub)
			})
			// The cut must hold: us-east's leaf remote redials through its
			// link (and is blackholed) rather than reaching the hub another way.
			eventually(t, convergeTimeout, "us-east redials its cut link", func() (bool, string) {
				m, n := link.Metrics(), c.Embedded.Server(usEast).NumLeafNodes()
				return m.Blackholed > 0 || n > 0, fmt.Sprintf("link %+v, %d leaf connections", m, n)
			})
			if n := c.Embedded.Server(usEast).NumLeafNodes(); n > 0 {
				// The hub must not advertise its leafnode URL
				// (region/embedded.go hubOptions sets LeafNode.NoAdvertise):
				// otherwise the region's leaf remote redials the hub directly,
				// around the link proxy, and the cut tests nothing.
				t.Fatalf("the cut does not hold: us-east reconnected to the hub around its link proxy (%d leaf connections, link %+v); "+
					"region/embedded.go hubOptions must set LeafNode.NoAdvertise", n, link.Metrics())
			}
		},
		restore:     func(t *testing.T, c *cluster.Cluster) { c.Embedded.Link(usEast).Restore() },
		usAvailable: true,
	}, {
		name: "server stopped",
		cut: func(t *testing.T, c *cluster.Cluster) {
			if err := c.Embedded.StopRegion(usEast); err != nil {
				t.Fatal(err)
			}
		},
		restore: func(t *testing.T, c *cluster.Cluster) {
			if err := c.Embedded.StartRegion(testCtx(t, startTimeout), usEast); err != nil {
				t.Fatal(err)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t, cluster.Config{})
			ctx := testCtx(t, 3*time.Minute)
			eu := claimClient(t, c, euWest)
			before := registration(euWest, "before-"+randHex(4)+"@example.com")
			mustAppend(t, ctx, eu, before)

			tc.cut(t, c)
			var took []time.Duration
			for i := range 5 {
				began := time.Now()
				_, err := eu.Append(ctx, registration(euWest, fmt.Sprintf("during-%d-%s@example.com", i, randHex(4))))
				took = append(took, time.Since(began))
				ae := wantAPIError(t, err, http.StatusServiceUnavailable, writer.CodeClaimsUnavailable)
				if !strings.Contains(ae.Message, "claims region us-east unreachable") || ae.Field != "identity_created.traits.email" {
					t.Fatalf("503 does not name the cause: %+v", ae)
				}
				if i == 0 {
					t.Logf("registration in eu-west during the cut: %v", ae)
				}
			}
			// A bound, not a speed target: a cut must not hang a registration.
			if slowest := slices.Max(took); slowest > claims.DefaultTimeout+3*time.Second {
				t.Fatalf("slowest refusal took %v; the claims timeout is %v", slowest, claims.DefaultTimeout)
			}
			t.Logf("refusals took %v", took)

			// Other writes in eu-west, and reads, are unaffected.
			mustAppend(t, ctx, eu, roleGranted(before.IdentityId, euWest, "admin"))
			mustAppend(t, ctx, eu, traitsUpdated(before.IdentityId, euWest, &meridianv1.Traits{Name: ptr("Renamed"), Locale: ptr("de")}))
			mustAppend(t, ctx, eu, identityCreated(newID(), euWest, &meridianv1.Traits{Name: ptr("no email")}))
			eventually(t, convergeTimeout, "eu-west reads during the cut", func() (bool, string) {
				st, err := httpStatus(ctx, c.Node(euWest).URL()+"/v1/identities/"+before.IdentityId)
				return st == http.StatusOK, fmt.Sprintf("status %d, %v", st, err)
			})
			if tc.usAvailable {
				// The claims region itself still decides.
				mustAppend(t, ctx, claimClient(t, c, usEast), registration(usEast, "local-"+randHex(4)+"@example.com"))
			}

			tc.restore(t, c)
			after := registration(euWest, "after-"+randHex(4)+"@example.com")
			eventually(t, convergeTimeout, "eu-west registers again after the restore", func() (bool, string) {
				_, err := eu.Append(ctx, after)
				return err == nil, fmt.Sprint(err)
			})
			if h := claimHolder(t, c, *after.GetIdentityCreated().Traits.Email); h != after.IdentityId {
				t.Fatalf("claim after restore held by %q", h)
			}
			m, _ := c.Node(euWest).ClaimsMetrics()
			if m.Writer.Unavailable < 5 {
				t.Fatalf("eu-west counted %d claims_unavailable refusals, want at least 5 (%+v)", m.Writer.Unavailable, m)
			}
		})
	}
}

// ---- latency -------------------------------------------------------------------

// BenchmarkClaimLatency measures, under 35 ms of simulated WAN delay
// between regions, from the claims region (us-east) and from eu-west: the
// claim alone (a claims client on the region's server, as the node's) and a
// whole registration through the HTTP API (claim, durable append, settle).
// It reports p50/p99 in ms; use a fixed count for stable quantiles:
//
//	go test -run '^$' -bench ClaimLatency -benchtime=200x ./tests/
func BenchmarkClaimLatency(b *testing.B) {
	c := startCluster(b, cluster.Config{WANDelay: 35 * time.Millisecond})
	ctx := testCtx(b, 10*time.Minute)
	for _, r := range []string{usEast, euWest} {
		b.Run("from="+r, func(b *testing.B) {
			cl := claimClient(b, c, r)
			probe, err := claimsClient(b, c, r, "latency-"+r)
			if err != nil {
				b.Fatal(err)
			}
			mustAppend(b, ctx, cl, registration(r, "warmup-"+randHex(4)+"@example.com"))
			take := make([]time.Duration, 0, b.N)
			reg := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				h := writer.EmailHash(c.HashKey(), "probe-"+randHex(8)+"@example.com")
				began := time.Now()
				if _, err := probe.Take(ctx, claims.Email, h, newID()); err != nil {
					b.Fatal(err)
				}
				take = append(take, time.Since(began))
				ev := registration(r, "lat-"+randHex(8)+"@example.com")
				began = time.Now()
				mustAppend(b, ctx, cl, ev)
				reg = append(reg, time.Since(began))
			}
			b.StopTimer()
			slices.Sort(take)
			slices.Sort(reg)
			q := func(d []time.Duration, p int) float64 {
				return float64(d[(len(d)-1)*p/100]) / float64(time.Millisecond)
			}
			b.ReportMetric(q(take, 50), "claim-p50-ms")
			b.ReportMetric(q(take, 99), "claim-p99-ms")
			b.ReportMetric(q(reg, 50), "register-p50-ms")
			b.ReportMetric(q(reg, 99), "register-p99-ms")
			b.ReportMetric(0, "ns/op") // the loop times two different things
		})
	}
}
