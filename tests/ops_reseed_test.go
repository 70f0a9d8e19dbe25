package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	opsWaitShipped(t, c, r)
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
	ids := opsCreate(t, ctx, c, 12, "reseed-js")
	// A message in the origin stream that no inbox sources: the lost
	// stream's numbering is then not the log's, and a re-fill that
	// renumbered would have every other inbox resume one record off.
	{
		pc := d.Connect()
		pjs, err := pc.JS(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pjs.Publish(ctx, region.SubjectRoot+"."+r+".unsourced.probe", []byte("probe")); err != nil {
			t.Fatal(err)
		}
		pc.Close()
	}
	ids = append(ids, opsCreate(t, ctx, c, 12, "reseed-js2")...)
	opsWaitConverged(t, ctx, d, len(ids))
	n := c.Node(r)
	opsWaitShipped(t, c, r)
	jss := opsAllJS(t, ctx, d)
	// What the other inboxes hold of eu-west before its store goes.
	heldBefore := map[string]uint64{}
	for _, o := range allRegions {
		if o != r {
			heldBefore[o] = opsInboxCountOf(t, ctx, jss[o], o, r)
		}
	}
	// A short duplicate window on the other inboxes, so that a record
	// sourced twice would be stored twice (with the default 2 min window a
	// test this short could not tell).
	for o := range heldBefore {
		opsShortDuplicates(t, ctx, jss[o], region.InboxStream(o))
	}
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

	// The other inboxes continue where they were: the recreated origin
	// holds every record at its old sequence, and each source resumes after
	// the last one it had.
	if rep.OriginFirstSeq != 1 || rep.Appended != 0 || rep.Placeholders != 1 {
		t.Errorf("origin from %d, %d records appended, %d placeholders; want the lost numbering from 1, every record held somewhere but the probe", rep.OriginFirstSeq, rep.Appended, rep.Placeholders)
	}
	if len(rep.Continued) < 3 || len(rep.NotContinued) > 0 { // us-east: global; eu-central: global and eu
		t.Fatalf("continued %+v, not %v", rep.Continued, rep.NotContinued)
	}
	// Everything had been sourced before the loss, and the last record is
	// a global one (a heartbeat), so the global sources were at the end.
	originLast := s.CachedInfo().State.LastSeq
	for _, sc := range rep.Continued {
		if sc.StartSeq != sc.OldSourceSeq+1 || (sc.LastLogSeq == 0) != (sc.OldSourceSeq == 0) || sc.OldSourceSeq > originLast {
			t.Errorf("%+v: want the start after the old source sequence (origin at %d)", sc, originLast)
		}
		if sc.Filter == region.ZoneFilter(r, region.GlobalZone) && sc.OldSourceSeq != originLast {
			t.Errorf("%+v: the global filter had sourced up to the end, %d", sc, originLast)
		}
	}
	// Again: refused, the origin holds messages; with Force it resumes
	// after the last message placed (the placement is the same each time),
	// here with nothing left to place.
	rcfg := ops.ReseedStreamsConfig{Plan: plan, Region: r, DataDir: c.NodeDir(r), JS: jss}
	if _, err := ops.ReseedStreams(ctx, rcfg); !errors.Is(err, ops.ErrNotLost) {
		t.Errorf("second reseed without Force: %v, want ErrNotLost", err)
	}
	rcfg.Force = true
	rep2, err := ops.ReseedStreams(ctx, rcfg)
	if err != nil || !rep2.Resumed || rep2.OriginFirstSeq != rep.OriginFirstSeq {
		t.Fatalf("forced second reseed: %v, %+v", err, rep2)
	}
	if info, err := s.Info(ctx); err != nil || info.State.LastSeq != originLast || info.State.Msgs != s.CachedInfo().State.Msgs {
		t.Errorf("forced second reseed changed the origin: %v, %+v (was last %d, %d messages)", err, info.State, originLast, s.CachedInfo().State.Msgs)
	}
	for o, before := range heldBefore {
		if got := opsInboxCountOf(t, ctx, jss[o], o, r); got != before {
			t.Errorf("%s holds %d messages of %s after the re-seed, %d before", o, got, r, before)
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
	// From now on each other inbox grows by exactly eu-west's new records:
	// it holds each of them once (the duplicate window would hide repeats
	// from counts, so ids are compared).
	for o := range heldBefore {
		zone := opsZone(t, c, o)
		opsEventually(t, 30*time.Second, o+" holds eu-west's records once each", func() (bool, string) {
			held, dups, err := opsScanIDs(ctx, jss[o], region.InboxStream(o), region.OriginSubjects(r))
			if err != nil {
				return false, err.Error()
			}
			if len(dups) > 0 {
				return false, fmt.Sprintf("%s holds %d of eu-west's records more than once, e.g. %s", o, len(dups), dups[0])
			}
			all, _, err := opsScanIDs(ctx, jss[r], region.OriginStream(r), region.OriginSubjects(r))
			if err != nil {
				return false, err.Error()
			}
			missing := 0
			for id, subj := range all {
				sp, err := region.ParseSubject(subj)
				if err != nil {
					return false, err.Error()
				}
				if _, ok := held[id]; !ok && (sp.Zone == region.GlobalZone || sp.Zone == zone) {
					missing++
				}
			}
			return missing == 0, fmt.Sprintf("%d of eu-west's records missing in %s", missing, o)
		})
	}
}

// opsInboxCountOf counts the messages of origin's subjects in a region's
// inbox.
func opsInboxCountOf(t *testing.T, ctx context.Context, js jetstream.JetStream, inboxRegion, origin string) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, region.InboxStream(inboxRegion))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(region.OriginSubjects(origin)))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// opsScanIDs reads the Nats-Msg-Id and subject of a stream's messages on
// filter (up to the last message at the start), and lists ids seen twice.
func opsScanIDs(ctx context.Context, js jetstream.JetStream, stream, filter string) (map[string]string, []string, error) {
	ids := map[string]string{}
	var dups []string
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, nil, err
	}
	last := s.CachedInfo().State.LastSeq
	if _, err := s.GetLastMsgForSubject(ctx, filter); errors.Is(err, jetstream.ErrMsgNotFound) {
		return ids, nil, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, HeadersOnly: true})
	if err != nil {
		return nil, nil, err
	}
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return nil, nil, err
		}
		md, _ := msg.Metadata()
		id := msg.Headers().Get(jetstream.MsgIDHeader)
		if _, ok := ids[id]; ok {
			dups = append(dups, id)
		}
		ids[id] = msg.Subject()
		if md.NumPending == 0 || md.Sequence.Stream >= last {
			return ids, dups, nil
		}
	}
}

// TestOpsReseedStreamsWithoutLog loses a region's whole data directory and
// its JetStream store: its streams are re-seeded from the other regions'
// inboxes alone (the log is new and empty), then its log from the
// re-filled origin, and the node starts again.
func TestOpsReseedStreamsWithoutLog(t *testing.T) {
	c := opsStartCluster(t)
	ctx := opsCtx(t, 150*time.Second)
	d := opsDeployment(t, c)
	const r = euWest
	origin := region.OriginStream(r)
	ids := opsCreate(t, ctx, c, 12, "nolog")
	opsWaitConverged(t, ctx, d, len(ids))
	n := c.Node(r)
	opsWaitShipped(t, c, r)
	nodeID := n.ID()
	jss := opsAllJS(t, ctx, d)
	if err := c.StopNode(r); err != nil {
		t.Fatal(err)
	}
	store := c.Embedded.Server(r).StoreDir()
	if err := c.Embedded.StopRegion(r); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{store, c.NodeDir(r)} {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Embedded.StartRegion(ctx, r); err != nil {
		t.Fatal(err)
	}
	// eu-central, in eu-west's zone, holds all of it.
	heads, _, err := opsHeads(ctx, jss[euCentral], region.InboxStream(euCentral), region.OriginSubjects(r))
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]opsHead{}
	var lastLog uint64
	for _, h := range heads {
		want[h.SrcSeq] = h
		lastLog = max(lastLog, h.LogSeq)
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
	if rep.LogLast != 0 || rep.FromLog != 0 || rep.Republished != uint64(len(want)) || ops.RangesLen(rep.HistorySeqs) != lastLog || len(rep.Lost) != 0 {
		t.Errorf("log %d-%d: %d records from the log, %d from the inboxes (history %v, lost %v); want all %d from the inboxes, up to log sequence %d",
			rep.LogFirst, rep.LogLast, rep.FromLog, rep.Republished, rep.HistorySeqs, rep.Lost, len(want), lastLog)
	}
	got, state, err := opsHeads(ctx, jss[r], origin, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || state.NumDeleted != int(rep.Placeholders) {
		t.Errorf("origin holds %d messages (%d deleted), want %d (%d placeholders)", len(got), state.NumDeleted, len(want), rep.Placeholders)
	}
	for _, h := range got {
		if w, ok := want[h.Seq]; !ok || w.ID != h.ID || w.LogSeq != h.LogSeq {
			t.Errorf("origin sequence %d holds %+v, want %+v", h.Seq, h, w)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	lrep, err := ops.ReseedLog(ctx, ops.ReseedLogConfig{Region: r, JS: jss[r], DataDir: c.NodeDir(r), LastKnownSeq: lastLog})
	if err != nil {
		t.Fatalf("reseed log: %v", err)
	}
	if lrep.Last != lastLog || len(lrep.Missing) != 0 || lrep.NodeID != nodeID {
		t.Fatalf("reseed log: up to %d, missing %v, node %s; want up to %d, node %s", lrep.Last, lrep.Missing, lrep.NodeID, lastLog, nodeID)
	}
	if err := c.StartNode(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(r).WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	more := opsCreate(t, ctx, c, 6, "after")
	opsWaitConverged(t, ctx, d, len(ids)+len(more))
	got, _, err = opsHeads(ctx, jss[r], origin, "")
	if err != nil {
		t.Fatal(err)
	}
	var newer int
	for _, h := range got {
		if _, ok := want[h.Seq]; ok {
			continue
		}
		if h.Seq <= state.LastSeq || h.LogSeq <= lastLog {
			t.Errorf("new record %s at %s sequence %d, log sequence %d: reuses a number", h.ID, origin, h.Seq, h.LogSeq)
		}
		newer++
	}
	if newer == 0 {
		t.Errorf("no new record in %s", origin)
	}
}
