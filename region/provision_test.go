package region

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// provTopo is a minimal multi-domain NATS for these tests: a hub without
// JetStream and one JetStream server per region, its domain set, joined to
// the hub by a leaf connection. (The embedded topology of `meridian dev`
// is separate; this helper stays small on purpose.)
type provTopo struct {
	hub     *server.Server
	servers map[string]*server.Server
}

// startProvTopo starts the hub and a server per region of p. mod, if set,
// adjusts a region server's options (users, for the permission tests).
func startProvTopo(t *testing.T, p *Policy, mod func(region string, o *server.Options)) *provTopo {
	t.Helper()
	hubOpts := &server.Options{
		ServerName: "hub", Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: -1},
	}
	topo := &provTopo{hub: startProvServer(t, hubOpts), servers: map[string]*server.Server{}}
	hubLeaf := &url.URL{Scheme: "nats-leaf", Host: fmt.Sprintf("127.0.0.1:%d", hubOpts.LeafNode.Port)}
	for _, name := range p.Regions() {
		d, _ := p.Domain(name)
		o := &server.Options{
			ServerName: name, Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			JetStream: true, JetStreamDomain: d, StoreDir: t.TempDir(),
			LeafNode: server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{hubLeaf}}}},
		}
		if mod != nil {
			mod(name, o)
		}
		topo.servers[name] = startProvServer(t, o)
	}
	provEventually(t, 10*time.Second, func() (bool, string) {
		n := topo.hub.NumLeafNodes()
		return n == len(topo.servers), fmt.Sprintf("hub has %d of %d leaf connections", n, len(topo.servers))
	})
	return topo
}

func startProvServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("server %s: %v", o.ServerName, err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("server %s not ready", o.ServerName)
	}
	return s
}

// js connects to a region's server and returns a JetStream client of its
// domain.
func (tp *provTopo) js(t *testing.T, p *Policy, region string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(tp.servers[region].ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", region, err)
	}
	t.Cleanup(nc.Close)
	d, _ := p.Domain(region)
	js, err := jetstream.NewWithDomain(nc, d)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func (tp *provTopo) allJS(t *testing.T, p *Policy) map[string]jetstream.JetStream {
	out := map[string]jetstream.JetStream{}
	for _, r := range p.Regions() {
		out[r] = tp.js(t, p, r)
	}
	return out
}

// provEventually polls cond until it holds or the deadline passes.
func provEventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, why)
		}
		<-tick.C
	}
}

func provCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustProvision(t *testing.T, ctx context.Context, plan *Plan, js map[string]jetstream.JetStream, opts ProvisionOptions) *ProvisionReport {
	t.Helper()
	rep, err := Provision(ctx, plan, js, opts)
	if err != nil {
		t.Fatalf("Provision: %v\nreport so far:\n%v", err, rep)
	}
	return rep
}

// subjectsIn returns the subjects a stream holds, with counts.
func subjectsIn(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string) map[string]uint64 {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatalf("info %s: %v", stream, err)
	}
	return info.State.Subjects
}

func actions(rep *ProvisionReport) []string {
	var out []string
	for _, s := range rep.Streams {
		out = append(out, s.Stream+"="+string(s.Action))
	}
	return out
}

func TestProvisionCreatesThenUnchangedAndReplicatesByZone(t *testing.T) {
	p := DefaultDevPolicy()
	plan, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	topo := startProvTopo(t, p, nil)
	ctx := provCtx(t)
	js := topo.allJS(t, p)

	rep := mustProvision(t, ctx, plan, js, ProvisionOptions{})
	want := []string{
		"origin-eu-central=created", "origin-eu-west=created", "origin-us-east=created",
		"inbox-eu-central=created", "inbox-eu-west=created", "inbox-us-east=created",
	}
	if got := actions(rep); !slices.Equal(got, want) {
		t.Fatalf("first run: %v, want %v", got, want)
	}
	if ch := rep.Streams[5]; len(ch.SourcesAdded) != 6 || !slices.Contains(ch.SourcesAdded, "origin-eu-west filter=meridian.eu-west.global.> api=$JS.eu-west.API") {
		t.Errorf("inbox-us-east sources added: %v", ch.SourcesAdded)
	}

	rep = mustProvision(t, ctx, plan, js, ProvisionOptions{Previous: p})
	if rep.Changed() {
		t.Fatalf("second run changed something:\n%v", rep)
	}
	for _, s := range rep.Streams {
		if s.Action != ActionUnchanged || len(s.SourcesAdded)+len(s.SourcesRemoved) > 0 {
			t.Errorf("second run: %+v", s)
		}
	}

	// Cross-domain arrival, filtered at the origin.
	for _, m := range []string{
		Subject("us-east", GlobalZone, "identity_created"), Subject("us-east", "us", "identity_created"),
		Subject("eu-west", GlobalZone, "identity_created"), Subject("eu-west", "eu", "identity_created"),
		KeySubject("eu-west", "eu", "id-1"),
	} {
		origin := strings.Split(m, ".")[1]
		if _, err := js[origin].Publish(ctx, m, []byte("x"), jetstream.WithMsgID(m)); err != nil {
			t.Fatalf("publish %s: %v", m, err)
		}
	}
	wantIn := map[string][]string{
		"us-east":    {"meridian.eu-west.global.identity_created", "meridian.us-east.global.identity_created", "meridian.us-east.us.identity_created"},
		"eu-west":    {"meridian.eu-west.eu.identity_created", "meridian.eu-west.eu.key.id-1", "meridian.eu-west.global.identity_created", "meridian.us-east.global.identity_created"},
		"eu-central": {"meridian.eu-west.eu.identity_created", "meridian.eu-west.eu.key.id-1", "meridian.eu-west.global.identity_created", "meridian.us-east.global.identity_created"},
	}
	for region, subjects := range wantIn {
		provEventually(t, 10*time.Second, func() (bool, string) {
			got := subjectsIn(t, ctx, js[region], InboxStream(region))
			var have []string
			for s, n := range got {
				if n != 1 {
					return false, fmt.Sprintf("%s holds %s %d times", InboxStream(region), s, n)
				}
				have = append(have, s)
			}
			slices.Sort(have)
			return slices.Equal(have, subjects), fmt.Sprintf("%s holds %v, want %v", InboxStream(region), have, subjects)
		})
	}
}

func TestProvisionPolicyChangeAddsSources(t *testing.T) {
	// Start with two regions; eu-central joins zone eu later. Its server
	// runs from the start so that the topology is built once.
	full := DefaultDevPolicy()
	pb := full.Proto()
	pb.Regions = slices.DeleteFunc(pb.Regions, func(r *meridianv1.Region) bool { return r.Name == "eu-central" })
	pb.Zones[1].Regions = []string{"eu-west"}
	small, err := NewPolicy(pb)
	if err != nil {
		t.Fatal(err)
	}
	topo := startProvTopo(t, full, nil)
	ctx := provCtx(t)
	js := topo.allJS(t, full)
	smallJS := map[string]jetstream.JetStream{"us-east": js["us-east"], "eu-west": js["eu-west"]}

	plan1, _ := Compile(small)
	mustProvision(t, ctx, plan1, smallJS, ProvisionOptions{})

	plan2, _ := Compile(full)
	rep := mustProvision(t, ctx, plan2, js, ProvisionOptions{Previous: small})
	got := map[string]StreamChange{}
	for _, s := range rep.Streams {
		got[s.Stream] = s
	}
	for _, name := range []string{"origin-eu-central", "inbox-eu-central"} {
		if got[name].Action != ActionCreated {
			t.Errorf("%s: %v", name, got[name].Action)
		}
	}
	for _, name := range []string{"origin-us-east", "origin-eu-west"} {
		if got[name].Action != ActionUnchanged {
			t.Errorf("%s: %+v", name, got[name])
		}
	}
	for region, zone := range map[string]string{"us-east": "us", "eu-west": "eu"} {
		ch := got[InboxStream(region)]
		want := []string{
			fmt.Sprintf("origin-eu-central filter=meridian.eu-central.%s.> api=$JS.eu-central.API", zone),
			"origin-eu-central filter=meridian.eu-central.global.> api=$JS.eu-central.API",
		}
		slices.Sort(want)
		if ch.Action != ActionUpdated || !slices.Equal(ch.SourcesAdded, want) || len(ch.SourcesRemoved) != 0 || !slices.Equal(ch.Fields, []string{"sources"}) {
			t.Errorf("%s: %+v, want sources added %v", ch.Stream, ch, want)
		}
	}
	if rep := mustProvision(t, ctx, plan2, js, ProvisionOptions{Previous: full}); rep.Changed() {
		t.Errorf("rerun changed:\n%v", rep)
	}

	// New stream limits are updated in place, keeping what an operator set
	// outside meridian's fields.
	s, err := js["us-east"].Stream(ctx, OriginStream("us-east"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Metadata["owner"] = "ops"
	cfg.Compression = jetstream.S2Compression
	if _, err := js["us-east"].UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	plan3, _ := CompileWithOptions(full, CompileOptions{DuplicateWindow: 5 * time.Minute})
	rep = mustProvision(t, ctx, plan3, js, ProvisionOptions{Previous: full})
	for _, ch := range rep.Streams {
		if ch.Action != ActionUpdated || !slices.Equal(ch.Fields, []string{"duplicates"}) {
			t.Errorf("%s: %+v, want updated duplicates", ch.Stream, ch)
		}
	}
	s, _ = js["us-east"].Stream(ctx, OriginStream("us-east"))
	cfg = s.CachedInfo().Config
	if cfg.Duplicates != 5*time.Minute || cfg.Metadata["owner"] != "ops" || cfg.Compression != jetstream.S2Compression || cfg.Metadata[MetaRole] != "origin" {
		t.Errorf("after update: duplicates %v metadata %v compression %v", cfg.Duplicates, cfg.Metadata, cfg.Compression)
	}
}

// movedPolicy is the dev policy after eu-central moved from zone eu to us.
func movedPolicy(t *testing.T) *Policy {
	t.Helper()
	pb := DevPolicyProto(nil)
	pb.Zones = []*meridianv1.Zone{
		{Name: "us", Regions: []string{"us-east", "eu-central"}},
		{Name: "eu", Regions: []string{"eu-west"}},
	}
	p, err := NewPolicy(pb)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProvisionZoneLeave(t *testing.T) {
	before := DefaultDevPolicy()
	after := movedPolicy(t)
	topo := startProvTopo(t, before, nil)
	ctx := provCtx(t)
	js := topo.allJS(t, before)
	plan1, _ := Compile(before)
	mustProvision(t, ctx, plan1, js, ProvisionOptions{})

	// eu data written in eu-west (and, while it was in eu, in eu-central).
	for _, m := range []string{
		Subject("eu-west", "eu", "identity_created"), KeySubject("eu-west", "eu", "id-1"),
		Subject("eu-west", GlobalZone, "identity_created"), Subject("eu-central", "eu", "trait_set"),
	} {
		origin := strings.Split(m, ".")[1]
		if _, err := js[origin].Publish(ctx, m, []byte("x"), jetstream.WithMsgID(m)); err != nil {
			t.Fatal(err)
		}
	}
	provEventually(t, 10*time.Second, func() (bool, string) {
		got := subjectsIn(t, ctx, js["eu-central"], InboxStream("eu-central"))
		return len(got) == 4, fmt.Sprintf("inbox-eu-central holds %v", got)
	})
	inboxConfig := func() jetstream.StreamConfig {
		s, err := js["eu-central"].Stream(ctx, InboxStream("eu-central"))
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config
	}
	cfgBefore := inboxConfig()

	plan2, _ := Compile(after)
	// Refused, whether the previous policy is given or only the inbox tells.
	for _, opts := range []ProvisionOptions{{Previous: before}, {}} {
		rep, err := Provision(ctx, plan2, js, opts)
		var zl *ZoneLeaveError
		if !errors.Is(err, ErrZoneLeave) || !errors.As(err, &zl) || zl.Region != "eu-central" || zl.Zone != "eu" {
			t.Fatalf("Provision(previous=%v) = %v, %v; want a ZoneLeaveError for eu-central leaving eu", opts.Previous != nil, rep, err)
		}
		if !strings.Contains(err.Error(), "AllowZoneLeave") || !strings.Contains(err.Error(), "inbox source meridian.eu-west.eu.>") {
			t.Errorf("error does not say why or what to do: %v", err)
		}
		if opts.Previous != nil && !slices.Contains(zl.Evidence, "previous policy") {
			t.Errorf("evidence %v lacks the previous policy", zl.Evidence)
		}
	}
	if cfgAfter := inboxConfig(); len(cfgAfter.Sources) != len(cfgBefore.Sources) || cfgAfter.Metadata[MetaZone] != "eu" {
		t.Fatalf("a refused run changed the inbox: %+v", cfgAfter)
	}
	if got := subjectsIn(t, ctx, js["eu-central"], InboxStream("eu-central")); len(got) != 4 {
		t.Fatalf("a refused run changed the data: %v", got)
	}

	// Allowed: sources swapped, eu copies purged, the rest kept.
	rep := mustProvision(t, ctx, plan2, js, ProvisionOptions{Previous: before, AllowZoneLeave: true})
	wantPurge := []PurgeReport{{Region: "eu-central", Stream: "inbox-eu-central", Zone: "eu", Filter: "meridian.*.eu.>", Messages: 3}}
	if !slices.Equal(rep.Purges, wantPurge) {
		t.Errorf("purges %+v, want %+v", rep.Purges, wantPurge)
	}
	wantResidue := []Residue{{Region: "eu-central", Stream: "origin-eu-central", Zone: "eu", Filter: "meridian.eu-central.eu.>", Messages: 1}}
	if !slices.Equal(rep.Residue, wantResidue) {
		t.Errorf("residue %+v, want %+v", rep.Residue, wantResidue)
	}
	var inbox StreamChange
	for _, s := range rep.Streams {
		if s.Stream == "inbox-eu-central" {
			inbox = s
		}
	}
	if inbox.Action != ActionUpdated || len(inbox.SourcesAdded) != 3 || len(inbox.SourcesRemoved) != 3 || !slices.Contains(inbox.Fields, "metadata") {
		t.Errorf("inbox change %+v", inbox)
	}
	if !strings.Contains(rep.String(), "eu-central purged inbox-eu-central of zone eu: 3 messages") {
		t.Errorf("report text:\n%s", rep)
	}
	got := subjectsIn(t, ctx, js["eu-central"], InboxStream("eu-central"))
	if len(got) != 1 || got["meridian.eu-west.global.identity_created"] != 1 {
		t.Errorf("inbox-eu-central after the leave holds %v", got)
	}
	if z := inboxConfig().Metadata[MetaZone]; z != "us" {
		t.Errorf("inbox zone metadata %q", z)
	}
	// eu-west keeps its eu data.
	if got := subjectsIn(t, ctx, js["eu-west"], InboxStream("eu-west")); len(got) != 4 {
		t.Errorf("inbox-eu-west holds %v", got)
	}
	// Converged: with the new policy as previous, or none, nothing to do.
	for _, prev := range []*Policy{after, nil} {
		if rep := mustProvision(t, ctx, plan2, js, ProvisionOptions{Previous: prev}); rep.Changed() {
			t.Errorf("rerun changed:\n%v", rep)
		}
	}
	// New eu data no longer reaches eu-central.
	m := Subject("eu-west", "eu", "trait_set")
	if _, err := js["eu-west"].Publish(ctx, m, []byte("x"), jetstream.WithMsgID(m)); err != nil {
		t.Fatal(err)
	}
	marker := Subject("eu-west", GlobalZone, "heartbeat")
	if _, err := js["eu-west"].Publish(ctx, marker, []byte("x"), jetstream.WithMsgID(marker)); err != nil {
		t.Fatal(err)
	}
	provEventually(t, 10*time.Second, func() (bool, string) {
		got := subjectsIn(t, ctx, js["eu-central"], InboxStream("eu-central"))
		return got[marker] == 1, fmt.Sprintf("inbox-eu-central holds %v", got)
	})
	if got := subjectsIn(t, ctx, js["eu-central"], InboxStream("eu-central")); got[m] != 0 {
		t.Errorf("eu data reached eu-central after it left the zone: %v", got)
	}
}

// An interrupted leave (sources already removed, purge not done) is still
// detected through the inbox metadata and finished by the next run.
func TestProvisionZoneLeaveResumes(t *testing.T) {
	before := DefaultDevPolicy()
	after := movedPolicy(t)
	topo := startProvTopo(t, before, nil)
	ctx := provCtx(t)
	js := map[string]jetstream.JetStream{"eu-central": topo.js(t, before, "eu-central")}
	plan1, _ := Compile(before)
	mustProvision(t, ctx, plan1, js, ProvisionOptions{})
	// Simulate the first half of a leave: new sources, old zone metadata.
	plan2, _ := Compile(after)
	rp, _ := plan2.Region("eu-central")
	staged := rp.Inbox
	staged.Metadata = map[string]string{MetaRole: "inbox", MetaRegion: "eu-central", MetaZone: "eu"}
	if _, err := js["eu-central"].UpdateStream(ctx, staged); err != nil {
		t.Fatal(err)
	}
	_, err := Provision(ctx, plan2, js, ProvisionOptions{})
	var zl *ZoneLeaveError
	if !errors.As(err, &zl) || !slices.Equal(zl.Evidence, []string{"inbox metadata"}) {
		t.Fatalf("Provision = %v; want a leave seen in the inbox metadata", err)
	}
	rep := mustProvision(t, ctx, plan2, js, ProvisionOptions{AllowZoneLeave: true})
	if len(rep.Purges) != 1 || rep.Purges[0].Zone != "eu" {
		t.Errorf("purges %+v", rep.Purges)
	}
	if rep := mustProvision(t, ctx, plan2, js, ProvisionOptions{}); rep.Changed() {
		t.Errorf("rerun changed:\n%v", rep)
	}
}

func TestProvisionSkipsAndRejects(t *testing.T) {
	p := DefaultDevPolicy()
	plan, _ := Compile(p)
	topo := startProvTopo(t, p, nil)
	ctx := provCtx(t)
	us := topo.js(t, p, "us-east")

	rep := mustProvision(t, ctx, plan, map[string]jetstream.JetStream{"us-east": us}, ProvisionOptions{})
	if !slices.Equal(rep.Skipped, []string{"eu-central", "eu-west"}) || len(rep.Streams) != 2 {
		t.Errorf("report %+v", rep)
	}
	for name, tc := range map[string]struct {
		plan *Plan
		js   map[string]jetstream.JetStream
		opts ProvisionOptions
	}{
		"unknown region": {plan, map[string]jetstream.JetStream{"mars": us}, ProvisionOptions{}},
		"nil jetstream":  {plan, map[string]jetstream.JetStream{"us-east": nil}, ProvisionOptions{}},
		"nil plan":       {nil, nil, ProvisionOptions{}},
		"negative retry": {plan, nil, ProvisionOptions{RetryTimeout: -1}},
	} {
		if _, err := Provision(ctx, tc.plan, tc.js, tc.opts); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: Provision = %v, want ErrInvalidOptions", name, err)
		}
	}
}

func TestRetryStreamOffline(t *testing.T) {
	ctx := provCtx(t)
	offline := &jetstream.APIError{Code: 500, ErrorCode: codeStreamOffline, Description: "stream is offline"}
	calls := 0
	v, err := retryValue(ctx, 5*time.Second, func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, offline
		}
		return 42, nil
	})
	if err != nil || v != 42 || calls != 3 {
		t.Fatalf("retryValue = %d, %v after %d calls", v, err, calls)
	}
	// Gives up at the deadline with the last error.
	err = retry(ctx, 120*time.Millisecond, func(context.Context) error { return fmt.Errorf("update: %w", offline) })
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != codeStreamOffline || !strings.Contains(err.Error(), "gave up") {
		t.Fatalf("retry = %v", err)
	}
	// Other errors are not retried.
	calls = 0
	err = retry(ctx, 5*time.Second, func(context.Context) error { calls++; return jetstream.ErrStreamNotFound })
	if !errors.Is(err, jetstream.ErrStreamNotFound) || calls != 1 {
		t.Fatalf("retry = %v after %d calls", err, calls)
	}
	// A cancelled context stops the wait.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := retry(cctx, 5*time.Second, func(context.Context) error { return offline }); !errors.Is(err, context.Canceled) {
		t.Fatalf("retry with cancelled ctx = %v", err)
	}
}

// Right after a region's server restarts, provisioning converges again (the
// server may answer "stream is offline" for a while; Provision retries) and
// finds nothing to change.
func TestProvisionAfterRestart(t *testing.T) {
	p := DefaultDevPolicy()
	plan, _ := Compile(p)
	var storeDir string
	topo := startProvTopo(t, p, func(region string, o *server.Options) {
		if region == "us-east" {
			storeDir = o.StoreDir
		}
	})
	ctx := provCtx(t)
	mustProvision(t, ctx, plan, map[string]jetstream.JetStream{"us-east": topo.js(t, p, "us-east")}, ProvisionOptions{})

	old := topo.servers["us-east"]
	old.Shutdown()
	old.WaitForShutdown()
	topo.servers["us-east"] = startProvServer(t, &server.Options{
		ServerName: "us-east", Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		JetStream: true, JetStreamDomain: "us-east", StoreDir: storeDir,
	})
	rep := mustProvision(t, ctx, plan, map[string]jetstream.JetStream{"us-east": topo.js(t, p, "us-east")}, ProvisionOptions{Previous: p})
	if rep.Changed() || len(rep.Streams) != 2 {
		t.Fatalf("after restart:\n%v", rep)
	}
}
