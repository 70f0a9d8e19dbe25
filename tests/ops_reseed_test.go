package tests

import (
	"bytes"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/ops"
	"github.com/meridian-id/meridian/region"
)

// opsLogRecords reads every record of a log.
func opsLogRecords(t *testing.T, l *eventlog.Log) map[uint64][]byte {
	t.Helper()
	out := map[uint64][]byte{}
	for from := l.FirstSeq(); from <= l.LastSeq(); {
		recs, err := l.Read(from, 1024)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			out[r.Seq] = r.Data
		}
		from = recs[len(recs)-1].Seq + 1
	}
	return out
}

// TestOpsReseedLog deletes a region's whole data directory (with an
// unshipped tail in its log), rebuilds the log from the origin stream
// while the other regions keep writing, and starts the node again.
func TestOpsReseedLog(t *testing.T) {
	c := opsStartCluster(t)
	ctx := opsCtx(t, 120*time.Second)
	d := opsDeployment(t, c)
	const r = euWest
	ids := opsCreate(t, ctx, c, 24, "reseed-log")
	opsWaitConverged(t, ctx, d, len(ids))
	n := c.Node(r)
	opsEventually(t, 30*time.Second, "eu-west shipped its log", func() (bool, string) {
		st := n.Status()
		return st.Shipper != nil && st.Shipper.Backlog == 0, opsReport(st.Shipper)
	})
	shipped := opsLogRecords(t, n.Log())
	shippedLast := n.Log().LastSeq()
	nodeID := n.ID()

	// An unshipped tail: acknowledged while the region's NATS is down.
	if err := c.Embedded.StopRegion(r); err != nil {
		t.Fatal(err)
	}
	// (Renames: a new identity would need the claims region, across the
	// cut.)
	for _, id := range ids[:3] {
		if id.Home != r {
			continue
		}
		if _, err := opsClient(t, c, r).Append(ctx, opsRenamed(id.ID, r, "lost with the disk")); err != nil {
			t.Fatal(err)
		}
	}
	lastKnown := n.Log().LastSeq()
	if lastKnown <= shippedLast {
		t.Fatalf("no unshipped tail: log at %d, shipped %d", lastKnown, shippedLast)
	}
	if err := c.StopNode(r); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(c.NodeDir(r)); err != nil {
		t.Fatal(err)
	}
	if err := c.Embedded.StartRegion(ctx, r); err != nil {
		t.Fatal(err)
	}
	// The others keep writing.
	others := opsCreateIn(t, ctx, c, 6, "meanwhile", usEast, euCentral)
	rep, err := ops.ReseedLog(ctx, ops.ReseedLogConfig{Region: r, JS: opsJS(t, ctx, d, r), DataDir: c.NodeDir(r), LastKnownSeq: lastKnown})
	if err != nil {
		t.Fatalf("reseed log: %v", err)
	}
	t.Logf("reseed log: %+v", rep)
	if rep.Last < shippedLast || len(rep.Missing) != 0 || rep.Duplicates != 0 {
		t.Errorf("imported up to %d (shipped %d), missing %v, duplicates %d", rep.Last, shippedLast, rep.Missing, rep.Duplicates)
	}
	if rep.LostTail == nil || rep.LostTail.To != lastKnown || rep.LostTail.From != rep.Last+1 || rep.Floor != lastKnown {
		t.Errorf("lost tail %v, floor %d; want %d-%d, floor %d", rep.LostTail, rep.Floor, rep.Last+1, lastKnown, lastKnown)
	}
	if !rep.NodeIDRestored || rep.NodeID != nodeID {
		t.Errorf("node id %q (restored %v), want %q", rep.NodeID, rep.NodeIDRestored, nodeID)
	}

	if err := c.StartNode(ctx, r); err != nil {
		t.Fatal(err)
	}
	n = c.Node(r)
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if n.ID() != nodeID {
		t.Errorf("node restarted as %s, want %s", n.ID(), nodeID)
	}
	got := opsLogRecords(t, n.Log())
	for seq, data := range shipped {
		if !bytes.Equal(got[seq], data) {
			t.Fatalf("record %d differs after the re-seed", seq)
		}
	}
	// New records never reuse a number, and replicate.
	more := opsCreate(t, ctx, c, 6, "after")
	if first := n.Log().FirstSeq(); first != 1 {
		t.Errorf("log starts at %d", first)
	}
	for seq := range opsLogRecords(t, n.Log()) {
		if seq > rep.Last && seq <= lastKnown {
			t.Errorf("sequence %d of the lost tail was reused", seq)
		}
	}
	opsWaitConverged(t, ctx, d, len(ids)+len(others)+len(more))
}

// TestOpsReseedStreams deletes a region's JetStream store (its log was
// trimmed, so part of its history is only in other regions' inboxes),
// recreates and re-fills its streams while the others keep writing, and
// starts the node again.
func TestOpsReseedStreams(t *testing.T) {
	c := opsStartCluster(t)
	ctx := opsCtx(t, 150*time.Second)
	d := opsDeployment(t, c)
	const r = euWest
	ids := opsCreate(t, ctx, c, 24, "reseed-js")
	opsWaitConverged(t, ctx, d, len(ids))
	n := c.Node(r)
	opsEventually(t, 30*time.Second, "eu-west shipped its log", func() (bool, string) {
		st := n.Status()
		return st.Shipper != nil && st.Shipper.Backlog == 0, opsReport(st.Shipper)
	})
	trimBelow := n.Log().LastSeq() / 2
	if err := n.Log().Trim(trimBelow); err != nil {
		t.Fatal(err)
	}
	if err := c.StopNode(r); err != nil {
		t.Fatal(err)
	}
	store := c.Embedded.Server(r).StoreDir()
	if err := c.Embedded.StopRegion(r); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(store); err != nil {
		t.Fatal(err)
	}
	if err := c.Embedded.StartRegion(ctx, r); err != nil {
		t.Fatal(err)
	}
	others := opsCreateIn(t, ctx, c, 6, "meanwhile", usEast, euCentral)

	conns := d.Connect()
	defer conns.Close()
	jss := map[string]jetstream.JetStream{}
	for _, name := range allRegions {
		js, err := conns.JS(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		jss[name] = js
	}
	plan, err := region.Compile(c.Policy)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ops.ReseedStreams(ctx, ops.ReseedStreamsConfig{Plan: plan, Region: r, DataDir: c.NodeDir(r), JS: jss})
	if err != nil {
		t.Fatalf("reseed streams: %v", err)
	}
	t.Logf("reseed streams: %+v", rep)
	if rep.LogFirst != trimBelow || rep.FromLog != rep.LogLast-rep.LogFirst+1 {
		t.Errorf("log %d-%d, re-shipped %d", rep.LogFirst, rep.LogLast, rep.FromLog)
	}
	if len(rep.Lost) != 0 || ops.RangesLen(rep.HistorySeqs) != trimBelow-1 {
		t.Errorf("history below %d: recovered %v, lost %v", trimBelow, rep.HistorySeqs, rep.Lost)
	}
	if !rep.ModelReset || rep.ModelInboxWas == 0 {
		t.Errorf("model not rewound: %+v", rep)
	}
	// The new origin stream holds the whole history again.
	seqs := map[uint64]bool{}
	s, err := jss[r].Stream(ctx, region.OriginStream(r))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	for total := s.CachedInfo().State.Msgs; uint64(len(seqs)) < total; {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		md, _ := msg.Metadata()
		seq, err := strconv.ParseUint(msg.Headers().Get(eventlog.SeqHeader), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seqs[seq] = true
		if md.NumPending == 0 {
			break
		}
	}
	for seq := uint64(1); seq <= rep.LogLast; seq++ {
		if !seqs[seq] {
			t.Fatalf("origin stream lacks sequence %d after the re-seed", seq)
		}
	}

	if err := c.StartNode(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(r).WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	more := opsCreate(t, ctx, c, 6, "after")
	opsWaitConverged(t, ctx, d, len(ids)+len(others)+len(more))
}
