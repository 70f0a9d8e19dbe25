package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
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
//  1. provisions the region's streams again from the policy (the new inbox
//     sources every origin from its first message, its own included);
//  2. re-fills the origin stream with the region's history that its log no
//     longer holds (trimmed by retention), taken from the other regions'
//     inboxes, which hold copies of it: GLOBAL parts everywhere, RESIDENT
//     parts and keys in the zone's other regions (the policy's filters
//     decided what they hold, so nothing crosses a zone here either);
//  3. re-ships the whole log into it (the shipper's checkpoint goes back to
//     the log's first record; message ids deduplicate);
//  4. rewinds the read model to inbox sequence 0 (projector.ResetInbox):
//     the node then applies the new inbox from its start, and merges are
//     idempotent, so the model keeps what it has and gains nothing twice.
//
// Lost is the region's history that is in neither the log nor another
// region's inbox: RESIDENT parts of a zone no other region belongs to,
// older than the log's first record.
//
// NATS 2.15 notices that the origin stream was recreated (stream identity)
// and the other regions' inboxes then source it again from its start: they
// hold the region's history twice afterwards. Their projectors apply the
// copies idempotently; it costs storage, not correctness.

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
	Logger   *slog.Logger
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
	// History below the log's first record, copied from other regions'
	// inboxes (per region), and its sequences.
	FromInboxes  map[string]uint64 `json:"from_inboxes"`
	HistorySeqs  []SeqRange        `json:"history_seqs"`
	Unreachable  []string          `json:"unreachable_regions,omitempty"`
	Republished  uint64            `json:"republished"`
	DuplicateAck uint64            `json:"duplicate_acks"`
	// Lost: sequences below the log's first record found in no inbox (or
	// never used: an earlier sequence floor's jump).
	Lost []SeqRange `json:"lost"`
	// ModelInboxWas is the read model's inbox sequence before the rewind.
	ModelInboxWas uint64        `json:"model_inbox_seq_was"`
	ModelReset    bool          `json:"model_reset"`
	Duration      time.Duration `json:"duration_ns"`
}

// ReseedStreams recreates and re-fills a region's streams; see above.
func ReseedStreams(ctx context.Context, cfg ReseedStreamsConfig) (*ReseedStreamsReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
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

	// 1. The streams.
	prov, err := region.Provision(ctx, cfg.Plan, map[string]jetstream.JetStream{cfg.Region: js}, region.ProvisionOptions{})
	if err != nil {
		return nil, fmt.Errorf("ops: reseed streams: provision: %w", err)
	}
	rep.Provision = prov.String()

	// 2. History the log no longer holds, from the other inboxes.
	if rep.LogFirst > 1 {
		if err := cfg.refillHistory(ctx, rep, js, rp); err != nil {
			return rep, err
		}
	}

	// 3. The log, through a shipper of our own.
	if rep.LogLast >= rep.LogFirst {
		if err := cfg.reship(ctx, rep, l, js, rp.Origin.Name); err != nil {
			return rep, err
		}
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

// refillHistory copies the region's records below the log's first sequence
// from the other regions' inboxes into the new origin stream: zone mates
// first (they hold RESIDENT parts too), then the rest.
func (c *ReseedStreamsConfig) refillHistory(ctx context.Context, rep *ReseedStreamsReport, js jetstream.JetStream, rp *region.RegionPlan) error {
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
	pub, err := newRepublisher(js)
	if err != nil {
		return err
	}
	defer pub.close()
	seen := map[uint64]bool{}
	m := newMeter(c.Progress, "reseed streams", "history from inboxes", "records", rep.LogFirst-1)
	for _, other := range others {
		ojs := c.JS[other]
		n := uint64(0)
		_, err := scanStream(ctx, ojs, region.InboxStream(other), scanRange{Filters: []string{region.OriginSubjects(c.Region)}}, func(sm StreamMsg) error {
			if sm.OriginSeq == 0 || sm.OriginSeq >= rep.LogFirst || seen[sm.OriginSeq] {
				return nil
			}
			seen[sm.OriginSeq] = true
			if err := pub.publish(ctx, sm.Subject, sm.MsgID, sm.OriginSeq, sm.Data); err != nil {
				return err
			}
			n++
			m.update(uint64(len(seen)), other, false)
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// One region being away must not stop the re-seed: what it
			// alone held is reported lost.
			c.Logger.Warn("reseed streams: inbox unreadable", "region", other, "err", err)
			rep.Unreachable = append(rep.Unreachable, other)
			continue
		}
		rep.FromInboxes[other] = n
	}
	if err := pub.wait(ctx); err != nil {
		return err
	}
	m.update(uint64(len(seen)), "", true)
	rep.Republished, rep.DuplicateAck = pub.acked, pub.dups
	have := make([]uint64, 0, len(seen))
	for s := range seen {
		have = append(have, s)
	}
	slices.Sort(have)
	rep.HistorySeqs = toRanges(have)
	rep.Lost = gaps(have, 1, rep.LogFirst-1)
	return nil
}

func (c *ReseedStreamsConfig) zoneOf(r string) string {
	z, _ := c.Plan.Policy.ZoneOf(r)
	return z
}

// reship resets the shipper checkpoint to before the log's first record
// and ships the log into the new origin stream.
func (c *ReseedStreamsConfig) reship(ctx context.Context, rep *ReseedStreamsReport, l *eventlog.Log, js jetstream.JetStream, origin string) error {
	if err := l.SetCheckpoint(eventlog.DefaultShipperCheckpoint, rep.LogFirst-1); err != nil {
		return fmt.Errorf("ops: reseed streams: reset shipper checkpoint: %w", err)
	}
	sh, err := eventlog.NewShipper(eventlog.ShipperConfig{
		Log: l, JS: js, Stream: origin, Route: routeRecord(c.Region),
		Logger: c.Logger.With("component", "shipper"),
	})
	if err != nil {
		return fmt.Errorf("ops: reseed streams: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if err := sh.Start(wctx); err != nil {
		return fmt.Errorf("ops: reseed streams: %w", err)
	}
	m := newMeter(c.Progress, "reseed streams", "re-ship log", "records", rep.LogLast-rep.LogFirst+1)
	done := make(chan error, 1)
	go func() { done <- sh.WaitShipped(wctx, rep.LogLast) }()
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	var werr error
wait:
	for {
		select {
		case werr = <-done:
			break wait
		case <-t.C:
			mt := sh.Metrics()
			m.update(mt.Shipped-min(mt.Shipped, rep.LogFirst-1), "", false)
		}
	}
	mt := sh.Metrics()
	cerr := sh.Close()
	m.update(mt.Shipped-min(mt.Shipped, rep.LogFirst-1), "", true)
	rep.FromLog = mt.Shipped - min(mt.Shipped, rep.LogFirst-1)
	if werr != nil {
		return fmt.Errorf("ops: reseed streams: ship the log (%d of %d records shipped): %w", rep.FromLog, rep.LogLast-rep.LogFirst+1, errors.Join(werr, cerr))
	}
	if cerr != nil && !errors.Is(cerr, eventlog.ErrShipperClosed) {
		return fmt.Errorf("ops: reseed streams: shipper: %w", cerr)
	}
	return nil
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
