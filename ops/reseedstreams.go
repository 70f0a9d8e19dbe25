package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/projector"
	"github.com/meridian-id/meridian/region"
)

// Re-seeding a lost JetStream store.
//
// A region whose JetStream store is gone has lost its origin stream (the
// copy of everything written there that the other regions source from)
// and its inbox. ReseedStreams, with the node stopped:
//
//  1. reads what the other regions' inboxes hold of the origin: each copy
//     carries its record's log sequence (Meridian-Seq) and its sequence in
//     the lost origin stream (Nats-Stream-Source); and where each of their
//     sources of the origin stands;
//  2. provisions the region's streams again from the policy (the new inbox
//     sources every origin from its first message, its own included), the
//     origin stream starting at the lost one's first sequence;
//  3. re-fills the origin stream so that every record sits at the
//     sequence it had: records some inbox held are put back in the lost
//     stream's order (their data from the log, or from the inbox where the
//     log was trimmed: GLOBAL parts everywhere, RESIDENT parts and keys in
//     the zone's other regions — the policy's filters decided what they
//     hold, so nothing crosses a zone here either); a sequence no inbox
//     held gets a placeholder on a subject no inbox sources, deleted
//     afterwards; then the log's records no inbox held follow, in log
//     order; the shipper's checkpoint moves to the log's end. Each message
//     is published expecting the stream's last sequence to be the one
//     before it, so nothing lands out of place. An interrupted re-fill
//     leaves the stream's beginning in place; run with Force, the re-fill
//     checks it and continues after its last message;
//  4. rewinds the read model to inbox sequence 0 (projector.ResetInbox):
//     the node then applies the new inbox from its start, and merges are
//     idempotent, so the model keeps what it has and gains nothing twice.
//
// The other regions' inboxes therefore continue exactly where they were:
// each source resumes after the last origin sequence it stored, which now
// names the same record as before, and receives only what it lacked. NATS
// 2.15 may also notice the recreation (stream identity) and restart a
// source at its OptStartSeq, or at the stream's start if it has none:
// step 1 sets OptStartSeq to the same resume point, so that path agrees.
//
// Lost is the region's history that is in neither the log nor another
// region's inbox: RESIDENT parts of a zone no other region belongs to,
// older than the log's first record (or newer than its last, when the log
// is new or older than the inboxes: then the re-fill takes every record
// from them).

// ReseedStreamsConfig configures ReseedStreams.
type ReseedStreamsConfig struct {
	// Plan is the compiled policy. Required.
	Plan *region.Plan
	// Region whose store is lost. Required.
	Region string
	// DataDir is the node's data directory (node stopped). Required.
	DataDir string
	// JS maps regions to a JetStream context of their domain; Region's is
	// required, the others are read for history the log no longer holds.
	JS map[string]jetstream.JetStream
	// Force re-seeds even when the origin stream exists and is not empty.
	Force    bool
	Progress ProgressFunc
	// ProgressEvery is the least time between two progress reports of a
	// phase (0: 100 ms; negative: every message is reported).
	ProgressEvery time.Duration
	Logger        *slog.Logger
	// Timeout bounds waiting for the shipper (default 10 min).
	Timeout time.Duration
}

func (c *ReseedStreamsConfig) validate() error {
	var errs []error
	if c.Plan == nil {
		errs = append(errs, invalidf("Plan", "required"))
	} else if _, ok := c.Plan.Region(c.Region); !ok {
		errs = append(errs, invalidf("Region", "%q is not a region of the policy", c.Region))
	}
	if c.DataDir == "" {
		errs = append(errs, invalidf("DataDir", "required: the data directory of the stopped node"))
	}
	if c.JS[c.Region] == nil {
		errs = append(errs, invalidf("JS", "needs the JetStream of region %q", c.Region))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	return errors.Join(errs...)
}

// ReseedStreamsReport is what ReseedStreams recovered and what is lost.
type ReseedStreamsReport struct {
	Region    string `json:"region"`
	Origin    string `json:"origin_stream"`
	Inbox     string `json:"inbox_stream"`
	Provision string `json:"provision"`
	// The log's range, all of it re-shipped.
	LogFirst uint64 `json:"log_first"`
	LogLast  uint64 `json:"log_last"`
	FromLog  uint64 `json:"from_log"`
	// History not in the log (below its first record, or past its last
	// when the log is new), copied from other regions' inboxes (per
	// region), and its sequences.
	FromInboxes  map[string]uint64 `json:"from_inboxes"`
	HistorySeqs  []SeqRange        `json:"history_seqs"`
	Unreachable  []string          `json:"unreachable_regions,omitempty"`
	Republished  uint64            `json:"republished"`
	DuplicateAck uint64            `json:"duplicate_acks"`
	// Lost: sequences not in the log (below its first record, or up to
	// the last an inbox holds past its last) found in no inbox (or never
	// used: an earlier sequence floor's jump).
	Lost []SeqRange `json:"lost"`
	// OriginFirstSeq is the recreated origin stream's first sequence: the
	// lost one's (the lowest any inbox had sourced).
	OriginFirstSeq uint64 `json:"origin_first_seq"`
	// Placeholders counts sequences no inbox held (filled and deleted, so
	// the numbering is the lost stream's); Appended the log's records no
	// inbox held, put after them.
	Placeholders uint64 `json:"placeholders"`
	Appended     uint64 `json:"appended"`
	// Resumed: the origin held an interrupted re-fill, continued after its
	// last message, at ResumedAt; AlreadyPlaced counts the records it held
	// (checked against the other inboxes; FromLog, Republished and
	// Appended count only what this run placed).
	Resumed       bool   `json:"resumed,omitempty"`
	ResumedAt     uint64 `json:"resumed_at,omitempty"`
	AlreadyPlaced uint64 `json:"already_placed,omitempty"`
	// PlacedThrough is the origin's last sequence the re-fill placed: its
	// end, or where an interrupted one stopped (every sequence from
	// OriginFirstSeq to it is in place).
	PlacedThrough uint64 `json:"placed_through"`
	// Continued says where each other region's inbox source of the origin
	// continues; NotContinued lists regions whose inbox config could not be
	// updated (NATS may restart their sources from the origin's start).
	Continued    []SourceContinuation `json:"continued"`
	NotContinued []string             `json:"not_continued,omitempty"`
	// ModelInboxWas is the read model's inbox sequence before the rewind.
	ModelInboxWas uint64        `json:"model_inbox_seq_was"`
	ModelReset    bool          `json:"model_reset"`
	Duration      time.Duration `json:"duration_ns"`
}

// ReseedStreams recreates and re-fills a region's streams; see above.
// Stopped by ctx, it returns an error wrapping ErrInterrupted and ctx's
// error, with the stream left as the report says (PlacedThrough): run it
// again, with Force once the origin holds messages, to resume.
func ReseedStreams(ctx context.Context, cfg ReseedStreamsConfig) (*ReseedStreamsReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rep, err := reseedStreams(ctx, cfg)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrInterrupted) {
		err = fmt.Errorf("%w: %w", ErrInterrupted, err)
	}
	return rep, err
}

func reseedStreams(ctx context.Context, cfg ReseedStreamsConfig) (*ReseedStreamsReport, error) {
	start := time.Now()
	rp, _ := cfg.Plan.Region(cfg.Region)
	js := cfg.JS[cfg.Region]
	rep := &ReseedStreamsReport{Region: cfg.Region, Origin: rp.Origin.Name, Inbox: rp.Inbox.Name, FromInboxes: map[string]uint64{}, Lost: []SeqRange{}, HistorySeqs: []SeqRange{}}

	modelDir := filepath.Join(cfg.DataDir, ModelDir)
	if err := checkNotInUse(modelDir); err != nil {
		return nil, err
	}
	l, err := openLog(filepath.Join(cfg.DataDir, LogDir), false)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	rep.LogFirst, rep.LogLast = l.FirstSeq(), l.LastSeq()

	if s, err := js.Stream(ctx, rp.Origin.Name); err == nil {
		if n := s.CachedInfo().State.Msgs; n > 0 && !cfg.Force {
			return nil, fmt.Errorf("%w: stream %s exists with %d messages (Force re-seeds anyway)", ErrNotLost, rp.Origin.Name, n)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("ops: reseed streams: %s: %w", rp.Origin.Name, err)
	}

	// 1. What the other inboxes hold of the origin, and where each of
	// their sources of it stands (reseedcontinue.go).
	held, err := cfg.collectHeld(ctx, rep, rp)
	if err != nil {
		return rep, err
	}
	if rep.LogLast == 0 && len(held.byOldSeq) > 0 {
		cfg.Logger.Warn("reseed streams: the log is new: the origin is re-filled from the other inboxes alone; re-seed the log from it (reseed log) before the node starts, or its new records would reuse sequences", "region", cfg.Region)
	}
	if err := cfg.pinOtherSources(ctx, rep, rp.Origin.Name); err != nil {
		return rep, err
	}

	// 2. The streams, the origin numbered as the lost one was.
	rep.OriginFirstSeq = held.first()
	from, err := createOrigin(ctx, js, rp.Origin, rep.OriginFirstSeq)
	if err != nil {
		return rep, err
	}
	if rep.Resumed = from > rep.OriginFirstSeq; rep.Resumed {
		rep.ResumedAt = from
	}
	prov, err := region.Provision(ctx, cfg.Plan, map[string]jetstream.JetStream{cfg.Region: js}, region.ProvisionOptions{})
	if err != nil {
		return nil, fmt.Errorf("ops: reseed streams: provision: %w", err)
	}
	rep.Provision = prov.String()

	// 3. Re-fill it: every record at its old sequence, then what no inbox
	// had, from the log; the node's shipper goes on after the log's end.
	if err := cfg.refill(ctx, rep, l, js, rp.Origin.Name, held, from); err != nil {
		return rep, err
	}

	// 4. The read model applies the new inbox from its start.
	if exists(modelDir) {
		if rep.ModelInboxWas, err = projector.ResetInbox(modelDir); err != nil {
			return rep, fmt.Errorf("ops: reseed streams: rewind the read model: %w", err)
		}
		rep.ModelReset = true
	}
	rep.Duration = time.Since(start)
	cfg.Logger.Info("reseed streams done", "region", cfg.Region, "from_log", rep.FromLog, "republished", rep.Republished, "lost", RangesLen(rep.Lost))
	return rep, nil
}

// inLog says whether the log holds the record of sequence seq.
func (r *ReseedStreamsReport) inLog(seq uint64) bool {
	return seq >= r.LogFirst && seq <= r.LogLast
}

func (c *ReseedStreamsConfig) zoneOf(r string) string {
	z, _ := c.Plan.Policy.ZoneOf(r)
	return z
}

// republisher publishes copies of records into an origin stream with the
// headers the shipper gives them, a bounded window of async publishes.
type republisher struct {
	js          jetstream.JetStream
	acked, dups uint64
	futures     []jetstream.PubAckFuture
}

const republishWindow = 2048

func newRepublisher(js jetstream.JetStream) (*republisher, error) {
	pjs, err := jetstream.New(js.Conn(), jetstream.WithPublishAsyncMaxPending(republishWindow))
	if err != nil {
		return nil, fmt.Errorf("ops: republish: %w", err)
	}
	return &republisher{js: pjs}, nil
}

func (p *republisher) publish(ctx context.Context, subject, msgID string, seq uint64, data []byte) error {
	if len(p.futures) >= republishWindow {
		if err := p.wait(ctx); err != nil {
			return err
		}
	}
	msg := &nats.Msg{Subject: subject, Data: append([]byte(nil), data...), Header: nats.Header{}}
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	msg.Header.Set(eventlog.SeqHeader, strconv.FormatUint(seq, 10))
	f, err := p.js.PublishMsgAsync(msg)
	if err != nil {
		return fmt.Errorf("ops: republish %s seq %d: %w", subject, seq, err)
	}
	p.futures = append(p.futures, f)
	return nil
}

// wait waits for every outstanding ack.
func (p *republisher) wait(ctx context.Context) error {
	for _, f := range p.futures {
		select {
		case ack := <-f.Ok():
			p.acked++
			if ack.Duplicate {
				p.dups++
			}
		case err := <-f.Err():
			return fmt.Errorf("ops: republish %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.futures = p.futures[:0]
	return nil
}

func (p *republisher) close() { p.js.CleanupPublisher() }
