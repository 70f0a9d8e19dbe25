package tests

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/ops"
	"github.com/meridian-id/meridian/ops/inspect"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

// TestOpsVerify checks a healthy deployment, then corrupts one identity in
// one region's read model (through Pebble, behind the node's back) and
// misplaces a RESIDENT record of zone eu into us-east's inbox: verify must
// name exactly those two.
func TestOpsVerify(t *testing.T) {
	c := opsStartCluster(t)
	ctx := opsCtx(t, 120*time.Second)
	d := opsDeployment(t, c)
	ids := opsCreate(t, ctx, c, 24, "verify")
	opsWaitConverged(t, ctx, d, len(ids))
	conns := d.Connect()
	defer conns.Close()

	rep, err := ops.Verify(ctx, ops.VerifyConfig{Deployment: d, Conns: conns})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("healthy deployment: findings %v, problems %v, convergence %s", rep.Findings, rep.Problems, opsReport(rep.Convergence))
	}
	if len(rep.Convergence) != 2 || len(rep.Audits) != 3 || len(rep.Streams) < 6 {
		t.Fatalf("checks run: %d comparisons, %d region audits, %d streams", len(rep.Convergence), len(rep.Audits), len(rep.Streams))
	}

	// A corrupted identity in us-east.
	victim := ids[4].ID
	if err := c.StopNode(usEast); err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(filepath.Join(c.NodeDir(usEast), "model"), &pebble.Options{Logger: opsQuietPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	key := append([]byte{'g'}, victim...)
	v, closer, err := db.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	st := &meridianv1.IdentityState{}
	if err := proto.Unmarshal(v, st); err != nil {
		t.Fatal(err)
	}
	closer.Close()
	st.UpdatedHlc += 1 << 20 // a state no event made
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err := db.Set(key, b, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartNode(ctx, usEast); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(usEast).WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	// A RESIDENT record of zone eu (real bytes from eu-west's log) stored
	// in us-east's inbox, through a subject the inbox takes for a moment.
	// The subject names an origin no region has: an eu-west subject would
	// also be captured by eu-west's origin stream across the leaf nodes,
	// and the publish would be answered by whichever stream acked first.
	var misplaced []byte
	for _, data := range opsLogRecords(t, c.Node(euWest).Log()) {
		if h, err := inspect.ReadHeader(data); err == nil && h.Part == meridianv1.Part_PART_RESIDENT {
			misplaced = data
			break
		}
	}
	if misplaced == nil {
		t.Fatal("no RESIDENT record in eu-west's log")
	}
	js := opsJS(t, ctx, d, usEast)
	inbox, err := js.Stream(ctx, region.InboxStream(usEast))
	if err != nil {
		t.Fatal(err)
	}
	cfg := inbox.CachedInfo().Config
	subject := region.Subject("stray", "eu", "identity_created")
	cfg.Subjects = []string{subject}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("add a subject to the inbox: %v", err)
	}
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: misplaced, Header: nats.Header{jetstream.MsgIDHeader: {"misplaced-" + opsHex(4)}}})
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != region.InboxStream(usEast) {
		t.Fatalf("misplaced record stored in %s (domain %s), want %s", ack.Stream, ack.Domain, region.InboxStream(usEast))
	}
	cfg.Subjects = nil
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("restore the inbox: %v", err)
	}

	rep, err = ops.Verify(ctx, ops.VerifyConfig{Deployment: d, Conns: conns, Settle: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Problems) > 0 {
		t.Fatalf("verify passed a corrupted deployment (problems %v)", rep.Problems)
	}
	var diffs []ops.Difference
	for _, cmp := range rep.Convergence {
		diffs = append(diffs, cmp.Differences...)
	}
	if len(diffs) != 1 || diffs[0].Identity != victim || !slices.Equal(diffs[0].Odd, []string{usEast}) {
		t.Errorf("differences %+v, want only %s, odd in %s", diffs, victim, usEast)
	}
	if len(rep.Findings) != 1 {
		t.Fatalf("findings %v, want the one misplaced record", rep.Findings)
	}
	f := rep.Findings[0]
	if f.Region != usEast || f.Store != "stream "+region.InboxStream(usEast) || f.Seq != ack.Sequence || f.Rule != inspect.RuleOutsideZone || f.Zone != "eu" {
		t.Errorf("finding %s, want us-east's inbox seq %d: resident data of zone eu", f, ack.Sequence)
	}

	// The quick stream audit (subject counts) sees it too.
	rep, err = ops.Verify(ctx, ops.VerifyConfig{Deployment: d, Conns: conns, SkipConvergence: true, QuickStreams: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].Subject != subject {
		t.Errorf("quick audit findings %v, want one on %s", rep.Findings, subject)
	}
}

type opsQuietPebble struct{}

func (opsQuietPebble) Infof(string, ...any)  {}
func (opsQuietPebble) Errorf(string, ...any) {}
func (opsQuietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
