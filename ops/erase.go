package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/client"
	"github.com/meridian-id/meridian/ops/inspect"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

// Erase is GDPR erasure by crypto-shredding, driven to completion in every
// region:
//
//  1. IdentityErased is appended in the identity's home region (through
//     its node's HTTP API, like any write).
//  2. Erase waits until every region shows the GLOBAL tombstone and no
//     region of the zone holds resident state (each projector destroys the
//     identity's data keys and drops the state when it applies the
//     erasure).
//  3. It waits until what the regions wrote until then has shipped and
//     been applied everywhere (writes for the identity racing the erasure
//     included), then sweeps every region: the node destroys the
//     identity's keys again (a write racing the erasure may have made a
//     new one) and redacts the key material out of its log's data-key
//     records (eventlog.Log.Redact: rewritten, compacted, WAL overwritten).
//  4. It securely deletes the identity's data-key messages from every
//     stream that holds them (subject meridian.*.<zone>.key.<id>, in every
//     region's origin and inbox): JetStream's secure delete overwrites the
//     message in its block with random bytes, where a purge would only mark
//     it deleted. With PurgeResident it also finds and securely deletes
//     the identity's RESIDENT parts (a full read of the zone's subjects);
//     without it they stay as ciphertext whose keys no longer exist.
//  5. It reads back what every region holds and reports it.
//
// The email claim is released by the writer's claims handling when the
// tombstone applies; that is not Erase's business.

// EraseConfig configures Erase.
type EraseConfig struct {
	Deployment *Deployment
	// Conns reaches every region's JetStream. Required.
	Conns *Conns
	// Identity to erase. Required (a canonical UUID).
	Identity string
	// Home is its home region (default: read from a region's view; needed
	// only to re-run an erasure that already applied, whose tombstone no
	// longer names the home region).
	Home   string
	Reason string
	// Timeout bounds each wait (default 2 min).
	Timeout time.Duration
	// PurgeResident also deletes the identity's RESIDENT parts from
	// streams (reads every message of the zone's subjects).
	PurgeResident bool
	// Poll is the interval of the waits (default 200 ms).
	Poll     time.Duration
	Progress ProgressFunc
	Logger   *slog.Logger
}

func (c *EraseConfig) validate() error {
	var errs []error
	if c.Deployment == nil {
		errs = append(errs, invalidf("Deployment", "required"))
	}
	if c.Conns == nil {
		errs = append(errs, invalidf("Conns", "required: key records are deleted from the streams through NATS"))
	}
	if u, err := uuid.Parse(c.Identity); err != nil || u.String() != c.Identity {
		errs = append(errs, invalidf("Identity", "%q is not an identity id (a canonical lower-case UUID)", c.Identity))
	}
	if c.Home != "" && c.Deployment != nil {
		if _, ok := c.Deployment.Region(c.Home); !ok {
			errs = append(errs, invalidf("Home", "%q is not a region of the deployment", c.Home))
		}
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Minute
	}
	if c.Poll == 0 {
		c.Poll = 200 * time.Millisecond
	}
	if c.Reason == "" {
		c.Reason = "erasure requested by operator"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// StreamErasure is what was deleted from one stream.
type StreamErasure struct {
	Region    string   `json:"region"`
	Stream    string   `json:"stream"`
	Filter    string   `json:"filter"`
	Deleted   []uint64 `json:"securely_deleted_seqs"`
	Remaining uint64   `json:"remaining"`
}

// EraseReport is the erasure report: what was destroyed where.
type EraseReport struct {
	Identity      string `json:"identity"`
	Home          string `json:"home_region,omitempty"`
	Zone          string `json:"zone,omitempty"`
	EventID       string `json:"event_id,omitempty"`
	AlreadyErased bool   `json:"already_erased"`
	// AppliedAfter is how long the erasure took to apply everywhere.
	AppliedAfter time.Duration          `json:"applied_after_ns"`
	Sweeps       []inspect.SweepReport  `json:"sweeps"`
	Streams      []StreamErasure        `json:"streams"`
	Final        []inspect.ErasureState `json:"final"`
	Warnings     []string               `json:"warnings"`
	Clean        bool                   `json:"clean"`
}

// Erase runs an erasure; see above.
func Erase(ctx context.Context, cfg EraseConfig) (*EraseReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &eraser{cfg: cfg, rep: &EraseReport{Identity: cfg.Identity, Sweeps: []inspect.SweepReport{}, Streams: []StreamErasure{}, Warnings: []string{}}}
	for _, r := range cfg.Deployment.Regions {
		cl, err := NewNodeClient(r)
		if err != nil {
			return nil, err
		}
		e.clients = append(e.clients, cl)
	}
	return e.run(ctx)
}

type eraser struct {
	cfg     EraseConfig
	rep     *EraseReport
	clients []*NodeClient
}

func (e *eraser) progress(phase, note string, done, total uint64, final bool) {
	if e.cfg.Progress != nil {
		e.cfg.Progress(Progress{Op: "erase", Phase: phase, Done: done, Total: total, Unit: "regions", Note: note, ETA: -1, Final: final})
	}
}

func (e *eraser) run(ctx context.Context) (*EraseReport, error) {
	rep := e.rep
	if err := e.locate(ctx); err != nil {
		return rep, err
	}
	start := time.Now()
	if !rep.AlreadyErased {
		if err := e.appendErasure(ctx); err != nil {
			return rep, err
		}
	}
	if err := e.waitApplied(ctx); err != nil {
		return rep, err
	}
	rep.AppliedAfter = time.Since(start)
	e.progress("applied", "the tombstone is in every region", uint64(len(e.clients)), uint64(len(e.clients)), true)
	if err := e.quiesce(ctx); err != nil {
		if ctx.Err() != nil {
			return rep, err
		}
		rep.Warnings = append(rep.Warnings, "not every write made before the sweep was applied everywhere in time: "+err.Error())
	}
	if err := e.sweep(ctx); err != nil {
		return rep, err
	}
	if err := e.purgeStreams(ctx); err != nil {
		return rep, err
	}
	if err := e.final(ctx); err != nil {
		return rep, err
	}
	return rep, nil
}

// locate finds the identity's home region and zone.
func (e *eraser) locate(ctx context.Context) error {
	rep := e.rep
	if e.cfg.Home != "" {
		rep.Home = e.cfg.Home
	}
	var unknown, unreachable []string
	for _, cl := range e.clients {
		ident, err := cl.Identity(ctx, e.cfg.Identity)
		var ae *APIError
		switch {
		case err == nil:
			if rep.Home == "" {
				rep.Home = ident.GetHomeRegion()
			}
		case errors.As(err, &ae) && ae.Status == http.StatusGone:
			rep.AlreadyErased = true
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			unknown = append(unknown, cl.Region)
		default:
			unreachable = append(unreachable, fmt.Sprintf("%s (%v)", cl.Region, err))
		}
	}
	if len(unreachable) > 0 {
		return fmt.Errorf("%w: every region must take part in an erasure: %v", ErrUnreachable, unreachable)
	}
	if len(unknown) == len(e.clients) {
		return fmt.Errorf("ops: erase: identity %s is unknown in every region", e.cfg.Identity)
	}
	if rep.Home != "" {
		z, ok := e.cfg.Deployment.Policy.ZoneOf(rep.Home)
		if !ok {
			return fmt.Errorf("ops: erase: home region %q of %s is not in the policy", rep.Home, e.cfg.Identity)
		}
		rep.Zone = z
	}
	if rep.Home == "" && !rep.AlreadyErased {
		return fmt.Errorf("ops: erase: no region knows the home region of %s yet", e.cfg.Identity)
	}
	return nil
}

func (e *eraser) appendErasure(ctx context.Context) error {
	r, _ := e.cfg.Deployment.Region(e.rep.Home)
	cl, err := client.New(r.HTTP)
	if err != nil {
		return fmt.Errorf("ops: erase: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("ops: erase: event id: %w", err)
	}
	ev := &meridianv1.Event{
		EventId: id.String(), IdentityId: e.cfg.Identity, HomeRegion: e.rep.Home,
		Body: &meridianv1.Event_IdentityErased{IdentityErased: &meridianv1.IdentityErased{Reason: e.cfg.Reason}},
	}
	if _, err := cl.Append(ctx, ev); err != nil {
		return fmt.Errorf("ops: erase: append IdentityErased in %s: %w", e.rep.Home, err)
	}
	e.rep.EventID = ev.EventId
	e.cfg.Logger.Info("erase: IdentityErased appended", "identity", e.cfg.Identity, "region", e.rep.Home, "event", ev.EventId)
	return nil
}

// poll calls cond every Poll until it holds, Timeout passes or ctx ends.
func (e *eraser) poll(ctx context.Context, what string, cond func() (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	t := time.NewTicker(e.cfg.Poll)
	defer t.Stop()
	for {
		ok, why, err := cond()
		if err != nil && !errors.Is(err, ErrUnreachable) {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%w: %s after %s: %s", ErrTimeout, what, e.cfg.Timeout, why)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (e *eraser) inZone(r string) bool {
	z, _ := e.cfg.Deployment.Policy.ZoneOf(r)
	return e.rep.Zone == "" || z == e.rep.Zone
}

// waitApplied waits for the tombstone everywhere and no resident state in
// the zone.
func (e *eraser) waitApplied(ctx context.Context) error {
	return e.poll(ctx, "erasure applied everywhere", func() (bool, string, error) {
		done := 0
		var pending []string
		for _, cl := range e.clients {
			st, err := cl.Erasure(ctx, e.cfg.Identity, false)
			switch {
			case err != nil:
				pending = append(pending, fmt.Sprintf("%s: %v", cl.Region, err))
			case !st.Erased:
				pending = append(pending, cl.Region+": no tombstone yet")
			case e.inZone(cl.Region) && st.ResidentState:
				pending = append(pending, cl.Region+": resident state still held")
			default:
				done++
			}
		}
		e.progress("applying", fmt.Sprintf("%d of %d regions applied the erasure", done, len(e.clients)), uint64(done), uint64(len(e.clients)), false)
		return len(pending) == 0, fmt.Sprint(pending), nil
	})
}

// quiesce waits until every region's log, as of now, is shipped and
// applied by every region: a write that raced the erasure has then made
// all the keys and key records it will make.
func (e *eraser) quiesce(ctx context.Context) error {
	heads := map[string]uint64{}
	for _, cl := range e.clients {
		st, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		heads[cl.Region] = st.Log.LastSeq
	}
	if err := e.poll(ctx, "logs shipped", func() (bool, string, error) {
		var behind []string
		for _, cl := range e.clients {
			st, err := cl.Status(ctx)
			if err != nil {
				return false, "", err
			}
			if st.Shipper == nil || st.Shipper.Shipped < heads[cl.Region] {
				behind = append(behind, cl.Region)
			}
		}
		note := "every shipper caught up"
		if len(behind) > 0 {
			note = fmt.Sprintf("waiting for the shippers of %v", behind)
		}
		e.progress("draining", note, uint64(len(e.clients)-len(behind)), uint64(len(e.clients)), false)
		return len(behind) == 0, fmt.Sprint(behind), nil
	}); err != nil {
		return err
	}
	// The origin streams' last messages per zone filter, now.
	type key struct{ origin, zone string }
	lasts := map[key]uint64{}
	for _, o := range e.cfg.Deployment.Regions {
		js, err := e.cfg.Conns.JS(ctx, o.Name)
		if err != nil {
			return err
		}
		for _, z := range append([]string{region.GlobalZone}, e.cfg.Deployment.Policy.Zones()...) {
			seq, err := lastSeqOn(ctx, js, region.OriginStream(o.Name), region.ZoneFilter(o.Name, z))
			if err != nil {
				return &RegionError{Region: o.Name, Op: "origin stream", Err: err}
			}
			lasts[key{o.Name, z}] = seq
		}
	}
	return e.poll(ctx, "writes applied everywhere", func() (bool, string, error) {
		var behind []string
		for _, cl := range e.clients {
			st, err := cl.Status(ctx)
			if err != nil {
				return false, "", err
			}
			zone, _ := e.cfg.Deployment.Policy.ZoneOf(cl.Region)
			for _, o := range e.cfg.Deployment.Regions {
				var have map[string]uint64
				for _, os := range st.Origins {
					if os.Region == o.Name {
						have = os.SourceSeq
					}
				}
				for _, z := range []string{region.GlobalZone, zone} {
					if want := lasts[key{o.Name, z}]; have[z] < want {
						behind = append(behind, fmt.Sprintf("%s from %s/%s (%d < %d)", cl.Region, o.Name, z, have[z], want))
					}
				}
			}
		}
		e.progress("draining", fmt.Sprintf("%d sources behind", len(behind)), 0, 0, false)
		return len(behind) == 0, fmt.Sprint(behind), nil
	})
}

// sweep has every region destroy the keys and redact its log.
func (e *eraser) sweep(ctx context.Context) error {
	for i, cl := range e.clients {
		sr, err := cl.Sweep(ctx, e.cfg.Identity)
		if err != nil {
			return fmt.Errorf("ops: erase: sweep %s: %w", cl.Region, err)
		}
		e.rep.Sweeps = append(e.rep.Sweeps, *sr)
		e.progress("sweeping", fmt.Sprintf("%s: %d keys destroyed, %d log records redacted", cl.Region, sr.KeysDestroyed, len(sr.Redacted)), uint64(i+1), uint64(len(e.clients)), i == len(e.clients)-1)
	}
	return nil
}

// purgeStreams securely deletes the key messages (and, with
// PurgeResident, the RESIDENT parts) from every stream of every region.
func (e *eraser) purgeStreams(ctx context.Context) error {
	zones := []string{e.rep.Zone}
	if e.rep.Zone == "" {
		zones = e.cfg.Deployment.Policy.Zones()
	}
	for i, r := range e.cfg.Deployment.Regions {
		js, err := e.cfg.Conns.JS(ctx, r.Name)
		if err != nil {
			return err
		}
		for _, stream := range []string{region.OriginStream(r.Name), region.InboxStream(r.Name)} {
			for _, z := range zones {
				se, err := e.deleteMatching(ctx, js, r.Name, stream, region.IdentityKeyFilter(z, e.cfg.Identity), false)
				if err != nil {
					return err
				}
				e.rep.Streams = append(e.rep.Streams, se)
				if e.cfg.PurgeResident {
					se, err := e.deleteMatching(ctx, js, r.Name, stream, region.ResidentFilter(z), true)
					if err != nil {
						return err
					}
					e.rep.Streams = append(e.rep.Streams, se)
				}
			}
		}
		e.progress("deleting", r.Name, uint64(i+1), uint64(len(e.cfg.Deployment.Regions)), i == len(e.cfg.Deployment.Regions)-1)
	}
	return nil
}

// deleteMatching securely deletes the messages of stream on filter (that
// are about the identity, when byIdentity: RESIDENT parts carry it inside)
// and counts what is left.
func (e *eraser) deleteMatching(ctx context.Context, js jetstream.JetStream, regionName, stream, filter string, byIdentity bool) (StreamErasure, error) {
	se := StreamErasure{Region: regionName, Stream: stream, Filter: filter, Deleted: []uint64{}}
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return se, nil
	}
	if err != nil {
		return se, &RegionError{Region: regionName, Op: "stream " + stream, Err: err}
	}
	find := func() ([]uint64, error) {
		var seqs []uint64
		_, err := scanStream(ctx, js, stream, scanRange{Filters: []string{filter}, HeadersOnly: !byIdentity}, func(m StreamMsg) error {
			if !byIdentity || messageIdentity(m) == e.cfg.Identity {
				seqs = append(seqs, m.Seq)
			}
			return nil
		})
		return seqs, err
	}
	seqs, err := find()
	if err != nil {
		return se, &RegionError{Region: regionName, Op: "scan " + stream, Err: err}
	}
	for _, seq := range seqs {
		if err := s.SecureDeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return se, &RegionError{Region: regionName, Op: fmt.Sprintf("secure delete %s seq %d", stream, seq), Err: err}
		}
		se.Deleted = append(se.Deleted, seq)
	}
	left, err := find()
	if err != nil {
		return se, &RegionError{Region: regionName, Op: "scan " + stream, Err: err}
	}
	se.Remaining = uint64(len(left))
	if len(left) > 0 {
		e.rep.Warnings = append(e.rep.Warnings, fmt.Sprintf("%s %s still holds %d messages on %s (written after the sweep?)", regionName, stream, len(left), filter))
	}
	return se, nil
}

// final reads back what every region holds.
func (e *eraser) final(ctx context.Context) error {
	clean := true
	for _, cl := range e.clients {
		st, err := cl.Erasure(ctx, e.cfg.Identity, true)
		if err != nil {
			return fmt.Errorf("ops: erase: final check of %s: %w", cl.Region, err)
		}
		e.rep.Final = append(e.rep.Final, *st)
		if !st.Clean() {
			clean = false
			e.rep.Warnings = append(e.rep.Warnings, fmt.Sprintf("%s still holds: resident state %v, %d keys, %d key records with key material", cl.Region, st.ResidentState, st.Keys, st.KeyRecords))
		}
	}
	for _, se := range e.rep.Streams {
		if se.Remaining > 0 {
			clean = false
		}
	}
	e.rep.Clean = clean
	slices.SortFunc(e.rep.Final, func(a, b inspect.ErasureState) int {
		switch {
		case a.Region < b.Region:
			return -1
		case a.Region > b.Region:
			return 1
		}
		return 0
	})
	return nil
}
