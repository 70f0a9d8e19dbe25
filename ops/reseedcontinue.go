package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/region"
)

// Re-filling a recreated origin stream so that the other regions' inboxes
// continue where they were (see ReseedStreams).

// SourceContinuation is where one other region's inbox source of the
// re-seeded origin continues.
type SourceContinuation struct {
	Region string `json:"region"`
	Inbox  string `json:"inbox"`
	Filter string `json:"filter"`
	// LastLogSeq is the last origin log sequence the inbox held on the
	// filter; OldSourceSeq that record's sequence in the lost origin
	// stream (0: it held nothing on the filter).
	LastLogSeq   uint64 `json:"last_log_seq"`
	OldSourceSeq uint64 `json:"old_source_seq"`
	// StartSeq is where it continues in the recreated origin stream: the
	// sequence after OldSourceSeq, which names the same record as before.
	StartSeq uint64 `json:"start_seq"`
}

// heldCopy is one record of the origin as another inbox holds it.
type heldCopy struct {
	logSeq  uint64
	subject string
	msgID   string
	data    []byte // kept only below the log's first record
	region  string
}

// heldRecords is what the other inboxes hold of the origin, by the
// sequence each record had in the lost origin stream.
type heldRecords struct {
	byOldSeq map[uint64]*heldCopy
	logSeqs  map[uint64]bool // log sequences held anywhere
}

func (h *heldRecords) first() uint64 {
	first := uint64(0)
	for s := range h.byOldSeq {
		if first == 0 || s < first {
			first = s
		}
	}
	return max(first, 1)
}

// collectHeld scans every reachable other inbox for the origin's records;
// zone mates first, since they hold RESIDENT parts too.
func (c *ReseedStreamsConfig) collectHeld(ctx context.Context, rep *ReseedStreamsReport, rp *region.RegionPlan) (*heldRecords, error) {
	h := &heldRecords{byOldSeq: map[uint64]*heldCopy{}, logSeqs: map[uint64]bool{}}
	var others []string
	for _, r := range c.Plan.Regions {
		if r.Region != c.Region && c.JS[r.Region] != nil {
			others = append(others, r.Region)
		}
	}
	slices.SortStableFunc(others, func(a, b string) int {
		za, zb := c.zoneOf(a) == rp.Zone, c.zoneOf(b) == rp.Zone
		switch {
		case za && !zb:
			return -1
		case zb && !za:
			return 1
		}
		return 0
	})
	m := newMeter(c.Progress, "reseed streams", "read other inboxes", "regions", uint64(len(others))).withEvery(c.ProgressEvery)
	for i, other := range others {
		n := uint64(0)
		_, err := scanStream(ctx, c.JS[other], region.InboxStream(other), scanRange{Filters: []string{region.OriginSubjects(c.Region)}}, func(sm StreamMsg) error {
			if sm.OriginSeq == 0 || sm.SrcSeq == 0 {
				return nil
			}
			h.logSeqs[sm.OriginSeq] = true
			if _, ok := h.byOldSeq[sm.SrcSeq]; ok {
				return nil
			}
			hc := &heldCopy{logSeq: sm.OriginSeq, subject: sm.Subject, msgID: sm.MsgID, region: other}
			if !rep.inLog(sm.OriginSeq) {
				hc.data = sm.Data
				n++
			}
			h.byOldSeq[sm.SrcSeq] = hc
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// One region being away must not stop the re-seed: what it
			// alone held is reported lost (or re-shipped from the log).
			c.Logger.Warn("reseed streams: inbox unreadable", "region", other, "err", err)
			rep.Unreachable = append(rep.Unreachable, other)
			continue
		}
		rep.FromInboxes[other] = n
		m.update(uint64(i+1), other, false)
	}
	m.update(uint64(len(others)), "", true)
	var have []uint64
	for s := range h.logSeqs {
		if !rep.inLog(s) {
			have = append(have, s)
		}
	}
	slices.Sort(have)
	rep.HistorySeqs = toRanges(have)
	if rep.LogFirst > 1 {
		rep.Lost = gaps(have, 1, rep.LogFirst-1)
	}
	if k := len(have); k > 0 && have[k-1] > rep.LogLast {
		// The log ends before what the inboxes hold (it is new, or
		// older than they are).
		rep.Lost = append(rep.Lost, gaps(have, rep.LogLast+1, have[k-1])...)
	}
	return h, nil
}

// pinOtherSources records where each other inbox's source of the origin
// stands and sets its OptStartSeq to the same resume point, for NATS's
// stream-recreation path (which would otherwise start from the beginning).
func (c *ReseedStreamsConfig) pinOtherSources(ctx context.Context, rep *ReseedStreamsReport, origin string) error {
	for _, rp := range c.Plan.Regions {
		js := c.JS[rp.Region]
		if rp.Region == c.Region || js == nil || slices.Contains(rep.Unreachable, rp.Region) {
			continue
		}
		cs, err := pinSources(ctx, js, rp.Region, rp.Inbox.Name, origin)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.Logger.Warn("reseed streams: cannot pin the inbox's sources of the origin", "region", rp.Region, "err", err)
			rep.NotContinued = append(rep.NotContinued, rp.Region)
			continue
		}
		rep.Continued = append(rep.Continued, cs...)
	}
	return nil
}

func pinSources(ctx context.Context, js jetstream.JetStream, regionName, inbox, origin string) ([]SourceContinuation, error) {
	s, err := js.Stream(ctx, inbox)
	if err != nil {
		return nil, err
	}
	cfg := s.CachedInfo().Config
	var out []SourceContinuation
	for _, src := range cfg.Sources {
		if src.Name != origin {
			continue
		}
		sc := SourceContinuation{Region: regionName, Inbox: inbox, Filter: src.FilterSubject}
		filter := src.FilterSubject
		if filter == "" {
			filter = ">"
		}
		m, err := s.GetLastMsgForSubject(ctx, filter)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return nil, fmt.Errorf("last message of %s on %s: %w", inbox, filter, err)
		default:
			sc.LastLogSeq, _ = strconv.ParseUint(m.Header.Get(eventlog.SeqHeader), 10, 64)
			_, sc.OldSourceSeq = parseSourceHeader(m.Header.Get("Nats-Stream-Source"))
		}
		sc.StartSeq = sc.OldSourceSeq + 1
		src.OptStartSeq = sc.StartSeq
		out = append(out, sc)
	}
	if len(out) == 0 {
		return nil, nil
	}
	meta := map[string]string{}
	for k, v := range cfg.Metadata {
		if !strings.HasPrefix(k, "_nats.") { // the server's own
			meta[k] = v
		}
	}
	cfg.Metadata = meta
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return nil, fmt.Errorf("update %s: %w", inbox, err)
	}
	return out, nil
}

// createOrigin creates the origin stream starting at first and returns
// the first sequence still to be placed. An empty origin (provisioned by a
// node started meanwhile) is recreated. One holding messages is an
// interrupted re-seed's (the caller refused it without Force): if it
// starts at first, the re-fill resumes after its last message (refill
// checks that what it holds is the placement's beginning); otherwise it is
// refused, to be deleted by hand.
func createOrigin(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, first uint64) (uint64, error) {
	s, err := js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return 0, fmt.Errorf("ops: reseed streams: %s: %w", want.Name, err)
	default:
		st := s.CachedInfo().State
		if st.Msgs > 0 {
			if st.FirstSeq != first {
				return 0, fmt.Errorf("ops: reseed streams: %s exists from sequence %d, but the lost stream started at %d: it is not an interrupted re-seed of it; delete it to re-seed", want.Name, st.FirstSeq, first)
			}
			return st.LastSeq + 1, nil
		}
		if err := js.DeleteStream(ctx, want.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return 0, fmt.Errorf("ops: reseed streams: delete the empty %s: %w", want.Name, err)
		}
	}
	want.FirstSeq = first
	if _, err := js.CreateStream(ctx, want); err != nil {
		return 0, fmt.Errorf("ops: reseed streams: create %s from sequence %d: %w", want.Name, first, err)
	}
	return first, nil
}

// gapSubject is the placeholder of a sequence no inbox held: no inbox
// sources it (its zone token is no zone), and it is deleted afterwards.
func gapSubject(regionName string) string {
	return region.SubjectRoot + "." + regionName + ".reseed-gap.none"
}

// placedPrefix is what an interrupted re-fill left in the origin stream,
// below the sequence the re-fill resumes at.
type placedPrefix struct {
	bySeq   map[uint64]string // sequence -> record id ("": a placeholder)
	ids     map[string]bool   // the records' ids
	logSeqs map[uint64]bool   // and log sequences
	gaps    []uint64          // placeholders not deleted yet
	empty   uint64            // sequences holding no record (placeholders, deleted or not)
}

// readPrefix reads the origin's messages from first to from-1 (headers
// only). Anything but a record with its id and log sequence or a
// placeholder is refused: the stream is not a re-fill's.
func readPrefix(ctx context.Context, js jetstream.JetStream, origin, gapSubj string, first, from uint64) (*placedPrefix, error) {
	p := &placedPrefix{bySeq: map[uint64]string{}, ids: map[string]bool{}, logSeqs: map[uint64]bool{}}
	if from <= first {
		return p, nil
	}
	_, err := scanStream(ctx, js, origin, scanRange{From: first, To: from - 1, HeadersOnly: true}, func(sm StreamMsg) error {
		switch {
		case sm.Subject == gapSubj:
			p.bySeq[sm.Seq] = ""
			p.gaps = append(p.gaps, sm.Seq)
		case sm.MsgID == "" || sm.OriginSeq == 0:
			return fmt.Errorf("sequence %d (%s) has no record id or log sequence", sm.Seq, sm.Subject)
		case p.ids[sm.MsgID]:
			return fmt.Errorf("record %s is stored twice (again at sequence %d)", sm.MsgID, sm.Seq)
		default:
			p.bySeq[sm.Seq] = sm.MsgID
			p.ids[sm.MsgID] = true
			p.logSeqs[sm.OriginSeq] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.empty = from - first - uint64(len(p.ids))
	return p, nil
}

// refill puts the records back at their old sequences, fills the gaps,
// appends the log's records no inbox held, deletes the placeholders and
// moves the shipper's checkpoint to the log's end.
//
// A resumed re-fill (from past the first sequence) takes what the origin
// holds below from as placed, after checking it against the records the
// other inboxes hold there: the placement of an interrupted run is that
// of an uninterrupted one, but the other inboxes may meanwhile have
// sourced some of the records it appended (and not others: RESIDENT parts
// of a zone no other region belongs to, or a source that lags), so what
// they hold is not where the placement continues; the stream is.
func (c *ReseedStreamsConfig) refill(ctx context.Context, rep *ReseedStreamsReport, l *eventlog.Log, js jetstream.JetStream, origin string, h *heldRecords, from uint64) error {
	route := routeRecord(c.Region)
	gapSubj := gapSubject(c.Region)
	first := rep.OriginFirstSeq
	pre, err := readPrefix(ctx, js, origin, gapSubj, first, from)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("ops: reseed streams: %s holds sequences %d-%d that are not an interrupted re-seed's: %w; delete it to re-seed", origin, first, from-1, err)
	}
	olds := make([]uint64, 0, len(h.byOldSeq))
	for s := range h.byOldSeq {
		olds = append(olds, s)
	}
	slices.Sort(olds)
	rest, _ := slices.BinarySearch(olds, from)
	for _, old := range olds[:rest] {
		if id := pre.bySeq[old]; id != "" && id != h.byOldSeq[old].msgID {
			return fmt.Errorf("ops: reseed streams: %s holds %s at sequence %d, where the other inboxes hold %s: it is not an interrupted re-seed of the lost stream; delete it to re-seed", origin, id, old, h.byOldSeq[old].msgID)
		}
	}
	var extra []uint64 // log records no inbox held and not placed yet, in log order
	for seq := rep.LogFirst; seq <= rep.LogLast && rep.LogLast > 0; seq++ {
		if !h.logSeqs[seq] && !pre.logSeqs[seq] {
			extra = append(extra, seq)
		}
	}
	total := from - first + uint64(len(extra))
	if rest < len(olds) {
		total = olds[len(olds)-1] - first + 1 + uint64(len(extra))
	}
	rep.AlreadyPlaced = uint64(len(pre.ids))
	placed := pre.ids
	gapSeqs := pre.gaps
	rep.Placeholders = pre.empty

	pub, err := newPlacer(js, from)
	if err != nil {
		return err
	}
	defer pub.close()
	rep.PlacedThrough = from - 1
	m := newMeter(c.Progress, "reseed streams", "re-fill origin", "messages", total).withEvery(c.ProgressEvery)
	fromLog := func(seq uint64) (string, string, []byte, error) {
		recs, err := l.Read(seq, 1)
		if err != nil || len(recs) == 0 || recs[0].Seq != seq {
			return "", "", nil, err
		}
		subj, id, err := route(recs[0])
		return subj, id, recs[0].Data, err
	}
	gap := func() error {
		seq := pub.next
		if err := pub.publish(ctx, gapSubj, "", 0, nil); err != nil {
			return err
		}
		gapSeqs = append(gapSeqs, seq)
		rep.Placeholders++
		return nil
	}
	place := func() error {
		for _, old := range olds[rest:] {
			for pub.next < old {
				if err := gap(); err != nil {
					return err
				}
			}
			hc := h.byOldSeq[old]
			subj, id, data := hc.subject, hc.msgID, hc.data
			if rep.inLog(hc.logSeq) {
				ls, lid, ldata, err := fromLog(hc.logSeq)
				if err != nil {
					return fmt.Errorf("ops: reseed streams: log record %d: %w", hc.logSeq, err)
				}
				if ldata != nil {
					subj, id, data = ls, lid, ldata
				}
			}
			if data == nil || placed[id] {
				// Redacted out of the log meanwhile, or a second copy of
				// one record in the lost stream: keep the numbering.
				if err := gap(); err != nil {
					return err
				}
				continue
			}
			placed[id] = true
			if err := pub.publish(ctx, subj, id, hc.logSeq, data); err != nil {
				return err
			}
			if rep.inLog(hc.logSeq) {
				rep.FromLog++
			} else {
				rep.Republished++
			}
			m.update(pub.next-first, "", false)
		}
		for _, seq := range extra {
			subj, id, data, err := fromLog(seq)
			if err != nil {
				return fmt.Errorf("ops: reseed streams: log record %d: %w", seq, err)
			}
			if data == nil || placed[id] {
				continue
			}
			placed[id] = true
			if err := pub.publish(ctx, subj, id, seq, data); err != nil {
				return err
			}
			rep.FromLog++
			rep.Appended++
			m.update(pub.next-first, "", false)
		}
		return pub.wait(ctx)
	}
	if err := place(); err != nil {
		// Whatever was sent lands (or fails) now, not after we return:
		// what the report and the stream say is then what a resumed run
		// finds.
		settled := pub.settle(settleTimeout)
		rep.PlacedThrough = pub.landed
		if ctx.Err() != nil {
			note := ""
			if !settled {
				note = fmt.Sprintf(" (%d publishes still unacknowledged)", len(pub.futures))
			}
			return fmt.Errorf("%w: the re-fill of %s (from sequence %d) stopped after sequence %d%s; run again with Force to resume: %w", ErrInterrupted, origin, first, pub.landed, note, ctx.Err())
		}
		return err
	}
	rep.PlacedThrough = pub.landed
	m.update(pub.next-first, "", true)
	s, err := js.Stream(ctx, origin)
	if err != nil {
		return fmt.Errorf("ops: reseed streams: %w", err)
	}
	for _, seq := range gapSeqs {
		if err := s.DeleteMsg(ctx, seq); err != nil {
			return fmt.Errorf("ops: reseed streams: delete placeholder %d: %w", seq, err)
		}
	}
	if rep.LogLast >= rep.LogFirst && rep.LogLast > 0 {
		if err := l.SetCheckpoint(eventlog.DefaultShipperCheckpoint, rep.LogLast); err != nil {
			return fmt.Errorf("ops: reseed streams: shipper checkpoint: %w", err)
		}
	}
	return nil
}

// settleTimeout bounds waiting for the publishes in flight when a re-fill
// stops.
const settleTimeout = 30 * time.Second

// placer publishes messages that must land at consecutive sequences from
// next, a bounded window of async publishes, and checks that each did.
// Each carries the sequence it must follow (Nats-Expected-Last-Sequence),
// so that the server refuses it rather than store it elsewhere when the
// stream is not where the placement is (another publisher, an earlier
// run's message landing late).
type placer struct {
	js      jetstream.JetStream
	next    uint64
	landed  uint64 // every sequence up to it is acknowledged in place
	futures []placed
}

type placed struct {
	f   jetstream.PubAckFuture
	seq uint64
}

func newPlacer(js jetstream.JetStream, from uint64) (*placer, error) {
	pjs, err := jetstream.New(js.Conn(), jetstream.WithPublishAsyncMaxPending(republishWindow))
	if err != nil {
		return nil, fmt.Errorf("ops: republish: %w", err)
	}
	return &placer{js: pjs, next: from, landed: from - 1}, nil
}

// publish sends the message for sequence next; it stops (before sending)
// once ctx ends.
func (p *placer) publish(ctx context.Context, subject, msgID string, seq uint64, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(p.futures) >= republishWindow {
		if err := p.wait(ctx); err != nil {
			return err
		}
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	if seq > 0 {
		msg.Header.Set(eventlog.SeqHeader, strconv.FormatUint(seq, 10))
	}
	msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(p.next-1, 10))
	f, err := p.js.PublishMsgAsync(msg)
	if err != nil {
		return fmt.Errorf("ops: republish %s: %w", subject, err)
	}
	p.futures = append(p.futures, placed{f, p.next})
	p.next++
	return nil
}

// wait waits for the acks of the publishes in flight, in order.
func (p *placer) wait(ctx context.Context) error {
	for len(p.futures) > 0 {
		pl := p.futures[0]
		select {
		case ack := <-pl.f.Ok():
			p.futures = p.futures[1:]
			if err := p.check(pl, ack); err != nil {
				return err
			}
		case err := <-pl.f.Err():
			p.futures = p.futures[1:]
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
				return fmt.Errorf("ops: reseed streams: %s for sequence %d: the origin holds messages the re-fill did not place (is a node running against it?): %w", pl.f.Msg().Subject, pl.seq, err)
			}
			return fmt.Errorf("ops: republish %s: %w", pl.f.Msg().Subject, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.futures = nil
	return nil
}

func (p *placer) check(pl placed, ack *jetstream.PubAck) error {
	if ack.Duplicate || ack.Sequence != pl.seq {
		return fmt.Errorf("ops: reseed streams: %s landed at sequence %d (duplicate %v), want %d: the origin's numbering would differ from the lost one's; run again with Force",
			pl.f.Msg().Subject, ack.Sequence, ack.Duplicate, pl.seq)
	}
	if pl.seq == p.landed+1 {
		p.landed = pl.seq
	}
	return nil
}

// settle waits, at most d, for the outcome of the publishes still in
// flight, so that the stream no longer changes; it reports whether all
// were settled.
func (p *placer) settle(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for len(p.futures) > 0 {
		pl := p.futures[0]
		select {
		case ack := <-pl.f.Ok():
			_ = p.check(pl, ack)
		case <-pl.f.Err():
		case <-t.C:
			return false
		}
		p.futures = p.futures[1:]
	}
	return true
}

func (p *placer) close() { p.js.CleanupPublisher() }
