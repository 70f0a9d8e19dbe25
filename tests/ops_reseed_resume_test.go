package tests

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/ops"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

// opsHead is one stream message, headers only.
type opsHead struct {
	Seq     uint64
	Subject string
	ID      string // Nats-Msg-Id
	LogSeq  uint64 // Meridian-Seq
	SrcSeq  uint64 // the sequence in its source stream (Nats-Stream-Source)
}

// opsHeads reads the headers of a stream's messages on filter (every
// message when empty), up to the last one at the start, and the stream's
// state at the start.
func opsHeads(ctx context.Context, js jetstream.JetStream, stream, filter string) ([]opsHead, jetstream.StreamState, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, jetstream.StreamState{}, err
	}
	state := s.CachedInfo().State
	if filter == "" {
		filter = ">"
	}
	last, err := s.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, state, nil
	}
	if err != nil {
		return nil, state, err
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, HeadersOnly: true})
	if err != nil {
		return nil, state, err
	}
	var out []opsHead
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return nil, state, fmt.Errorf("%s after %d messages: %w", stream, len(out), err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, state, err
		}
		h := opsHead{Seq: md.Sequence.Stream, Subject: msg.Subject(), ID: msg.Headers().Get(jetstream.MsgIDHeader)}
		if v := msg.Headers().Get(eventlog.SeqHeader); v != "" {
			if h.LogSeq, err = strconv.ParseUint(v, 10, 64); err != nil {
				return nil, state, fmt.Errorf("%s seq %d: %s %q", stream, h.Seq, eventlog.SeqHeader, v)
			}
		}
		if f := strings.Fields(msg.Headers().Get("Nats-Stream-Source")); len(f) >= 2 {
			h.SrcSeq, _ = strconv.ParseUint(f[1], 10, 64)
		}
		out = append(out, h)
		if md.Sequence.Stream >= last.Sequence || md.NumPending == 0 {
			return out, state, nil
		}
	}
}

// opsShortDuplicates gives a stream a 100 ms duplicate window, so that a
// message stored twice shows (the default 2 min window would hide it in a
// test this short).
func opsShortDuplicates(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string) {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond
	for k := range cfg.Metadata {
		if strings.HasPrefix(k, "_nats.") {
			delete(cfg.Metadata, k)
		}
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// opsLogIDs reads a stopped node's log: each record's id (its Nats-Msg-Id)
// and whether it is GLOBAL, by sequence.
func opsLogIDs(t *testing.T, dataDir string) (ids map[uint64]string, global map[uint64]bool, first, last uint64) {
	t.Helper()
	l, err := eventlog.Open(eventlog.Options{Dir: filepath.Join(dataDir, ops.LogDir)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ids, global = map[uint64]string{}, map[uint64]bool{}
	for seq, data := range opsLogRecords(t, l) {
		ev := &meridianv1.Event{}
		if err := proto.Unmarshal(data, ev); err != nil {
			t.Fatalf("log record %d: %v", seq, err)
		}
		ids[seq] = writer.RecordID(ev)
		global[seq] = writer.SubjectZone(ev) == region.GlobalZone
	}
	return ids, global, l.FirstSeq(), l.LastSeq()
}

// opsReseedInterrupted runs ReseedStreams and cancels it from its progress
// callback once stop holds for a report of the re-fill; it returns the
// report, the Done of the report that cancelled it and the error.
func opsReseedInterrupted(ctx context.Context, cfg ops.ReseedStreamsConfig, stop func(ops.Progress) bool) (*ops.ReseedStreamsReport, uint64, error) {
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	var at uint64
	cfg.ProgressEvery = -1 // every message: the cut is exact
	cfg.Progress = func(p ops.Progress) {
		if p.Phase == "re-fill origin" && at == 0 && stop(p) {
			at = p.Done
			cancel()
		}
	}
	rep, err := ops.ReseedStreams(ictx, cfg)
	return rep, at, err
}

// TestOpsReseedStreamsResume loses us-east's JetStream store (its log
// trimmed, with an unshipped tail, and its RESIDENT records held by no
// other region: us-east is alone in its zone), interrupts the re-seed
// twice, in the lost stream's numbering and in the records appended after
// it, and checks that the resumed re-seed leaves exactly what an
// uninterrupted one does, that the other inboxes never store a record
// twice, and that the node then goes on without reusing a sequence.
func TestOpsReseedStreamsResume(t *testing.T) {
	c := opsStartCluster(t)
	ctx := opsCtx(t, 300*time.Second)
	d := opsDeployment(t, c)
	const r = usEast
	origin := region.OriginStream(r)
	others := []string{euWest, euCentral}
	ids := opsCreateIn(t, ctx, c, 40, "resume", r)
	ids = append(ids, opsCreate(t, ctx, c, 6, "resume-all")...)
	opsWaitConverged(t, ctx, d, len(ids))
	n := c.Node(r)
	opsWaitShipped(t, c, r)
	jss := opsAllJS(t, ctx, d)
	for _, o := range others {
		opsShortDuplicates(t, ctx, jss[o], region.InboxStream(o))
	}
	// The lost stream as it was (a prefix of it: heartbeats go on).
	lostHeads, _, err := opsHeads(ctx, jss[r], origin, "")
	if err != nil {
		t.Fatal(err)
	}
	lost := map[uint64]opsHead{}
	for _, h := range lostHeads {
		lost[h.Seq] = h
	}
	trimBelow := n.Log().LastSeq() / 2
	if err := n.Log().Trim(trimBelow); err != nil {
		t.Fatal(err)
	}

	// An unshipped tail, global records first, then RESIDENT ones: the
	// log's records no inbox holds are appended in log order after the
	// lost numbering, so an interruption near the end leaves global
	// records (which the other inboxes source from the partial stream)
	// after RESIDENT ones (which no inbox sources).
	store := c.Embedded.Server(r).StoreDir()
	if err := c.Embedded.StopRegion(r); err != nil {
		t.Fatal(err)
	}
	cl := opsClient(t, c, r)
	for i, id := range ids[:6] {
		ev := opsRole(id.ID, r, "auditor")
		if i >= 3 {
			ev = opsRenamed(id.ID, r, id.Name+" unshipped")
		}
		if _, err := cl.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.StopNode(r); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(store); err != nil {
		t.Fatal(err)
	}
	if err := c.Embedded.StartRegion(ctx, r); err != nil {
		t.Fatal(err)
	}
	logIDs, logGlobal, logFirst, logLast := opsLogIDs(t, c.NodeDir(r))
	if logFirst != trimBelow {
		t.Fatalf("log starts at %d, trimmed below %d", logFirst, trimBelow)
	}

	// What the other inboxes hold of the lost stream decides the
	// placement: each held record at its old sequence, the rest of the
	// log after the last of them, in log order.
	held := map[uint64]opsHead{} // by old origin sequence
	heldLog := map[uint64]bool{}
	heldBefore := map[string]int{}
	for _, o := range others {
		hs, _, err := opsHeads(ctx, jss[o], region.InboxStream(o), region.OriginSubjects(r))
		if err != nil {
			t.Fatal(err)
		}
		heldBefore[o] = len(hs)
		for _, h := range hs {
			if h.SrcSeq == 0 || h.LogSeq == 0 || h.ID == "" {
				t.Fatalf("%s holds %+v of %s without its source sequence, log sequence or id", o, h, r)
			}
			if prev, ok := held[h.SrcSeq]; ok && prev.ID != h.ID {
				t.Fatalf("%s sequence %d: %s in one inbox, %s in another", origin, h.SrcSeq, prev.ID, h.ID)
			}
			if l, ok := lost[h.SrcSeq]; ok && (l.ID != h.ID || l.LogSeq != h.LogSeq) {
				t.Fatalf("%s sequence %d was %+v, %s holds it as %+v", origin, h.SrcSeq, l, o, h)
			}
			held[h.SrcSeq] = h
			heldLog[h.LogSeq] = true
		}
	}
	olds := slices.Sorted(maps.Keys(held))
	minHeld, maxHeld := olds[0], olds[len(olds)-1]
	want := map[uint64]string{} // sequence -> record id
	for s, h := range held {
		want[s] = h.ID
	}
	var extras []uint64 // log records no inbox held, in log order
	var lostLog []uint64
	for seq := uint64(1); seq <= logLast; seq++ {
		switch {
		case heldLog[seq]:
		case seq < logFirst:
			lostLog = append(lostLog, seq)
		default:
			extras = append(extras, seq)
		}
	}
	wantLast := maxHeld + uint64(len(extras))
	wantLogSeq := map[uint64]uint64{}
	for i, seq := range extras {
		want[maxHeld+1+uint64(i)] = logIDs[seq]
		wantLogSeq[maxHeld+1+uint64(i)] = seq
	}
	for s, h := range held {
		wantLogSeq[s] = h.LogSeq
	}
	wantPlaceholders := maxHeld - minHeld + 1 - uint64(len(held))
	if len(extras) < 6 || wantPlaceholders == 0 || len(lostLog) == 0 {
		t.Fatalf("no test: %d records to append, %d placeholders, %d log records lost", len(extras), wantPlaceholders, len(lostLog))
	}
	t.Logf("lost stream %d-%d: %d held, %d placeholders, then %d appended; log %d-%d, %d lost below it",
		minHeld, maxHeld, len(held), wantPlaceholders, len(extras), logFirst, logLast, len(lostLog))

	// checkOrigin compares the origin stream with the placement up to its
	// last message; complete: the re-seed ended (placeholders deleted).
	checkOrigin := func(what string, complete bool) jetstream.StreamState {
		t.Helper()
		heads, state, err := opsHeads(ctx, jss[r], origin, "")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if state.FirstSeq != minHeld {
			t.Fatalf("%s: origin starts at %d, the lost one at %d", what, state.FirstSeq, minHeld)
		}
		seen := map[string]uint64{}
		for _, h := range heads {
			id, ok := want[h.Seq]
			switch {
			case !ok && (complete || h.ID != "" || h.LogSeq != 0):
				t.Errorf("%s: sequence %d holds %+v, want nothing (a placeholder)", what, h.Seq, h)
			case ok && (h.ID != id || h.LogSeq != wantLogSeq[h.Seq]):
				t.Errorf("%s: sequence %d holds %s (log %d), want %s (log %d)", what, h.Seq, h.ID, h.LogSeq, id, wantLogSeq[h.Seq])
			}
			if h.ID != "" {
				if prev, ok := seen[h.ID]; ok {
					t.Errorf("%s: record %s at sequences %d and %d", what, h.ID, prev, h.Seq)
				}
				seen[h.ID] = h.Seq
			}
		}
		if !complete && uint64(len(heads)) != state.LastSeq-minHeld+1 {
			t.Errorf("%s: %d messages from %d to %d: a hole before the re-seed ended", what, len(heads), minHeld, state.LastSeq)
		}
		if t.Failed() {
			t.FailNow()
		}
		return state
	}
	checkInboxes := func(what string) {
		t.Helper()
		for _, o := range others {
			if got := opsInboxCountOf(t, ctx, jss[o], o, r); got != uint64(heldBefore[o]) {
				t.Fatalf("%s: %s holds %d messages of %s, %d before", what, o, got, r, heldBefore[o])
			}
		}
	}

	plan, err := region.Compile(c.Policy)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ops.ReseedStreamsConfig{Plan: plan, Region: r, DataDir: c.NodeDir(r), JS: jss}

	// 1. Interrupted half-way through the lost numbering.
	span := maxHeld - minHeld + 1
	rep1, cut1, err := opsReseedInterrupted(ctx, cfg, func(p ops.Progress) bool { return p.Done >= span/2 })
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ops.ErrInterrupted) || cut1 == 0 {
		t.Fatalf("interrupted reseed at %d: %v, want a context error wrapped in ErrInterrupted", cut1, err)
	}
	t.Logf("interrupted at %d: %v", cut1, err)
	st1 := checkOrigin("after the first interruption", false)
	if st1.LastSeq != minHeld+cut1-1 || rep1.PlacedThrough != st1.LastSeq || rep1.Resumed {
		t.Fatalf("interrupted after %d messages: origin up to %d, report placed through %d (resumed %v); want %d",
			cut1, st1.LastSeq, rep1.PlacedThrough, rep1.Resumed, minHeld+cut1-1)
	}
	checkInboxes("after the first interruption")

	// 2. Without Force: refused, nothing changed.
	if _, err := ops.ReseedStreams(ctx, cfg); !errors.Is(err, ops.ErrNotLost) {
		t.Fatalf("reseed of a partial origin without Force: %v, want ErrNotLost", err)
	}
	if st := checkOrigin("after the refused reseed", false); st.LastSeq != st1.LastSeq || st.Msgs != st1.Msgs {
		t.Fatalf("the refused reseed changed the origin: %+v, was %+v", st, st1)
	}
	checkInboxes("after the refused reseed")

	// 3. With Force, resumed and interrupted again, two messages before
	// the end: in the appended records, global ones (sourced by the other
	// inboxes) after RESIDENT ones (sourced by none).
	cfg.Force = true
	rep3, cut3, err := opsReseedInterrupted(ctx, cfg, func(p ops.Progress) bool { return p.Done+2 >= p.Total })
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ops.ErrInterrupted) || rep3 == nil {
		t.Fatalf("second interrupted reseed: %v, want a context error wrapped in ErrInterrupted", err)
	}
	t.Logf("interrupted again at %d: %v", cut3, err)
	if !rep3.Resumed || rep3.ResumedAt != st1.LastSeq+1 || rep3.OriginFirstSeq != minHeld {
		t.Fatalf("second reseed: resumed %v at %d from %d, want at %d from %d", rep3.Resumed, rep3.ResumedAt, rep3.OriginFirstSeq, st1.LastSeq+1, minHeld)
	}
	st3 := checkOrigin("after the second interruption", false)
	if st3.LastSeq != minHeld+cut3-1 || rep3.PlacedThrough != st3.LastSeq || st3.LastSeq+2 != wantLast {
		t.Fatalf("interrupted after %d messages: origin up to %d, report placed through %d; want %d, two before %d",
			cut3, st3.LastSeq, rep3.PlacedThrough, minHeld+cut3-1, wantLast)
	}
	var residentPlaced, globalPlaced []uint64
	for i, seq := range extras {
		if pos := maxHeld + 1 + uint64(i); pos <= st3.LastSeq {
			if logGlobal[seq] {
				globalPlaced = append(globalPlaced, pos)
			} else {
				residentPlaced = append(residentPlaced, pos)
			}
		}
	}
	if len(residentPlaced) == 0 || len(globalPlaced) == 0 || globalPlaced[len(globalPlaced)-1] < residentPlaced[0] {
		t.Fatalf("no test: appended before the cut: RESIDENT at %v, global at %v", residentPlaced, globalPlaced)
	}
	// The other inboxes source the global records placed after the lost
	// numbering, each once.
	for _, o := range others {
		opsEventually(t, convergeTimeout, o+" sourced the partial stream's appended global records", func() (bool, string) {
			hs, _, err := opsHeads(ctx, jss[o], region.InboxStream(o), region.OriginSubjects(r))
			if err != nil {
				return false, err.Error()
			}
			got := map[uint64]int{}
			for _, h := range hs {
				got[h.SrcSeq]++
			}
			for _, pos := range globalPlaced {
				if got[pos] != 1 {
					return false, fmt.Sprintf("%s holds the record at %s sequence %d %d times", o, origin, pos, got[pos])
				}
			}
			return len(hs) == heldBefore[o]+len(globalPlaced), fmt.Sprintf("%s holds %d messages of %s, want %d", o, len(hs), r, heldBefore[o]+len(globalPlaced))
		})
	}

	// 4. With Force again: resumed after the second cut, to the end.
	rep, err := ops.ReseedStreams(ctx, cfg)
	if err != nil {
		t.Fatalf("resumed reseed: %v", err)
	}
	t.Logf("resumed reseed: %+v", rep)
	if !rep.Resumed || rep.ResumedAt != st3.LastSeq+1 || rep.OriginFirstSeq != minHeld || rep.PlacedThrough != wantLast {
		t.Fatalf("resumed reseed: resumed %v at %d, from %d through %d; want at %d, from %d through %d",
			rep.Resumed, rep.ResumedAt, rep.OriginFirstSeq, rep.PlacedThrough, st3.LastSeq+1, minHeld, wantLast)
	}
	if rep.Placeholders != wantPlaceholders || rep.AlreadyPlaced != st3.LastSeq-minHeld+1-wantPlaceholders {
		t.Errorf("resumed reseed: %d placeholders, %d records already placed; want %d, %d",
			rep.Placeholders, rep.AlreadyPlaced, wantPlaceholders, st3.LastSeq-minHeld+1-wantPlaceholders)
	}
	if want := opsRanges(lostLog); !slices.Equal(rep.Lost, want) {
		t.Errorf("lost %v, want %v", rep.Lost, want)
	}
	if !rep.ModelReset {
		t.Errorf("the read model was not rewound")
	}
	final := checkOrigin("after the resumed reseed", true)
	if final.LastSeq != wantLast || final.Msgs != uint64(len(want)) || uint64(final.NumDeleted) != wantPlaceholders {
		t.Fatalf("origin %d-%d, %d messages, %d deleted; want %d-%d, %d messages, %d placeholders deleted",
			final.FirstSeq, final.LastSeq, final.Msgs, final.NumDeleted, minHeld, wantLast, len(want), wantPlaceholders)
	}
	// No gaps besides the reported ones: every log record is in the
	// stream or reported lost.
	inStream := map[uint64]bool{}
	for _, s := range wantLogSeq {
		inStream[s] = true
	}
	for seq := uint64(1); seq <= logLast; seq++ {
		if !inStream[seq] && !slices.ContainsFunc(rep.Lost, func(g ops.SeqRange) bool { return g.From <= seq && seq <= g.To }) {
			t.Errorf("log record %d is neither in the origin nor reported lost", seq)
		}
	}
	// The other inboxes hold every global record once, the appended ones
	// included.
	var globalAppended int
	for _, seq := range extras {
		if logGlobal[seq] {
			globalAppended++
		}
	}
	for _, o := range others {
		opsEventually(t, convergeTimeout, o+" holds us-east's global records once each", func() (bool, string) {
			hs, _, err := opsHeads(ctx, jss[o], region.InboxStream(o), region.OriginSubjects(r))
			if err != nil {
				return false, err.Error()
			}
			got := map[string]int{}
			for _, h := range hs {
				if got[h.ID]++; got[h.ID] > 1 {
					return false, fmt.Sprintf("%s holds %s twice", o, h.ID)
				}
			}
			return len(hs) == heldBefore[o]+globalAppended, fmt.Sprintf("%s holds %d messages of %s, want %d", o, len(hs), r, heldBefore[o]+globalAppended)
		})
	}

	// 5. The node again: new records follow, never reusing a sequence of
	// the log or of the stream, and replicate.
	if err := c.StartNode(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(r).WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	more := opsCreateIn(t, ctx, c, 6, "after", r)
	more = append(more, opsCreate(t, ctx, c, 6, "after-all")...)
	opsWaitConverged(t, ctx, d, len(ids)+len(more))
	heads, _, err := opsHeads(ctx, jss[r], origin, "")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var newer int
	for _, h := range heads {
		if seen[h.ID] {
			t.Errorf("record %s twice in %s", h.ID, origin)
		}
		seen[h.ID] = true
		if id, ok := want[h.Seq]; ok {
			if h.ID != id {
				t.Errorf("sequence %d holds %s after the restart, %s before", h.Seq, h.ID, id)
			}
			continue
		}
		if h.Seq <= wantLast || h.LogSeq <= logLast {
			t.Errorf("new record %s at %s sequence %d, log sequence %d: reuses a number (re-seeded up to %d, log up to %d)",
				h.ID, origin, h.Seq, h.LogSeq, wantLast, logLast)
		}
		newer++
	}
	if newer == 0 {
		t.Fatalf("no new record in %s", origin)
	}
	for _, o := range others {
		zone := opsZone(t, c, o)
		opsEventually(t, convergeTimeout, o+" holds us-east's new records once each", func() (bool, string) {
			hs, _, err := opsHeads(ctx, jss[o], region.InboxStream(o), region.OriginSubjects(r))
			if err != nil {
				return false, err.Error()
			}
			got := map[string]int{}
			for _, h := range hs {
				if got[h.ID]++; got[h.ID] > 1 {
					return false, fmt.Sprintf("%s holds %s twice", o, h.ID)
				}
			}
			for _, h := range heads {
				sp, err := region.ParseSubject(h.Subject)
				if err != nil {
					return false, err.Error()
				}
				if (sp.Zone == region.GlobalZone || sp.Zone == zone) && got[h.ID] == 0 {
					return false, fmt.Sprintf("%s lacks %s (%s sequence %d)", o, h.ID, origin, h.Seq)
				}
			}
			return true, ""
		})
	}
}

// opsRanges turns ascending sequences into ranges.
func opsRanges(seqs []uint64) []ops.SeqRange {
	var out []ops.SeqRange
	for _, s := range seqs {
		if n := len(out); n > 0 && out[n-1].To+1 == s {
			out[n-1].To = s
			continue
		}
		out = append(out, ops.SeqRange{From: s, To: s})
	}
	return out
}
