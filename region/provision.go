package region

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrZoneLeave is wrapped by *ZoneLeaveError.
var ErrZoneLeave = errors.New("region: region leaves a zone")

// ZoneLeaveError refuses a provisioning run that would take a region out of
// a residency zone without ProvisionOptions.AllowZoneLeave: the region's
// copies of the zone's resident data would have to be purged.
type ZoneLeaveError struct {
	Region string
	Zone   string
	// Evidence says how the leave was detected: "previous policy",
	// "inbox source <filter>" or "inbox metadata".
	Evidence []string
}

func (e *ZoneLeaveError) Error() string {
	return fmt.Sprintf("region: provision: region %q would leave zone %q (%s); its inbox copies of that zone's resident data must then be purged: pass AllowZoneLeave to do so",
		e.Region, e.Zone, strings.Join(e.Evidence, ", "))
}

// Unwrap lets callers test errors.Is(err, ErrZoneLeave).
func (e *ZoneLeaveError) Unwrap() error { return ErrZoneLeave }

// ProvisionOptions controls Provision.
type ProvisionOptions struct {
	// Previous is the policy currently applied, if known. A region whose
	// zone differs in it is leaving that zone. Leaves are also detected from
	// the inbox streams' existing sources and metadata.
	Previous *Policy
	// AllowZoneLeave lets a region leave a zone; its inbox copies of the
	// zone's resident data (ResidentFilter(zone)) are then purged.
	AllowZoneLeave bool
	// RetryTimeout bounds how long one JetStream call is retried while the
	// server answers "stream is offline" (10118, right after a restart) or
	// nobody answers yet. Default 30s.
	RetryTimeout time.Duration
}

func (o ProvisionOptions) withDefaults() ProvisionOptions {
	if o.RetryTimeout == 0 {
		o.RetryTimeout = 30 * time.Second
	}
	return o
}

func (o ProvisionOptions) validate() error {
	if o.RetryTimeout < 0 {
		return fmt.Errorf("%w: ProvisionOptions.RetryTimeout %v: must not be negative", ErrInvalidOptions, o.RetryTimeout)
	}
	return nil
}

// Action is what provisioning did to a stream.
type Action string

// Actions of a StreamChange.
const (
	ActionCreated   Action = "created"
	ActionUpdated   Action = "updated"
	ActionUnchanged Action = "unchanged"
)

// StreamChange reports one stream.
type StreamChange struct {
	Region string
	Role   string // "origin" or "inbox"
	Stream string
	Action Action
	// Fields lists the config fields that differed (updates only), e.g.
	// "duplicates", "metadata", "sources".
	Fields []string
	// Sources added and removed, rendered "<stream> filter=<f> api=<prefix>"
	// ("... local" for the region's own origin).
	SourcesAdded   []string
	SourcesRemoved []string
}

// PurgeReport reports the purge of a zone's resident data from an inbox.
type PurgeReport struct {
	Region   string
	Stream   string
	Zone     string
	Filter   string
	Messages uint64 // messages matching Filter just before the purge
}

// Residue is resident data of a left zone that remains in the region's
// origin stream: written there while the region was in the zone. It is the
// copy the zone's other members source from, so it is reported, not purged;
// the operator decides once they have caught up.
type Residue struct {
	Region   string
	Stream   string
	Zone     string
	Filter   string
	Messages uint64
}

// ProvisionReport is what a Provision run changed.
type ProvisionReport struct {
	Streams []StreamChange // origins first, then inboxes; regions sorted
	Purges  []PurgeReport
	Residue []Residue
	// Skipped lists plan regions that had no JetStream in the map.
	Skipped []string
}

// Changed reports whether the run changed anything.
func (r *ProvisionReport) Changed() bool {
	for _, s := range r.Streams {
		if s.Action != ActionUnchanged {
			return true
		}
	}
	return len(r.Purges) > 0
}

// String renders the report, one line per item.
func (r *ProvisionReport) String() string {
	var b strings.Builder
	for _, s := range r.Streams {
		fmt.Fprintf(&b, "%s %s %s: %s", s.Region, s.Role, s.Stream, s.Action)
		if len(s.Fields) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(s.Fields, ", "))
		}
		b.WriteString("\n")
		for _, a := range s.SourcesAdded {
			fmt.Fprintf(&b, "  + source %s\n", a)
		}
		for _, a := range s.SourcesRemoved {
			fmt.Fprintf(&b, "  - source %s\n", a)
		}
	}
	for _, p := range r.Purges {
		fmt.Fprintf(&b, "%s purged %s of zone %s: %d messages (%s)\n", p.Region, p.Stream, p.Zone, p.Messages, p.Filter)
	}
	for _, p := range r.Residue {
		fmt.Fprintf(&b, "%s WARNING %s still holds %d messages of left zone %s (%s)\n", p.Region, p.Stream, p.Messages, p.Zone, p.Filter)
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "%s skipped: no JetStream given\n", s)
	}
	return b.String()
}

// Provision converges the streams of a running system to plan: it creates
// or updates every region's origin and inbox stream and their sources, and
// reports what it changed; a second run with the same plan changes nothing.
// regionJS maps region names to a JetStream client of that region's domain;
// plan regions missing from it are skipped (a node provisions its own
// region), names outside the plan are an error.
//
// It inspects everything before changing anything: a region leaving a zone
// (see ProvisionOptions) is refused with *ZoneLeaveError and nothing is
// changed. With AllowZoneLeave, the inbox's sources of that zone are removed
// first and then its copies purged; the inbox's zone metadata moves to the
// new zone only after the purge, so an interrupted run is detected again
// and finished by the next.
func Provision(ctx context.Context, plan *Plan, regionJS map[string]jetstream.JetStream, opts ProvisionOptions) (*ProvisionReport, error) {
	if plan == nil {
		return nil, fmt.Errorf("%w: Provision: no plan", ErrInvalidOptions)
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(regionJS)) {
		if _, ok := plan.Region(name); !ok {
			return nil, fmt.Errorf("%w: Provision: regionJS[%q]: not a region of the plan", ErrInvalidOptions, name)
		}
		if regionJS[name] == nil {
			return nil, fmt.Errorf("%w: Provision: regionJS[%q]: nil JetStream", ErrInvalidOptions, name)
		}
	}

	p := &provisioner{opts: opts, report: &ProvisionReport{}}
	// Inspect.
	var work []*regionWork
	for _, rp := range plan.Regions {
		js, ok := regionJS[rp.Region]
		if !ok {
			p.report.Skipped = append(p.report.Skipped, rp.Region)
			continue
		}
		w := &regionWork{rp: rp, js: js}
		var err error
		if w.origin, err = p.lookup(ctx, js, rp.Origin.Name); err != nil {
			return nil, fmt.Errorf("region: provision %s: %w", rp.Region, err)
		}
		if w.inbox, err = p.lookup(ctx, js, rp.Inbox.Name); err != nil {
			return nil, fmt.Errorf("region: provision %s: %w", rp.Region, err)
		}
		w.leaving = zoneLeaves(rp, w.inbox, opts.Previous)
		work = append(work, w)
	}
	if !opts.AllowZoneLeave {
		var errs []error
		for _, w := range work {
			for _, z := range slices.Sorted(maps.Keys(w.leaving)) {
				errs = append(errs, &ZoneLeaveError{Region: w.rp.Region, Zone: z, Evidence: w.leaving[z]})
			}
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
	}

	// Apply: origins first so that new sources find their streams.
	for _, w := range work {
		if err := p.converge(ctx, w.js, w.rp.Region, "origin", w.origin, w.rp.Origin); err != nil {
			return p.report, fmt.Errorf("region: provision %s: %w", w.rp.Region, err)
		}
	}
	for _, w := range work {
		if err := p.convergeInbox(ctx, w); err != nil {
			return p.report, fmt.Errorf("region: provision %s: %w", w.rp.Region, err)
		}
	}
	return p.report, nil
}

type regionWork struct {
	rp            *RegionPlan
	js            jetstream.JetStream
	origin, inbox *jetstream.StreamInfo // nil if absent
	leaving       map[string][]string   // zone -> evidence
}

type provisioner struct {
	opts   ProvisionOptions
	report *ProvisionReport
}

// zoneLeaves finds the residency zones a region's inbox holds or held other
// than its planned zone.
func zoneLeaves(rp *RegionPlan, inbox *jetstream.StreamInfo, prev *Policy) map[string][]string {
	out := map[string][]string{}
	add := func(zone, evidence string) {
		if zone != "" && zone != GlobalZone && zone != rp.Zone && !slices.Contains(out[zone], evidence) {
			out[zone] = append(out[zone], evidence)
		}
	}
	if prev != nil {
		if z, ok := prev.ZoneOf(rp.Region); ok {
			add(z, "previous policy")
		}
	}
	if inbox != nil {
		for _, s := range inbox.Config.Sources {
			if _, zone, ok := parseZoneFilter(s.FilterSubject); ok {
				add(zone, "inbox source "+s.FilterSubject)
			}
		}
		add(inbox.Config.Metadata[MetaZone], "inbox metadata")
	}
	return out
}

func (p *provisioner) convergeInbox(ctx context.Context, w *regionWork) error {
	want := w.rp.Inbox
	if len(w.leaving) == 0 || w.inbox == nil {
		return p.converge(ctx, w.js, w.rp.Region, "inbox", w.inbox, want)
	}
	// Leaving: stop the zone's sources first (keeping the old zone metadata
	// as the marker of an unfinished leave), purge, then record the zone.
	stage := want
	stage.Metadata = maps.Clone(want.Metadata)
	if old, ok := w.inbox.Config.Metadata[MetaZone]; ok {
		stage.Metadata[MetaZone] = old
	}
	if err := p.converge(ctx, w.js, w.rp.Region, "inbox", w.inbox, stage); err != nil {
		return err
	}
	for _, zone := range slices.Sorted(maps.Keys(w.leaving)) {
		if err := p.purge(ctx, w, zone); err != nil {
			return err
		}
	}
	staged, err := p.lookup(ctx, w.js, want.Name)
	if err != nil {
		return err
	}
	before := len(p.report.Streams)
	if err := p.converge(ctx, w.js, w.rp.Region, "inbox", staged, want); err != nil {
		return err
	}
	// One stream, one line: fold the metadata step into the first.
	if len(p.report.Streams) == before+1 {
		last := p.report.Streams[before]
		p.report.Streams = p.report.Streams[:before]
		first := &p.report.Streams[before-1]
		if last.Action != ActionUnchanged {
			if first.Action == ActionUnchanged {
				first.Action = ActionUpdated
			}
			for _, f := range last.Fields {
				if !slices.Contains(first.Fields, f) {
					first.Fields = append(first.Fields, f)
				}
			}
		}
	}
	return nil
}

func (p *provisioner) purge(ctx context.Context, w *regionWork, zone string) error {
	filter := ResidentFilter(zone)
	inbox, err := retryValue(ctx, p.opts.RetryTimeout, func(ctx context.Context) (jetstream.Stream, error) {
		return w.js.Stream(ctx, w.rp.Inbox.Name)
	})
	if err != nil {
		return fmt.Errorf("purge %s: %w", w.rp.Inbox.Name, err)
	}
	n, err := p.count(ctx, inbox, filter)
	if err != nil {
		return fmt.Errorf("purge %s: %w", w.rp.Inbox.Name, err)
	}
	if err := retry(ctx, p.opts.RetryTimeout, func(ctx context.Context) error {
		return inbox.Purge(ctx, jetstream.WithPurgeSubject(filter))
	}); err != nil {
		return fmt.Errorf("purge %s %s: %w", w.rp.Inbox.Name, filter, err)
	}
	p.report.Purges = append(p.report.Purges, PurgeReport{Region: w.rp.Region, Stream: w.rp.Inbox.Name, Zone: zone, Filter: filter, Messages: n})

	if w.origin != nil {
		origin, err := retryValue(ctx, p.opts.RetryTimeout, func(ctx context.Context) (jetstream.Stream, error) {
			return w.js.Stream(ctx, w.rp.Origin.Name)
		})
		if err != nil {
			return fmt.Errorf("inspect %s: %w", w.rp.Origin.Name, err)
		}
		of := ZoneFilter(w.rp.Region, zone)
		n, err := p.count(ctx, origin, of)
		if err != nil {
			return fmt.Errorf("inspect %s: %w", w.rp.Origin.Name, err)
		}
		if n > 0 {
			p.report.Residue = append(p.report.Residue, Residue{Region: w.rp.Region, Stream: w.rp.Origin.Name, Zone: zone, Filter: of, Messages: n})
		}
	}
	return nil
}

// count returns how many messages of s match filter.
func (p *provisioner) count(ctx context.Context, s jetstream.Stream, filter string) (uint64, error) {
	info, err := retryValue(ctx, p.opts.RetryTimeout, func(ctx context.Context) (*jetstream.StreamInfo, error) {
		return s.Info(ctx, jetstream.WithSubjectFilter(filter))
	})
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// lookup returns the stream's info, or nil if it does not exist.
func (p *provisioner) lookup(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	s, err := retryValue(ctx, p.opts.RetryTimeout, func(ctx context.Context) (jetstream.Stream, error) {
		return js.Stream(ctx, name)
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", name, err)
	}
	return s.CachedInfo(), nil
}

// converge creates the stream or updates the fields meridian manages,
// keeping everything else the operator or server set (placement,
// compression, other metadata).
func (p *provisioner) converge(ctx context.Context, js jetstream.JetStream, region, role string, have *jetstream.StreamInfo, want jetstream.StreamConfig) error {
	ch := StreamChange{Region: region, Role: role, Stream: want.Name}
	if have == nil {
		_, err := retryValue(ctx, p.opts.RetryTimeout, func(ctx context.Context) (jetstream.Stream, error) {
			return js.CreateStream(ctx, want)
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Created concurrently, or by an earlier attempt whose answer
			// was lost: converge on what is there now.
			if have, err = p.lookup(ctx, js, want.Name); err != nil {
				return err
			}
			if have != nil {
				return p.converge(ctx, js, region, role, have, want)
			}
			err = fmt.Errorf("stream %s vanished while creating it", want.Name)
		}
		if err != nil {
			return fmt.Errorf("create %s: %w", want.Name, err)
		}
		ch.Action = ActionCreated
		for _, s := range want.Sources {
			ch.SourcesAdded = append(ch.SourcesAdded, keyOf(s).String())
		}
		sort.Strings(ch.SourcesAdded)
		p.report.Streams = append(p.report.Streams, ch)
		return nil
	}
	ch.Fields, ch.SourcesAdded, ch.SourcesRemoved = diffConfig(have.Config, want)
	if len(ch.Fields) == 0 {
		ch.Action = ActionUnchanged
		p.report.Streams = append(p.report.Streams, ch)
		return nil
	}
	next := mergeManaged(have.Config, want)
	if _, err := retryValue(ctx, p.opts.RetryTimeout, func(ctx context.Context) (jetstream.Stream, error) {
		return js.UpdateStream(ctx, next)
	}); err != nil {
		return fmt.Errorf("update %s (%s): %w", want.Name, strings.Join(ch.Fields, ", "), err)
	}
	ch.Action = ActionUpdated
	p.report.Streams = append(p.report.Streams, ch)
	return nil
}

// diffConfig compares the fields meridian manages. Sources are compared as
// sets of (stream, filter, API prefix).
func diffConfig(have, want jetstream.StreamConfig) (fields, added, removed []string) {
	cmp := []struct {
		name string
		same bool
	}{
		{"description", have.Description == want.Description},
		{"subjects", slices.Equal(sortedUnique(have.Subjects), sortedUnique(want.Subjects))},
		{"retention", have.Retention == want.Retention},
		{"storage", have.Storage == want.Storage},
		{"discard", have.Discard == want.Discard},
		{"max_age", have.MaxAge == want.MaxAge},
		{"max_bytes", have.MaxBytes == want.MaxBytes},
		{"max_msgs", have.MaxMsgs == want.MaxMsgs},
		{"max_msgs_per_subject", have.MaxMsgsPerSubject == want.MaxMsgsPerSubject},
		{"max_msg_size", have.MaxMsgSize == want.MaxMsgSize},
		{"max_consumers", have.MaxConsumers == want.MaxConsumers},
		{"replicas", have.Replicas == want.Replicas},
		{"duplicates", have.Duplicates == want.Duplicates},
		{"metadata", maps.Equal(ownMetadata(have.Metadata), ownMetadata(want.Metadata))},
	}
	for _, c := range cmp {
		if !c.same {
			fields = append(fields, c.name)
		}
	}
	haveSet := map[sourceKey]bool{}
	for _, s := range have.Sources {
		haveSet[keyOf(s)] = true
	}
	wantSet := map[sourceKey]bool{}
	for _, s := range want.Sources {
		k := keyOf(s)
		wantSet[k] = true
		if !haveSet[k] {
			added = append(added, k.String())
		}
	}
	for k := range haveSet {
		if !wantSet[k] {
			removed = append(removed, k.String())
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	if len(added)+len(removed) > 0 || len(have.Sources) != len(want.Sources) {
		fields = append(fields, "sources")
	}
	return fields, added, removed
}

func ownMetadata(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if strings.HasPrefix(k, "meridian.") {
			out[k] = v
		}
	}
	return out
}

// mergeManaged returns have with the managed fields of want.
func mergeManaged(have, want jetstream.StreamConfig) jetstream.StreamConfig {
	next := have
	next.Description = want.Description
	next.Subjects = slices.Clone(want.Subjects)
	next.Retention = want.Retention
	next.Storage = want.Storage
	next.Discard = want.Discard
	next.MaxAge = want.MaxAge
	next.MaxBytes = want.MaxBytes
	next.MaxMsgs = want.MaxMsgs
	next.MaxMsgsPerSubject = want.MaxMsgsPerSubject
	next.MaxMsgSize = want.MaxMsgSize
	next.MaxConsumers = want.MaxConsumers
	next.Replicas = want.Replicas
	next.Duplicates = want.Duplicates
	next.Sources = want.Sources
	meta := map[string]string{}
	for k, v := range have.Metadata {
		// The server owns _nats.* and re-derives it; meridian owns meridian.*.
		if !strings.HasPrefix(k, "meridian.") && !strings.HasPrefix(k, "_nats.") {
			meta[k] = v
		}
	}
	maps.Copy(meta, want.Metadata)
	next.Metadata = meta
	return next
}

// codeStreamOffline is the server's "stream is offline" error (10118),
// answered for a while after a restart.
const codeStreamOffline = 10118

func retryable(ctx context.Context, err error) bool {
	var jerr jetstream.JetStreamError
	if errors.As(err, &jerr) && jerr.APIError() != nil && jerr.APIError().ErrorCode == codeStreamOffline {
		return true
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return true
	}
	// A per-request timeout (the client's default, when ctx has no
	// deadline) while ctx itself is still alive.
	return ctx.Err() == nil && (errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded))
}

func retry(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	_, err := retryValue(ctx, timeout, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
	return err
}

// retryValue calls fn until it succeeds, fails for good, or timeout passes,
// backing off from 50 ms to 1 s.
func retryValue[T any](ctx context.Context, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(timeout)
	wait := 50 * time.Millisecond
	for {
		v, err := fn(ctx)
		if err == nil || !retryable(ctx, err) {
			return v, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return v, fmt.Errorf("gave up after %v: %w", timeout, err)
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return v, fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}
