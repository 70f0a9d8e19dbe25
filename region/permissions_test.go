package region

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestServerPermissions(t *testing.T) {
	p := Permissions{Publish: SubjectPermissions{Allow: []string{"a.>"}}}
	sp := p.ServerPermissions()
	if sp.Publish == nil || len(sp.Publish.Allow) != 1 || sp.Publish.Deny != nil || sp.Subscribe != nil {
		t.Fatalf("ServerPermissions = %+v", sp)
	}
	sp.Publish.Allow[0] = "changed"
	if p.Publish.Allow[0] != "a.>" {
		t.Fatal("ServerPermissions aliases the lists")
	}
}

// permUsers gives each region server a user per region with its compiled
// permissions (password = name) and an unrestricted "admin".
func permUsers(plan *Plan) func(string, *server.Options) {
	return func(_ string, o *server.Options) {
		o.Users = append(o.Users, &server.User{Username: "admin", Password: "admin"})
		for _, rp := range plan.Regions {
			o.Users = append(o.Users, &server.User{Username: rp.Region, Password: rp.Region, Permissions: rp.Permissions.ServerPermissions()})
		}
	}
}

// permConn connects as user and returns the connection and a channel of
// its asynchronous errors (permission violations arrive there).
func permConn(t *testing.T, s *server.Server, user string) (*nats.Conn, <-chan error) {
	t.Helper()
	errs := make(chan error, 16)
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, user),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

func wantPermissionError(t *testing.T, errs <-chan error, what, subject string) {
	t.Helper()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subject) {
			t.Fatalf("%s %s: got %v, want a permissions violation", what, subject, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s %s: no permissions violation", what, subject)
	}
}

func TestRegionCredentials(t *testing.T) {
	p := DefaultDevPolicy()
	plan, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	topo := startProvTopo(t, p, permUsers(plan))
	ctx := provCtx(t)
	us := topo.servers["us-east"]

	// The us-east credentials are enough to provision and use its own
	// JetStream, plain and through its domain prefix.
	nc, errs := permConn(t, us, "us-east")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Provision(ctx, plan, map[string]jetstream.JetStream{"us-east": js}, ProvisionOptions{}); err != nil {
		t.Fatalf("provision with us-east credentials: %v", err)
	}
	subj := Subject("us-east", "us", "identity_created")
	if _, err := js.Publish(ctx, subj, []byte("x"), jetstream.WithMsgID("e1:g")); err != nil {
		t.Fatalf("publish own origin subject: %v", err)
	}
	jsd, err := jetstream.NewWithDomain(nc, "us-east")
	if err != nil {
		t.Fatal(err)
	}
	cons, err := jsd.OrderedConsumer(ctx, OriginStream("us-east"), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer through the domain prefix: %v", err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil || msg.Subject() != subj {
		t.Fatalf("consume own origin: %v, %v", msg, err)
	}

	// Other regions' subjects: no publishing, no subscribing to eu resident data.
	if err := nc.Publish(Subject("eu-west", GlobalZone, "identity_created"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	wantPermissionError(t, errs, "publish", "meridian.eu-west.global.identity_created")
	if _, err := nc.SubscribeSync(Subject("eu-west", "eu", "identity_created")); err != nil {
		t.Fatal(err)
	}
	wantPermissionError(t, errs, "subscribe", "meridian.eu-west.eu.identity_created")
	if _, err := nc.SubscribeSync("meridian.*.eu.>"); err != nil {
		t.Fatal(err)
	}
	wantPermissionError(t, errs, "subscribe", "meridian.*.eu.>")
	// Nor reach another domain's streams through its API: no consumers, no
	// message gets (their subject filter is in the payload, out of sight of
	// permissions), not even stream info.
	for _, subj := range crossDomainDenied("eu-west") {
		if err := nc.Publish(subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		wantPermissionError(t, errs, "publish", subj)
	}
	// Only another domain's account info (no message data) is allowed: the
	// projector's reachability probe.
	euJS, err := jetstream.NewWithDomain(nc, "eu-west")
	if err != nil {
		t.Fatal(err)
	}
	provEventually(t, 10*time.Second, func() (bool, string) {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		ai, err := euJS.AccountInfo(rctx)
		if err != nil {
			return false, "eu-west account info: " + err.Error()
		}
		return ai.Domain == "eu-west", "eu-west account info names domain " + ai.Domain
	})
	select {
	case err := <-errs:
		t.Fatalf("account info of another domain: %v", err)
	default:
	}

	// A wildcard subscription is allowed but never delivers eu resident
	// subjects: admin publishes an eu subject, then a us one; the first
	// message us-east sees is the us one.
	wild, err := nc.SubscribeSync("meridian.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	admin, _ := permConn(t, us, "admin")
	for _, s := range []string{Subject("eu-west", "eu", "trait_set"), Subject("us-east", "us", "trait_set")} {
		if err := admin.Publish(s, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := wild.NextMsg(5 * time.Second)
	if err != nil || m.Subject != Subject("us-east", "us", "trait_set") {
		t.Fatalf("wildcard subscriber got %v, %v; want only the us subject", m, err)
	}
}

// The claims bucket lives in us-east; eu-west's credentials reach it across
// domains (create, read, list) and nothing else of us-east.
func TestRegionCredentialsClaims(t *testing.T) {
	p := DefaultDevPolicy()
	plan, _ := Compile(p)
	topo := startProvTopo(t, p, permUsers(plan))
	ctx := provCtx(t)

	admin, _ := permConn(t, topo.servers["us-east"], "admin")
	ajs, _ := jetstream.New(admin)
	if _, err := ajs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ClaimsBucket}); err != nil {
		t.Fatal(err)
	}

	nc, errs := permConn(t, topo.servers["eu-west"], "eu-west")
	js, err := jetstream.NewWithDomain(nc, plan.Claims.Domain)
	if err != nil {
		t.Fatal(err)
	}
	var kv jetstream.KeyValue
	// The bucket is reachable once the leaf connections carry interest.
	provEventually(t, 10*time.Second, func() (bool, string) {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		kv, err = js.KeyValue(rctx, ClaimsBucket)
		return err == nil, "bind claims bucket: " + errString(err)
	})
	if _, err := kv.Create(ctx, "hmac-1", []byte("identity-1")); err != nil {
		t.Fatalf("claim: %v", err)
	}
	if _, err := kv.Create(ctx, "hmac-1", []byte("identity-2")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("second claim = %v, want ErrKeyExists", err)
	}
	if e, err := kv.Get(ctx, "hmac-1"); err != nil || string(e.Value()) != "identity-1" {
		t.Fatalf("get claim: %v, %v", e, err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for range keys.Keys() {
		n++
	}
	if n != 1 {
		t.Fatalf("listed %d keys", n)
	}
	if err := nc.Publish("$JS.us-east.API.STREAM.INFO.origin-us-east", nil); err != nil {
		t.Fatal(err)
	}
	wantPermissionError(t, errs, "publish", "$JS.us-east.API.STREAM.INFO.origin-us-east")
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// crossDomainDenied lists requests into domain d's JetStream API that no
// other region's credentials may send.
func crossDomainDenied(d string) []string {
	api := DomainAPIPrefix(d) + "."
	var out []string
	for _, st := range []string{OriginStream(d), InboxStream(d)} {
		out = append(out,
			api+"STREAM.MSG.GET."+st,
			api+"DIRECT.GET."+st,
			api+"DIRECT.GET."+st+".meridian."+d+".eu.identity_created",
			api+"CONSUMER.CREATE."+st,
			api+"CONSUMER.CREATE."+st+".c1.meridian."+d+".eu.>",
			api+"CONSUMER.DURABLE.CREATE."+st+".c1",
			api+"CONSUMER.MSG.NEXT."+st+".c1",
			api+"CONSUMER.INFO."+st+".c1",
			api+"STREAM.INFO."+st,
		)
	}
	return append(out, api+"STREAM.NAMES", api+"STREAM.LIST", api+"CONSUMER.LIST."+InboxStream(d))
}

// subjectMatches reports whether a NATS subject matches a permission
// pattern ("*" one token, ">" the rest).
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}

func allowed(sp SubjectPermissions, subject string) bool {
	for _, d := range sp.Deny {
		if subjectMatches(d, subject) {
			return false
		}
	}
	if len(sp.Allow) == 0 {
		return true
	}
	for _, a := range sp.Allow {
		if subjectMatches(a, subject) {
			return true
		}
	}
	return false
}

// Across domains a region's credentials reach only the other domains'
// account info (and the claims bucket, TestRegionCredentialsClaims): never
// a stream's messages, consumers or info.
func TestPermissionsCrossDomain(t *testing.T) {
	for _, name := range []string{"dev-three-regions", "four-regions-three-zones"} {
		t.Run(name, func(t *testing.T) {
			plan := compileGoldenPolicy(t, name)
			for _, rp := range plan.Regions {
				for _, other := range plan.Regions {
					pub := rp.Permissions.Publish
					info := AccountInfoSubject(other.Domain)
					if !allowed(pub, info) {
						t.Errorf("%s may not publish %s", rp.Region, info)
					}
					if other.Domain == rp.Domain {
						continue
					}
					for _, subj := range crossDomainDenied(other.Domain) {
						if allowed(pub, subj) {
							t.Errorf("%s may publish %s", rp.Region, subj)
						}
					}
				}
			}
		})
	}
}

// compileGoldenPolicy compiles the policy of testdata/compile/<name>.txt.
func compileGoldenPolicy(t *testing.T, name string) *Plan {
	t.Helper()
	c := parseCompileCase(t, filepath.Join("testdata", "compile", name+".txt"))
	p, err := LoadPolicyJSON([]byte(c.policy))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := CompileWithOptions(p, c.opts)
	if err != nil {
		t.Fatal(err)
	}
	return plan
}
