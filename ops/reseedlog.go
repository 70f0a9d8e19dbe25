package ops

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/eventlog"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

// Re-seeding a lost log.
//
// Every record the shipper acknowledged is in the region's origin stream,
// with its log sequence in the Meridian-Seq header and its bytes exactly as
// the log stored them. ReseedLog writes them into a fresh log at those
// same sequences: runs of consecutive sequences are appended in batches
// (an Append assigns the next sequences), and a sequence missing from the
// stream is skipped with SetSequenceFloor, so no record ever gets another
// number than it had. Records the stream holds twice (a re-send after the
// duplicate window) are taken once; a stream out of sequence order (a
// re-sent window) is put back in order.
//
// What is lost is the unshipped tail: records the node acknowledged but
// had not shipped when the disk went. Their number is not recorded
// anywhere else, so the report names it from LastKnownSeq (the node's last
// log head, from monitoring) when given, and calls it unknown otherwise.
// The sequence floor is then set past it (LastKnownSeq, or the last
// shipped sequence plus TailMargin): a new record never reuses a number
// that was acknowledged to a client, whose consistency token would
// otherwise be satisfied by a different record.
//
// The node must be stopped (the log is opened here). The node id, when
// its file went with the disk, is restored from the records, so the node
// continues its own sequence series. A key store lost with the log
// cannot be restored from here; the node rebuilds it by re-projecting its
// inbox (key records arrive there), so a surviving read model is moved
// aside in that case.

// reseedCheckpoint marks a log being re-seeded (a checkpoint, so it is
// durable with the records).
const reseedCheckpoint = "ops-reseed"

// DefaultTailMargin is the floor jump past the last shipped sequence when
// the node's last sequence is unknown: far more than any backlog a node
// accumulates, and nothing next to the 2^63 sequences available.
const DefaultTailMargin = 1_000_000_000

// ReseedLogConfig configures ReseedLog.
type ReseedLogConfig struct {
	// Region whose log is lost. Required.
	Region string
	// JS is a JetStream context of the region's domain. Required.
	JS jetstream.JetStream
	// DataDir is the node's data directory (node stopped). Required.
	DataDir string
	// Stream (default region.OriginStream(Region)).
	Stream string
	// LastKnownSeq is the last sequence the node is known to have
	// assigned (0: unknown).
	LastKnownSeq uint64
	// TailMargin is the floor jump when LastKnownSeq is unknown (default
	// DefaultTailMargin).
	TailMargin uint64
	Progress   ProgressFunc
	Logger     *slog.Logger
	Now        func() time.Time
}

func (c *ReseedLogConfig) validate() error {
	var errs []error
	if c.Region == "" {
		errs = append(errs, invalidf("Region", "required"))
	}
	if c.JS == nil {
		errs = append(errs, invalidf("JS", "required: a JetStream context of the region's domain"))
	}
	if c.DataDir == "" {
		errs = append(errs, invalidf("DataDir", "required: the data directory of the stopped node"))
	}
	if c.Stream == "" && c.Region != "" {
		c.Stream = region.OriginStream(c.Region)
	}
	if c.TailMargin == 0 {
		c.TailMargin = DefaultTailMargin
	}
	if c.TailMargin >= 1<<62 {
		errs = append(errs, invalidf("TailMargin", "must be below 2^62, got %d", c.TailMargin))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return errors.Join(errs...)
}

// ReseedLogReport is what ReseedLog recovered and what is lost.
type ReseedLogReport struct {
	Region string `json:"region"`
	Stream string `json:"stream"`
	LogDir string `json:"log_dir"`
	// StreamMessages is what the origin stream held.
	StreamMessages uint64 `json:"stream_messages"`
	// Imported records, sequences First..Last.
	Imported uint64 `json:"imported"`
	First    uint64 `json:"first"`
	Last     uint64 `json:"last"`
	// Duplicates: stream messages repeating a sequence already imported;
	// Unnumbered: messages without a Meridian-Seq header (not imported).
	Duplicates uint64 `json:"duplicates"`
	// Resumed: an interrupted re-seed had imported part of it already.
	Resumed    bool   `json:"resumed"`
	Unnumbered uint64 `json:"unnumbered"`
	// Missing lists sequences in [First, Last] the stream does not hold:
	// data-key records securely deleted by an erasure, jumps of an earlier
	// sequence floor, or records lost before they reached the stream.
	Missing []SeqRange `json:"missing"`
	// LostTail is the acknowledged, unshipped tail, when LastKnownSeq
	// names it; LostTailUnknown is set when it cannot be known.
	LostTail        *SeqRange `json:"lost_tail,omitempty"`
	LostTailUnknown bool      `json:"lost_tail_unknown"`
	// Floor: every new record gets a sequence above it.
	Floor             uint64 `json:"sequence_floor"`
	ShipperCheckpoint uint64 `json:"shipper_checkpoint"`
	NodeID            string `json:"node_id"`
	NodeIDRestored    bool   `json:"node_id_restored"`
	// OriginNodes lists the node ids the imported records carry (more than
	// one means the region's log mixed two series: check them).
	OriginNodes     []string      `json:"origin_nodes"`
	ModelMovedAside string        `json:"model_moved_aside,omitempty"`
	Duration        time.Duration `json:"duration_ns"`
}

type seqPick struct{ mseq, sseq uint64 }

// ReseedLog rebuilds a region's lost log from its origin stream; see the
// comment above.
func ReseedLog(ctx context.Context, cfg ReseedLogConfig) (*ReseedLogReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	rep := &ReseedLogReport{Region: cfg.Region, Stream: cfg.Stream, LogDir: filepath.Join(cfg.DataDir, LogDir), Missing: []SeqRange{}}
	l, err := openLog(rep.LogDir, false)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	// A re-seed marks the log it fills until it is done, so that an
	// interrupted one can be resumed (records already imported are kept).
	cps, err := l.Checkpoints()
	if err != nil {
		return nil, err
	}
	_, resuming := cps[reseedCheckpoint]
	if last := l.LastSeq(); last > 0 && !resuming {
		return nil, fmt.Errorf("%w: %s holds records up to seq %d; re-seed rebuilds a log that is gone (move it away first)", ErrNotLost, rep.LogDir, last)
	}
	if !resuming {
		if err := l.SetCheckpoint(reseedCheckpoint, 0); err != nil {
			return nil, fmt.Errorf("ops: reseed log: mark the log: %w", err)
		}
	}
	rep.Resumed = resuming && l.LastSeq() > 0
	s, err := cfg.JS.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("ops: reseed log: origin stream %s: %w", cfg.Stream, err)
	}
	state := s.CachedInfo().State
	rep.StreamMessages = state.Msgs

	// Pass 1, headers only: which message carries which sequence.
	m1 := newMeter(cfg.Progress, "reseed log", "index origin stream", "messages", state.Msgs)
	var picks []seqPick
	n, err := scanStream(ctx, cfg.JS, cfg.Stream, scanRange{To: state.LastSeq, HeadersOnly: true}, func(m StreamMsg) error {
		if m.OriginSeq == 0 {
			rep.Unnumbered++
		} else {
			picks = append(picks, seqPick{mseq: m.OriginSeq, sseq: m.Seq})
		}
		m1.update(uint64(len(picks))+rep.Unnumbered, "", false)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ops: reseed log: index %s: %w", cfg.Stream, err)
	}
	m1.update(n, "", true)
	slices.SortFunc(picks, func(a, b seqPick) int {
		if c := cmp.Compare(a.mseq, b.mseq); c != 0 {
			return c
		}
		return cmp.Compare(a.sseq, b.sseq)
	})
	chosen := make(map[uint64]uint64, len(picks)) // stream seq -> log seq
	order := make([]uint64, 0, len(picks))        // log seqs, ascending
	for _, p := range picks {
		if k := len(order); k > 0 && order[k-1] == p.mseq {
			rep.Duplicates++
			continue
		}
		order = append(order, p.mseq)
		chosen[p.sseq] = p.mseq
	}
	picks = nil

	// Pass 2: the records, appended in sequence order (after those an
	// interrupted run imported).
	done := l.LastSeq()
	skip, _ := slices.BinarySearch(order, done+1)
	imp := &importer{l: l, order: order, next: skip, buf: map[uint64][]byte{}, nodes: map[string]bool{}, done: uint64(skip)}
	m2 := newMeter(cfg.Progress, "reseed log", "import records", "records", uint64(len(order)))
	if imp.next < len(order) {
		_, err = scanStream(ctx, cfg.JS, cfg.Stream, scanRange{To: state.LastSeq}, func(m StreamMsg) error {
			mseq, ok := chosen[m.Seq]
			if !ok || mseq <= done {
				return nil
			}
			if err := imp.add(ctx, mseq, m.Data); err != nil {
				return err
			}
			m2.update(imp.done, "", false)
			return nil
		})
		if err == nil {
			err = imp.flush(ctx)
		}
		if err == nil && imp.next < len(order) {
			err = fmt.Errorf("the stream changed while being read: %d of %d records imported", imp.next, len(order))
		}
		if err != nil {
			if ctx.Err() != nil {
				return rep, fmt.Errorf("%w after %d of %d records (run again to resume): %w", ErrInterrupted, imp.done, len(order), err)
			}
			return rep, fmt.Errorf("ops: reseed log: import: %w", err)
		}
	}
	m2.update(imp.done, "", true)
	rep.Imported = imp.done
	rep.OriginNodes = sortedKeys(imp.nodes)
	if len(order) > 0 {
		rep.First, rep.Last = order[0], order[len(order)-1]
		rep.Missing = append(rep.Missing, gaps(order, rep.First, rep.Last)...)
	}

	// The floor past the lost tail, and the shipper past what is shipped.
	switch {
	case cfg.LastKnownSeq > rep.Last:
		rep.LostTail = &SeqRange{From: rep.Last + 1, To: cfg.LastKnownSeq}
		rep.Floor = cfg.LastKnownSeq
	case cfg.LastKnownSeq > 0:
		rep.Floor = rep.Last
	default:
		rep.LostTailUnknown = true
		rep.Floor = rep.Last + cfg.TailMargin
	}
	if err := l.SetSequenceFloor(rep.Floor); err != nil {
		return rep, fmt.Errorf("ops: reseed log: sequence floor: %w", err)
	}
	if err := l.SetCheckpoint(eventlog.DefaultShipperCheckpoint, rep.Last); err != nil {
		return rep, fmt.Errorf("ops: reseed log: shipper checkpoint: %w", err)
	}
	rep.ShipperCheckpoint = rep.Last
	if err := l.DeleteCheckpoint(reseedCheckpoint); err != nil {
		return rep, fmt.Errorf("ops: reseed log: %w", err)
	}

	if imp.lastNode == "" && l.LastSeq() > 0 {
		// Everything was imported by an interrupted run: read it back.
		if recs, err := l.Read(l.LastSeq(), 1); err == nil && len(recs) == 1 {
			imp.noteNode(recs[0].Data)
		}
	}
	if err := cfg.restoreNodeID(rep, imp.lastNode); err != nil {
		return rep, err
	}
	keysDir, modelDir := filepath.Join(cfg.DataDir, KeysDir), filepath.Join(cfg.DataDir, ModelDir)
	if !exists(keysDir) && exists(modelDir) {
		aside := filepath.Join(cfg.DataDir, ModelDir+".pre-reseed-"+strconv.FormatInt(cfg.Now().UnixMilli(), 10))
		if err := os.Rename(modelDir, aside); err != nil {
			return rep, fmt.Errorf("ops: reseed log: move the model aside: %w", err)
		}
		rep.ModelMovedAside = aside
	}
	rep.Duration = time.Since(start)
	cfg.Logger.Info("reseed log done", "region", cfg.Region, "imported", rep.Imported, "last", rep.Last, "floor", rep.Floor)
	return rep, nil
}

func (c *ReseedLogConfig) restoreNodeID(rep *ReseedLogReport, fromRecords string) error {
	path := filepath.Join(c.DataDir, NodeIDRel)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		rep.NodeID = strings.TrimSpace(string(b))
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("ops: reseed log: node id: %w", err)
	case fromRecords == "":
		return nil // nothing to restore it from; the node makes a new one
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(fromRecords+"\n"), 0o644); err != nil {
		return fmt.Errorf("ops: reseed log: node id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("ops: reseed log: node id: %w", err)
	}
	rep.NodeID, rep.NodeIDRestored = fromRecords, true
	return nil
}

// importer appends records in sequence order as they arrive in stream
// order: early arrivals wait in buf until their turn.
type importer struct {
	l     *eventlog.Log
	order []uint64 // the sequences to write, ascending
	next  int      // index into order of the next sequence to write
	buf   map[uint64][]byte
	batch [][]byte
	bytes int
	first uint64 // sequence of batch[0]
	done  uint64

	nodes    map[string]bool
	lastNode string
}

const (
	importBatchRecords = 4096
	importBatchBytes   = 2 << 20
)

func (im *importer) add(ctx context.Context, mseq uint64, data []byte) error {
	im.buf[mseq] = append([]byte(nil), data...)
	for im.next < len(im.order) {
		seq := im.order[im.next]
		rec, ok := im.buf[seq]
		if !ok {
			return nil
		}
		delete(im.buf, seq)
		if len(im.batch) > 0 && (seq != im.first+uint64(len(im.batch)) || len(im.batch) >= importBatchRecords || im.bytes+len(rec) > importBatchBytes) {
			if err := im.flush(ctx); err != nil {
				return err
			}
		}
		if len(im.batch) == 0 {
			im.first = seq
		}
		im.batch = append(im.batch, rec)
		im.bytes += len(rec)
		im.noteNode(rec)
		im.next++
	}
	return nil
}

func (im *importer) noteNode(rec []byte) {
	ev := &meridianv1.Event{}
	if proto.Unmarshal(rec, ev) == nil && ev.GetOriginNode() != "" {
		im.nodes[ev.GetOriginNode()] = true
		im.lastNode = ev.GetOriginNode()
	}
}

// flush appends the batch at its sequences, raising the floor over a gap
// before it.
func (im *importer) flush(ctx context.Context) error {
	if len(im.batch) == 0 {
		return nil
	}
	if next := im.l.LastSeq() + 1; im.first > next {
		if err := im.l.SetSequenceFloor(im.first - 1); err != nil {
			return err
		}
	}
	got, err := im.l.Append(ctx, im.batch...)
	if err != nil {
		return err
	}
	if got != im.first {
		return fmt.Errorf("records meant for seq %d were appended at %d", im.first, got)
	}
	im.done += uint64(len(im.batch))
	im.batch, im.bytes = im.batch[:0], 0
	return nil
}
