package region

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// embWait is the deadline of every wait in these tests. Sources resume a few
// seconds after a restart (NATS-NOTES: about 5 s), so it is generous.
const embWait = 30 * time.Second

var embThree = []string{"us-east", "eu-west", "eu-central"}

func embStart(t *testing.T, cfg EmbeddedConfig) *Embedded {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Regions == nil {
		cfg.Regions = embThree
	}
	ctx, cancel := context.WithTimeout(context.Background(), embWait)
	defer cancel()
	e, err := StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

func embConnect(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// embJS connects to a region and returns JetStream in the region's domain.
func embJS(t *testing.T, e *Embedded, region string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.NewWithDomain(embConnect(t, e.ClientURL(region)), e.Domain(region))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func embCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), embWait)
	t.Cleanup(cancel)
	return ctx
}

// embEventually polls cond until it holds or the deadline passes.
func embEventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(embWait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, embWait, err)
		}
		<-tick.C
	}
}

// embRetry retries a JetStream call that can answer "offline" or time out
// right after a restart (NATS-NOTES).
func embRetry[T any](t *testing.T, what string, f func(ctx context.Context) (T, error)) T {
	t.Helper()
	var out T
	embEventually(t, what, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		v, err := f(ctx)
		if err == nil {
			out = v
		}
		return err
	})
	return out
}

// embOrigin creates origin-<region> with subjects m.<region>.>.
func embOrigin(t *testing.T, js jetstream.JetStream, region string) jetstream.Stream {
	t.Helper()
	return embRetry(t, "create origin-"+region, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:     "origin-" + region,
			Subjects: []string{"m." + region + ".>"},
			Storage:  jetstream.FileStorage,
		})
	})
}

// embInbox creates inbox in js's region sourcing m.<origin>.global.> from
// each origin's stream in its own domain, one source per filter.
func embInbox(t *testing.T, e *Embedded, js jetstream.JetStream, origins ...string) jetstream.Stream {
	t.Helper()
	cfg := jetstream.StreamConfig{Name: "inbox", Storage: jetstream.FileStorage}
	for _, o := range origins {
		cfg.Sources = append(cfg.Sources, &jetstream.StreamSource{
			Name:          "origin-" + o,
			FilterSubject: "m." + o + ".global.>",
			Domain:        e.Domain(o),
		})
	}
	return embRetry(t, "create inbox", func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	})
}

func embPublish(t *testing.T, js jetstream.JetStream, subject, id string) {
	t.Helper()
	embRetry(t, "publish "+subject, func(ctx context.Context) (*jetstream.PubAck, error) {
		return js.Publish(ctx, subject, []byte(id), jetstream.WithMsgID(id))
	})
}

// embHas waits until stream holds a message with each id (as Nats-Msg-Id).
func embHas(t *testing.T, js jetstream.JetStream, stream string, ids ...string) {
	t.Helper()
	defer func(start time.Time) { t.Logf("%s holds %v after %v", stream, ids, time.Since(start)) }(time.Now())
	embEventually(t, fmt.Sprintf("%s holds %v", stream, ids), func() error {
		got, err := embIDs(js, stream)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if !got[id] {
				return fmt.Errorf("missing %s (have %d messages)", id, len(got))
			}
		}
		return nil
	})
}

// embIDs returns the Nats-Msg-Id of every message in stream.
func embIDs(js jetstream.JetStream, stream string) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ids[m.Header.Get(jetstream.MsgIDHeader)] = true
	}
	return ids, nil
}

func TestEmbeddedDomainsAndFilteredSourcing(t *testing.T) {
	t.Parallel()
	e := embStart(t, EmbeddedConfig{})
	ctx := embCtx(t)

	// Every region answers in its own domain, locally and through the hub.
	hub := embConnect(t, e.HubURL())
	for _, r := range embThree {
		if got := e.Domain(r); got != r {
			t.Errorf("Domain(%s) = %q, want the region name", r, got)
		}
		info, err := embJS(t, e, r).AccountInfo(ctx)
		if err != nil {
			t.Fatalf("%s: AccountInfo: %v", r, err)
		}
		if info.Domain != r {
			t.Errorf("%s: AccountInfo.Domain = %q", r, info.Domain)
		}
		viaHub, err := jetstream.NewWithDomain(hub, e.Domain(r))
		if err != nil {
			t.Fatal(err)
		}
		if info, err := viaHub.AccountInfo(ctx); err != nil || info.Domain != r {
			t.Fatalf("%s via hub: AccountInfo = %+v, %v", r, info, err)
		}
	}

	us, eu := embJS(t, e, "us-east"), embJS(t, e, "eu-west")
	embOrigin(t, us, "us-east")
	embInbox(t, e, eu, "us-east")
	embPublish(t, us, "m.us-east.us.identity_created", "resident-1")
	embPublish(t, us, "m.us-east.global.identity_created", "global-1")
	embHas(t, eu, "inbox", "global-1")
	got, err := embIDs(eu, "inbox")
	if err != nil {
		t.Fatal(err)
	}
	if got["resident-1"] || len(got) != 1 {
		t.Fatalf("inbox holds %v, want only global-1: the filter must run on the origin side", got)
	}
}

func TestEmbeddedRegionRestartKeepsPortsAndData(t *testing.T) {
	t.Parallel()
	e := embStart(t, EmbeddedConfig{})
	ctx := embCtx(t)
	us, eu := embJS(t, e, "us-east"), embJS(t, e, "eu-west")
	embOrigin(t, us, "us-east")
	embInbox(t, e, eu, "us-east")
	embPublish(t, us, "m.us-east.global.x", "before")
	embHas(t, eu, "inbox", "before")

	url, old := e.ClientURL("eu-west"), e.Server("eu-west")
	if err := e.StopRegion("eu-west"); err != nil {
		t.Fatal(err)
	}
	if e.Server("eu-west") != nil {
		t.Fatal("Server(eu-west) is not nil after StopRegion")
	}
	if err := e.StopRegion("eu-west"); err != nil {
		t.Fatalf("second StopRegion: %v", err)
	}
	// The origin keeps accepting writes while the sourcing region is down.
	embPublish(t, us, "m.us-east.global.x", "while-down")
	if err := e.StartRegion(ctx, "eu-west"); err != nil {
		t.Fatal(err)
	}
	if e.ClientURL("eu-west") != url || e.Server("eu-west") == old {
		t.Fatalf("after restart: url %s (was %s), same server %v", e.ClientURL("eu-west"), url, e.Server("eu-west") == old)
	}
	embHas(t, eu, "inbox", "before", "while-down") // the client reconnected to the same URL

	// An abrupt stop of the origin: its stream and messages survive, and it is
	// reachable in its domain from the other region again. (The inbox's
	// source itself resumes on the server's 10 s source health check, up to
	// 20 s: meridian's own stall detection re-establishes it sooner.)
	usURL := e.ClientURL("us-east")
	if err := e.KillRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	if err := e.StartRegion(ctx, "us-east"); err != nil {
		t.Fatal(err)
	}
	if e.ClientURL("us-east") != usURL {
		t.Fatalf("us-east moved: %s, was %s", e.ClientURL("us-east"), usURL)
	}
	embPublish(t, us, "m.us-east.global.x", "after-kill")
	embHas(t, us, "origin-us-east", "before", "while-down", "after-kill")
	usFromEU, err := jetstream.NewWithDomain(embConnect(t, e.ClientURL("eu-west")), e.Domain("us-east"))
	if err != nil {
		t.Fatal(err)
	}
	embHas(t, usFromEU, "origin-us-east", "before", "while-down", "after-kill")

	if err := e.StartRegion(ctx, "nowhere"); !errors.Is(err, ErrNotEmbedded) {
		t.Errorf("StartRegion(nowhere) = %v, want ErrNotEmbedded", err)
	}
}

func TestEmbeddedReopenSameDirKeepsPortsAndData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := EmbeddedConfig{Dir: dir, Regions: []string{"us-east", "eu-west"}}
	ctx := embCtx(t)
	e1, err := StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	js := embJS(t, e1, "us-east")
	embOrigin(t, js, "us-east")
	embPublish(t, js, "m.us-east.global.x", "kept")
	urls := []string{e1.HubURL(), e1.ClientURL("us-east"), e1.ClientURL("eu-west"), e1.Link("us-east").Addr()}
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e1.StopHub(); !errors.Is(err, ErrEmbeddedClosed) {
		t.Errorf("StopHub after Close = %v, want ErrEmbeddedClosed", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nats", "us-east")); err != nil {
		t.Fatalf("store dir: %v", err)
	}

	e2 := embStart(t, cfg)
	got := []string{e2.HubURL(), e2.ClientURL("us-east"), e2.ClientURL("eu-west"), e2.Link("us-east").Addr()}
	if strings.Join(got, " ") != strings.Join(urls, " ") {
		t.Fatalf("ports moved across restarts: %v, was %v", got, urls)
	}
	embHas(t, embJS(t, e2, "us-east"), "origin-us-east", "kept")
}

func TestEmbeddedHubRestartResumesSourcing(t *testing.T) {
	t.Parallel()
	e := embStart(t, EmbeddedConfig{})
	ctx := embCtx(t)
	us, eu := embJS(t, e, "us-east"), embJS(t, e, "eu-west")
	embOrigin(t, us, "us-east")
	embInbox(t, e, eu, "us-east")
	embPublish(t, us, "m.us-east.global.x", "before")
	embHas(t, eu, "inbox", "before")

	hubURL := e.HubURL()
	if err := e.StopHub(); err != nil {
		t.Fatal(err)
	}
	// Regions stay autonomous without the hub.
	embPublish(t, us, "m.us-east.global.x", "hub-down")
	embOrigin(t, eu, "eu-west")
	embPublish(t, eu, "m.eu-west.global.x", "local")
	if err := e.StartHub(ctx); err != nil {
		t.Fatal(err)
	}
	if e.HubURL() != hubURL {
		t.Fatalf("hub moved: %s, was %s", e.HubURL(), hubURL)
	}
	embHas(t, eu, "inbox", "before", "hub-down")
}

func TestEmbeddedLinkCutPartitionsRegion(t *testing.T) {
	t.Parallel()
	e := embStart(t, EmbeddedConfig{})
	us, eu, ec := embJS(t, e, "us-east"), embJS(t, e, "eu-west"), embJS(t, e, "eu-central")
	embOrigin(t, us, "us-east")
	embOrigin(t, ec, "eu-central")
	embInbox(t, e, eu, "us-east", "eu-central")
	embPublish(t, us, "m.us-east.global.x", "us-1")
	embPublish(t, ec, "m.eu-central.global.x", "ec-1")
	embHas(t, eu, "inbox", "us-1", "ec-1")

	e.Link("us-east").Cut()
	embEventually(t, "us-east leaf down", func() error {
		if n := e.Server("us-east").NumLeafNodes(); n != 0 {
			return fmt.Errorf("%d leaf connections", n)
		}
		return nil
	})
	embPublish(t, us, "m.us-east.global.x", "us-cut") // the cut region still accepts writes
	// A message from an unaffected region arrives: the partition is local.
	embPublish(t, ec, "m.eu-central.global.x", "ec-2")
	embHas(t, eu, "inbox", "ec-2")
	got, err := embIDs(eu, "inbox")
	if err != nil {
		t.Fatal(err)
	}
	if got["us-cut"] {
		t.Fatal("a message published behind a cut link arrived")
	}
	if m := e.Link("us-east").Metrics(); !m.Cut || m.Cuts != 1 {
		t.Errorf("link metrics during cut: %+v", m)
	}

	e.Link("us-east").Restore()
	embHas(t, eu, "inbox", "us-1", "ec-1", "us-cut", "ec-2")
}

func TestEmbeddedWANDelay(t *testing.T) {
	t.Parallel()
	e := embStart(t, EmbeddedConfig{Regions: []string{"us-east", "eu-west"}})
	ctx := embCtx(t)
	us, eu := embJS(t, e, "us-east"), embJS(t, e, "eu-west")
	embOrigin(t, us, "us-east")
	inbox := embInbox(t, e, eu, "us-east")
	embPublish(t, us, "m.us-east.global.x", "warm")
	embHas(t, eu, "inbox", "warm")

	const delay = 35 * time.Millisecond
	e.Link("us-east").SetDelay(delay)
	if got := e.Link("us-east").Delay(); got != delay {
		t.Fatalf("Delay() = %v", got)
	}
	// Watch the inbox from the end; every sourced message crosses us-east's link.
	cons, err := inbox.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		id := fmt.Sprintf("timed-%d", i)
		start := time.Now()
		embPublish(t, us, "m.us-east.global.x", id)
		msg, err := cons.Next(jetstream.FetchMaxWait(embWait))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if got := msg.Headers().Get(jetstream.MsgIDHeader); got != id {
			t.Fatalf("got %s, want %s", got, id)
		}
		if lat := time.Since(start); lat < delay {
			t.Errorf("%s arrived after %v, want at least the one-way delay %v", id, lat, delay)
		}
	}
	if m := e.Link("us-east").Metrics(); m.BytesToTarget == 0 || m.BytesFromTarget == 0 || m.Active != 1 {
		t.Errorf("link metrics: %+v", m)
	}
}

func TestEmbeddedSurvivorStaysAutonomous(t *testing.T) {
	t.Parallel()
	e := embStart(t, EmbeddedConfig{WANDelay: 5 * time.Millisecond})
	ctx := embCtx(t)
	if err := e.StopRegion("us-east"); err != nil {
		t.Fatal(err)
	}
	if err := e.KillRegion("eu-central"); err != nil {
		t.Fatal(err)
	}
	if err := e.StopHub(); err != nil {
		t.Fatal(err)
	}
	js := embJS(t, e, "eu-west")
	s := embOrigin(t, js, "eu-west")
	embPublish(t, js, "m.eu-west.global.x", "alone")
	c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "reader", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("create consumer with two of three regions and the hub down: %v", err)
	}
	msg, err := c.Next(jetstream.FetchMaxWait(embWait))
	if err != nil {
		t.Fatal(err)
	}
	if err := msg.Ack(); err != nil {
		t.Fatal(err)
	}
	if string(msg.Data()) != "alone" {
		t.Fatalf("got %q", msg.Data())
	}
}

func TestEmbeddedUsers(t *testing.T) {
	t.Parallel()
	users := map[string]*server.User{}
	for _, r := range []string{"us-east", "eu-west"} {
		users[r] = &server.User{Username: r, Password: "pw-" + r}
	}
	e := embStart(t, EmbeddedConfig{Regions: []string{"us-east", "eu-west"}, Users: users})
	if _, err := nats.Connect(e.ClientURL("us-east")); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous connect = %v, want an authorization error", err)
	}
	if _, err := nats.Connect(e.ClientURL("us-east"), nats.UserInfo("eu-west", "pw-eu-west")); err == nil {
		t.Fatal("eu-west's user connected to us-east")
	}
	if _, err := nats.Connect(strings.Replace(e.HubURL(), "meridian-hub-admin:", "x:", 1)); err == nil {
		t.Fatal("the hub accepted wrong credentials")
	}
	us, err := jetstream.NewWithDomain(embConnect(t, e.ClientURL("us-east"), nats.UserInfo("us-east", "pw-us-east")), "us-east")
	if err != nil {
		t.Fatal(err)
	}
	eu, err := jetstream.NewWithDomain(embConnect(t, e.ClientURL("eu-west"), nats.UserInfo("eu-west", "pw-eu-west")), "eu-west")
	if err != nil {
		t.Fatal(err)
	}
	embOrigin(t, us, "us-east")
	embInbox(t, e, eu, "us-east")
	embPublish(t, us, "m.us-east.global.x", "authed")
	embHas(t, eu, "inbox", "authed")
	if _, err := jetstream.NewWithDomain(embConnect(t, e.HubURL()), "eu-west"); err != nil {
		t.Fatal(err)
	}
	if users["us-east"].Password != "pw-us-east" {
		t.Fatal("the caller's user was modified")
	}
}

func TestEmbeddedConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name  string
		cfg   EmbeddedConfig
		field string
	}{
		{"no dir", EmbeddedConfig{Regions: []string{"us-east"}}, "Dir"},
		{"no regions", EmbeddedConfig{Dir: dir}, "Regions"},
		{"bad name", EmbeddedConfig{Dir: dir, Regions: []string{"us.east"}}, "Regions[0]"},
		{"upper case", EmbeddedConfig{Dir: dir, Regions: []string{"US"}}, "Regions[0]"},
		{"duplicate", EmbeddedConfig{Dir: dir, Regions: []string{"a", "a"}}, "Regions[1]"},
		{"domain of unknown region", EmbeddedConfig{Dir: dir, Regions: []string{"a"}, Domains: map[string]string{"b": "b"}}, "Domains[b]"},
		{"bad domain", EmbeddedConfig{Dir: dir, Regions: []string{"a"}, Domains: map[string]string{"a": "x.y"}}, "Domains[a]"},
		{"shared domain", EmbeddedConfig{Dir: dir, Regions: []string{"a", "b"}, Domains: map[string]string{"b": "a"}}, "Domains[b]"},
		{"negative delay", EmbeddedConfig{Dir: dir, Regions: []string{"a"}, WANDelay: -time.Millisecond}, "WANDelay"},
		{"missing user", EmbeddedConfig{Dir: dir, Regions: []string{"a", "b"}, Users: map[string]*server.User{"a": {Username: "a"}}}, "Users[b]"},
		{"user of unknown region", EmbeddedConfig{Dir: dir, Regions: []string{"a"}, Users: map[string]*server.User{"a": {Username: "a"}, "z": {Username: "z"}}}, "Users[z]"},
		{"empty username", EmbeddedConfig{Dir: dir, Regions: []string{"a"}, Users: map[string]*server.User{"a": {}}}, "Users[a].Username"},
		{"user account", EmbeddedConfig{Dir: dir, Regions: []string{"a"}, Users: map[string]*server.User{"a": {Username: "a", Account: server.NewAccount("A")}}}, "Users[a].Account"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := StartEmbedded(context.Background(), tt.cfg)
			if err == nil {
				e.Close()
				t.Fatal("no error")
			}
			var ce *EmbeddedConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidEmbeddedConfig) {
				t.Fatalf("err = %v, want an *EmbeddedConfigError", err)
			}
			if ce.Field != tt.field {
				t.Fatalf("field = %q, want %q (err %v)", ce.Field, tt.field, err)
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 0 {
		t.Fatalf("a rejected config changed the directory: %v %v", entries, err)
	}
}

func TestEmbeddedCorruptPortsFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ports.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := StartEmbedded(context.Background(), EmbeddedConfig{Dir: dir, Regions: []string{"a"}})
	if err == nil || !strings.Contains(err.Error(), "ports.json") {
		t.Fatalf("err = %v, want one naming ports.json", err)
	}
}

// A port remembered in ports.json that another process holds is waited for
// briefly at StartEmbedded, then replaced.
func TestEmbeddedRememberedPortTaken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	squatter, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	taken := squatter.Addr().(*net.TCPAddr).Port
	ports := fmt.Sprintf(`{"hub":{"client":0,"leafnode":0},"regions":{"a":{"client":%d,"link":0}}}`, taken)
	if err := os.WriteFile(filepath.Join(dir, "ports.json"), []byte(ports), 0o644); err != nil {
		t.Fatal(err)
	}
	e := embStart(t, EmbeddedConfig{Dir: dir, Regions: []string{"a"}})
	if e.ClientURL("a") == fmt.Sprintf("nats://127.0.0.1:%d", taken) {
		t.Fatal("started on a port another listener holds")
	}
	embJS(t, e, "a")
}

// A store that cannot be created fails the start at once, naming the store.
func TestEmbeddedStoreUnusable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nats"), []byte("a file, not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := StartEmbedded(context.Background(), EmbeddedConfig{Dir: dir, Regions: []string{"a"}})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "nats", "a")) {
		t.Fatalf("err = %v, want one naming the store", err)
	}
	t.Logf("failed after %v: %v", time.Since(start), err)
}
