package tests

import (
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/node"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

// permWait bounds the wait for a permissions violation or a live message.
const permWait = 10 * time.Second

// TestPermissionsEndToEnd runs the whole dev topology with the compiled
// credentials: every server's only user is its region's, with the policy's
// permissions, and every node provisions, ships and replicates with them.
// With us-east's credentials, subscribing to eu resident subjects is denied
// by NATS, and a wildcard subscription never delivers them, while eu-central
// receives the same live eu traffic; nor can us-east publish into eu-west's
// origin subjects or reach eu-west's JetStream API.
//
// region/permissions_test.go (TestRegionCredentials) checks the same
// permissions on a hand-built leaf topology with hand-published messages;
// this is the end-to-end version: region.StartEmbedded (hub, link proxies,
// generated leaf credentials) with real nodes writing real records.
func TestPermissionsEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 2*time.Minute)
	dir := t.TempDir()

	// Permissions depend on regions, zones and domains, not on URLs: compile
	// them from the dev policy before the servers (and their URLs) exist.
	plan, err := region.Compile(region.DefaultDevPolicy())
	if err != nil {
		t.Fatal(err)
	}
	users, passwords := map[string]*server.User{}, map[string]string{}
	for _, r := range allRegions {
		rp, ok := plan.Region(r)
		if !ok {
			t.Fatalf("plan has no region %s", r)
		}
		passwords[r] = "pw-" + randHex(8)
		users[r] = &server.User{Username: r, Password: passwords[r], Permissions: rp.Permissions.ServerPermissions()}
	}
	e, err := region.StartEmbedded(ctx, region.EmbeddedConfig{Dir: filepath.Join(dir, "nats"), Regions: allRegions, Users: users, Logger: testLogger()})
	if err != nil {
		t.Fatalf("start embedded topology: %v", err)
	}
	t.Cleanup(func() { e.Close() })

	urls := map[string]string{}
	for _, r := range allRegions {
		urls[r] = e.ClientURL(r)
	}
	policy, err := region.DevPolicy(urls)
	if err != nil {
		t.Fatal(err)
	}
	if full, err := region.Compile(policy); err != nil {
		t.Fatal(err)
	} else {
		for _, r := range allRegions {
			a, _ := full.Region(r)
			b, _ := plan.Region(r)
			if !reflect.DeepEqual(a.Permissions, b.Permissions) {
				t.Fatalf("permissions of %s depend on the NATS URLs: %+v vs %+v", r, a.Permissions, b.Permissions)
			}
		}
	}

	// A node per region, connected with its region's credentials.
	hashKey := randBytes(32)
	zoneKeys := map[string]keystore.ZoneKey{}
	for _, z := range policy.Zones() {
		zk := keystore.ZoneKey{ID: z + "-test-1"}
		copy(zk.Key[:], randBytes(keystore.KeySize))
		zoneKeys[z] = zk
	}
	nodes := map[string]*node.Node{}
	nodeErrs := &asyncErrors{}
	for _, r := range allRegions {
		zone, _ := policy.ZoneOf(r)
		n, err := node.Start(ctx, node.Config{
			Region: r, Policy: policy, Dir: filepath.Join(dir, r),
			NATSOptions: []nats.Option{nats.UserInfo(r, passwords[r]), nats.ErrorHandler(nodeErrs.handler(r))},
			ZoneKeys:    map[string]keystore.ZoneKey{zone: zoneKeys[zone]},
			HashKey:     hashKey, Logger: testLogger().With("region", r),
		})
		if err != nil {
			t.Fatalf("start node %s: %v", r, err)
		}
		t.Cleanup(func() { n.Close() })
		nodes[r] = n
	}
	for _, r := range allRegions {
		if err := nodes[r].WaitReady(ctx); err != nil {
			t.Fatalf("node %s does not provision with its region's credentials: %v", r, err)
		}
	}

	us, usErrs := permConnect(t, e, usEast, passwords[usEast])
	ec, ecErrs := permConnect(t, e, euCentral, passwords[euCentral])
	ew, ewErrs := permConnect(t, e, euWest, passwords[euWest])

	// Denied outright: explicit subscriptions to eu resident subjects.
	for _, subj := range []string{"meridian.eu-west.eu.>", region.Subject(euWest, "eu", "identity_created"), region.ResidentFilter("eu")} {
		if _, err := us.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		wantViolation(t, usErrs, "subscribe", subj)
	}
	// Nor may us-east forge eu-west's records or reach eu-west's streams.
	for _, subj := range []string{region.Subject(euWest, "eu", "identity_created"), region.DomainAPIPrefix(euWest) + ".CONSUMER.CREATE." + region.InboxStream(euWest)} {
		if err := us.Publish(subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		wantViolation(t, usErrs, "publish", subj)
	}
	// And the other way round: eu-west cannot subscribe to us resident data.
	if _, err := ew.SubscribeSync("meridian.us-east.us.>"); err != nil {
		t.Fatal(err)
	}
	wantViolation(t, ewErrs, "subscribe", "meridian.us-east.us.>")

	// Allowed: a wildcard in us-east, and eu resident subjects in eu-central.
	usAll, err := us.SubscribeSync(region.SubjectRoot + ".>")
	if err != nil {
		t.Fatal(err)
	}
	ecEU, err := ec.SubscribeSync(region.ZoneFilter(euWest, "eu"))
	if err != nil {
		t.Fatal(err)
	}
	for _, nc := range []*nats.Conn{us, ec} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Both interests have reached eu-west (through the hub) before it
	// writes: the global subject only us-east's wildcard covers.
	eventually(t, permWait, "interest of us-east and eu-central at eu-west", func() (bool, string) {
		acc := e.Server(euWest).GlobalAccount()
		g, z := acc.SubscriptionInterest(region.Subject(euWest, region.GlobalZone, "role_granted")), acc.SubscriptionInterest(region.Subject(euWest, "eu", "identity_created"))
		return g && z, fmt.Sprintf("global interest %v, eu interest %v", g, z)
	})

	// eu-west writes an eu identity (resident parts and a key record), then
	// a GLOBAL-only event: the shipper publishes in log order, so once
	// us-east sees the latter it has been offered everything before it.
	cl := newClient(t, nodes[euWest].URL())
	id := newID()
	name := "Permission " + randHex(8)
	mustAppend(t, ctx, cl, identityCreated(id, euWest, &meridianv1.Traits{Name: ptr(name), Email: ptr("perm." + randHex(6) + "@example.eu")}))
	barrier := roleGranted(id, euWest, "barrier")
	mustAppend(t, ctx, cl, barrier)

	var usSaw []string
	deadline := time.Now().Add(permWait)
	for {
		m, err := usAll.NextMsg(time.Until(deadline))
		if err != nil {
			// Say whether eu-west shipped the barrier at all.
			var shipped []string
			if js, jerr := jetstream.NewWithDomain(ew, euWest); jerr == nil {
				msgs, rerr := (&regionJS{js: map[string]jetstream.JetStream{euWest: js}}).read(ctx, euWest, region.OriginStream(euWest))
				for _, m := range msgs {
					shipped = append(shipped, m.Subject+" "+m.ID)
				}
				if rerr != nil {
					shipped = append(shipped, rerr.Error())
				}
			}
			t.Fatalf("us-east wildcard subscriber: %v after %v; want the GLOBAL barrier %s:g (origin-%s holds %v)", err, usSaw, barrier.EventId, euWest, shipped)
		}
		usSaw = append(usSaw, m.Subject)
		sp, err := region.ParseSubject(m.Subject)
		if err != nil {
			t.Fatalf("us-east received %s: %v", m.Subject, err)
		}
		if sp.Zone == "eu" {
			t.Errorf("us-east's wildcard subscriber received eu resident subject %s", m.Subject)
		}
		if m.Header.Get(jetstream.MsgIDHeader) == barrier.EventId+":g" {
			break
		}
	}
	// eu-central received the same traffic's eu part live: the key record
	// and the sealed resident part.
	want := map[string]bool{region.KeySubject(euWest, "eu", id): false, region.Subject(euWest, "eu", "identity_created"): false}
	deadline = time.Now().Add(permWait)
	for missing := 2; missing > 0; {
		m, err := ecEU.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("eu-central's subscriber to eu-west's eu subjects: %v; still waiting for %v", err, want)
		}
		ev, err := decodeEvent(m.Data)
		if err != nil {
			t.Fatalf("eu-central received an undecodable %s: %v", m.Subject, err)
		}
		if seen, ok := want[m.Subject]; ok && !seen && ev.GetIdentityId() == id {
			want[m.Subject] = true
			missing--
		}
		if strings.Contains(string(m.Data), name) {
			t.Errorf("eu traffic on %s carries the resident name in plaintext", m.Subject)
		}
	}
	select {
	case err := <-ecErrs:
		t.Errorf("eu-central's subscriber saw an error: %v", err)
	default:
	}

	// Replication works under the permissions: us-east's inbox gets the
	// GLOBAL parts, eu-central's inbox everything.
	logs := map[string][]record{euWest: readLog(t, nodes[euWest])}
	for _, r := range []string{usEast, euCentral} {
		js, err := jetstream.NewWithDomain(map[string]*nats.Conn{usEast: us, euCentral: ec}[r], e.Domain(r))
		if err != nil {
			t.Fatal(err)
		}
		rj := &regionJS{js: map[string]jetstream.JetStream{r: js}}
		want := map[string]record{}
		for _, rec := range logs[euWest] {
			if z, _ := policy.ZoneOf(r); rec.Zone() == writer.GlobalZone || rec.Zone() == z {
				want[rec.ID] = rec
			}
		}
		eventually(t, convergeTimeout, "inbox of "+r+" holds eu-west's records", func() (bool, string) {
			msgs, err := rj.read(ctx, r, region.InboxStream(r))
			if err != nil {
				return false, err.Error()
			}
			k, sample := missingIDs(want, idCounts(msgs), 5)
			return k == 0, fmt.Sprintf("misses %d of %d, e.g. %v", k, len(want), sample)
		})
	}

	// The nodes run within their credentials: once every projector has
	// polled every origin for its lag, no node has hit a permissions
	// violation, and each knows how many events it is behind every origin.
	eventually(t, permWait, "every projector polled every origin", func() (bool, string) {
		for _, r := range allRegions {
			st := nodes[r].Status()
			if len(st.Origins) < len(allRegions) {
				return false, fmt.Sprintf("%s reports %d origins", r, len(st.Origins))
			}
			for _, o := range st.Origins {
				if o.PolledAt == 0 {
					return false, fmt.Sprintf("%s has not polled %s", r, o.Region)
				}
			}
		}
		return true, ""
	})
	for _, err := range nodeErrs.all() {
		t.Errorf("node connection: %v", err)
	}
	for _, r := range allRegions {
		for _, o := range nodes[r].Status().Origins {
			if o.PollError != "" || o.LagEvents == nil {
				t.Errorf("%s cannot tell its events lag from origin %s with its compiled credentials: %s", r, o.Region, o.PollError)
			}
		}
	}
}

// asyncErrors collects the asynchronous errors of NATS connections.
type asyncErrors struct {
	mu   sync.Mutex
	errs []error
}

func (a *asyncErrors) handler(name string) nats.ErrHandler {
	return func(_ *nats.Conn, _ *nats.Subscription, err error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if len(a.errs) < 20 {
			a.errs = append(a.errs, fmt.Errorf("%s: %w", name, err))
		}
	}
}

func (a *asyncErrors) all() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]error(nil), a.errs...)
}

// permConnect connects to region r's server with its credentials and
// returns the connection and its asynchronous errors (where NATS reports
// permission violations).
func permConnect(t *testing.T, e *region.Embedded, r, password string) (*nats.Conn, <-chan error) {
	t.Helper()
	errs := make(chan error, 64)
	nc, err := nats.Connect(e.ClientURL(r), nats.UserInfo(r, password), nats.Name("tests "+r),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect to %s with its credentials: %v", r, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// wantViolation waits for NATS to report a permissions violation of op
// ("subscribe" or "publish") on subject. The server names both only in the
// message ("Permissions Violation for Subscription to ...").
func wantViolation(t *testing.T, errs <-chan error, op, subject string) {
	t.Helper()
	opWord := map[string]string{"subscribe": "Subscription to", "publish": "Publish to"}[op]
	timeout := time.NewTimer(permWait)
	defer timeout.Stop()
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				if !strings.Contains(err.Error(), opWord) {
					t.Errorf("%s %s: violation %q does not name the operation", op, subject, err)
				}
				return
			}
			t.Logf("while waiting for the %s violation of %s: %v", op, subject, err)
		case <-timeout.C:
			t.Fatalf("%s %s: no permissions violation within %v", op, subject, permWait)
		}
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
