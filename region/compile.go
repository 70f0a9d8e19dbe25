package region

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Every subject, stream and filter name meridian uses is spelt here and
// nowhere else.
const (
	// SubjectRoot is the first token of every meridian event subject.
	SubjectRoot = "meridian"
	// GlobalZone is the zone token of GLOBAL parts, which replicate to every
	// region. It is reserved: no residency zone may use it.
	GlobalZone = "global"
	// KeyType is the type token of data-key records.
	KeyType = "key"
	// ClaimsBucket is the JetStream KV bucket, in the claims region's
	// domain, that holds uniqueness claims.
	ClaimsBucket = "claims"
)

// Metadata keys meridian puts on the streams it manages.
const (
	MetaRole   = "meridian.role"   // "origin" or "inbox"
	MetaRegion = "meridian.region" // the region the stream belongs to
	MetaZone   = "meridian.zone"   // inbox only: the residency zone it holds
)

// Subject is the subject of an event part written in originRegion:
// meridian.<origin>.<zone>.<type>, zone being GlobalZone for GLOBAL parts.
func Subject(originRegion, zone, typ string) string {
	return SubjectRoot + "." + originRegion + "." + zone + "." + typ
}

// KeySubject is the subject of a data-key record:
// meridian.<region>.<zone>.key.<identity-id>.
func KeySubject(region, zone, identityID string) string {
	return Subject(region, zone, KeyType) + "." + identityID
}

// OriginStream is the name of the stream a region's shipper publishes to.
func OriginStream(region string) string { return "origin-" + region }

// InboxStream is the name of the stream a region's projector consumes.
func InboxStream(region string) string { return "inbox-" + region }

// OriginSubjects is the subject filter of everything written in a region.
func OriginSubjects(region string) string { return SubjectRoot + "." + region + ".>" }

// ZoneFilter selects the parts of one zone (or GlobalZone) written in origin.
func ZoneFilter(origin, zone string) string { return SubjectRoot + "." + origin + "." + zone + ".>" }

// parseZoneFilter is the inverse of ZoneFilter.
func parseZoneFilter(filter string) (origin, zone string, ok bool) {
	tok := strings.Split(filter, ".")
	if len(tok) != 4 || tok[0] != SubjectRoot || tok[1] == "" || tok[2] == "" || tok[3] != ">" {
		return "", "", false
	}
	return tok[1], tok[2], true
}

// ResidentFilter selects a zone's parts written in any region; it is what a
// region purges when it leaves the zone.
func ResidentFilter(zone string) string { return SubjectRoot + ".*." + zone + ".>" }

// IdentityKeyFilter selects every data-key record of one identity, written
// in any region; erasure purges it in every stream that holds it.
func IdentityKeyFilter(zone, identityID string) string {
	return SubjectRoot + ".*." + zone + "." + KeyType + "." + identityID
}

// DomainAPIPrefix is the JetStream API prefix of a domain, as used by stream
// sources (StreamSource.External.APIPrefix) in another domain.
func DomainAPIPrefix(domain string) string { return "$JS." + domain + ".API" }

// ClaimsStream is the stream behind ClaimsBucket.
func ClaimsStream() string { return "KV_" + ClaimsBucket }

// SubjectParts is a parsed event subject.
type SubjectParts struct {
	Origin     string
	Zone       string
	Type       string
	IdentityID string // key records only
}

// ErrBadSubject is returned by ParseSubject.
var ErrBadSubject = errors.New("region: not a meridian event subject")

// ParseSubject splits meridian.<origin>.<zone>.<type> and
// meridian.<origin>.<zone>.key.<identity-id>.
func ParseSubject(subject string) (SubjectParts, error) {
	tok := strings.Split(subject, ".")
	if len(tok) < 4 || tok[0] != SubjectRoot || tok[1] == "" || tok[2] == "" || tok[3] == "" {
		return SubjectParts{}, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	sp := SubjectParts{Origin: tok[1], Zone: tok[2], Type: tok[3]}
	switch {
	case tok[3] == KeyType:
		if len(tok) != 5 || tok[4] == "" {
			return SubjectParts{}, fmt.Errorf("%w: %q: a key record names its identity", ErrBadSubject, subject)
		}
		sp.IdentityID = tok[4]
	case len(tok) != 4:
		return SubjectParts{}, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	return sp, nil
}

// CompileOptions tunes the stream configs of a plan. The zero value gives
// the defaults.
type CompileOptions struct {
	// DuplicateWindow is the Nats-Msg-Id deduplication window of origin and
	// inbox streams. It must cover the longest a shipper may take to resend
	// an unacknowledged record (reconnect + backoff). Default 2m.
	DuplicateWindow time.Duration
	// MaxAge bounds how long streams keep messages; 0 keeps them forever,
	// which replay and re-seeding rely on.
	MaxAge time.Duration
	// MaxBytes bounds each stream's size; 0 means unlimited. With a limit,
	// the oldest messages are discarded first.
	MaxBytes int64
	// Replicas per stream inside a region's cluster (1..5). Default 1.
	Replicas int
}

// DefaultDuplicateWindow is CompileOptions.DuplicateWindow's default.
const DefaultDuplicateWindow = 2 * time.Minute

func (o CompileOptions) withDefaults() CompileOptions {
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	return o
}

// ErrInvalidOptions is wrapped by errors about bad CompileOptions or
// ProvisionOptions.
var ErrInvalidOptions = errors.New("region: invalid options")

func (o CompileOptions) validate() error {
	switch {
	case o.DuplicateWindow < time.Second:
		return fmt.Errorf("%w: CompileOptions.DuplicateWindow %v: must be at least 1s", ErrInvalidOptions, o.DuplicateWindow)
	case o.MaxAge < 0:
		return fmt.Errorf("%w: CompileOptions.MaxAge %v: must not be negative", ErrInvalidOptions, o.MaxAge)
	case o.MaxAge > 0 && o.DuplicateWindow > o.MaxAge:
		return fmt.Errorf("%w: CompileOptions.DuplicateWindow %v: must not exceed MaxAge %v", ErrInvalidOptions, o.DuplicateWindow, o.MaxAge)
	case o.MaxBytes < 0:
		return fmt.Errorf("%w: CompileOptions.MaxBytes %d: must not be negative", ErrInvalidOptions, o.MaxBytes)
	case o.Replicas < 1 || o.Replicas > 5:
		return fmt.Errorf("%w: CompileOptions.Replicas %d: must be 1..5", ErrInvalidOptions, o.Replicas)
	}
	return nil
}

// Plan is everything NATS needs to run a policy. Treat it as read-only.
type Plan struct {
	Policy  *Policy
	Options CompileOptions // with defaults applied
	// Regions, sorted by name.
	Regions []*RegionPlan
	// Claims is nil when the policy names no claims region.
	Claims *ClaimsPlan
}

// RegionPlan is the compiled part of one region.
type RegionPlan struct {
	Region string
	Zone   string
	Domain string
	// Origin is the stream the region's shipper publishes to.
	Origin jetstream.StreamConfig
	// Inbox sources one entry per allowed (origin, filter) pair, each
	// naming the origin's domain through External.APIPrefix (the form the
	// server reports back, so provisioning compares like with like), except
	// the region's own origin, which is a local source.
	Inbox jetstream.StreamConfig
	// Permissions of the region's NATS credentials.
	Permissions Permissions
}

// ClaimsPlan locates the uniqueness claims.
type ClaimsPlan struct {
	Region string
	Domain string
	Bucket string
	Stream string
}

// Region returns the plan of one region.
func (p *Plan) Region(name string) (*RegionPlan, bool) {
	for _, rp := range p.Regions {
		if rp.Region == name {
			return rp, true
		}
	}
	return nil, false
}

// Compile compiles a policy with the default options.
func Compile(p *Policy) (*Plan, error) { return CompileWithOptions(p, CompileOptions{}) }

// CompileWithOptions compiles a policy into stream configs, sources and
// permissions. It is pure: the same policy and options give the same plan.
func CompileWithOptions(p *Policy, opts CompileOptions) (*Plan, error) {
	if p == nil {
		return nil, fmt.Errorf("region: compile: %w", &PolicyError{Field: "policy", Rule: RuleRequired, Detail: "no policy"})
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("region: compile: %w", err)
	}
	plan := &Plan{Policy: p, Options: opts}
	if c, ok := p.ClaimsRegion(); ok {
		d, _ := p.Domain(c)
		plan.Claims = &ClaimsPlan{Region: c, Domain: d, Bucket: ClaimsBucket, Stream: ClaimsStream()}
	}
	for _, name := range p.Regions() {
		r, _ := p.Region(name)
		plan.Regions = append(plan.Regions, &RegionPlan{
			Region:      name,
			Zone:        r.Zone,
			Domain:      r.JetStreamDomain,
			Origin:      originConfig(r, opts),
			Inbox:       inboxConfig(p, r, opts),
			Permissions: compilePermissions(p, name),
		})
	}
	return plan, nil
}

// baseConfig holds what origin and inbox streams share. Unlimited limits are
// spelt -1, the value the server reports back, so that provisioning sees an
// unchanged stream as unchanged.
func baseConfig(name string, opts CompileOptions) jetstream.StreamConfig {
	maxBytes := int64(-1)
	if opts.MaxBytes > 0 {
		maxBytes = opts.MaxBytes
	}
	return jetstream.StreamConfig{
		Name:              name,
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
		MaxAge:            opts.MaxAge,
		MaxBytes:          maxBytes,
		MaxMsgs:           -1,
		MaxMsgsPerSubject: -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Replicas:          opts.Replicas,
		Duplicates:        opts.DuplicateWindow,
	}
}

func originConfig(r Region, opts CompileOptions) jetstream.StreamConfig {
	cfg := baseConfig(OriginStream(r.Name), opts)
	cfg.Description = fmt.Sprintf("meridian: every event part written in region %s", r.Name)
	cfg.Subjects = []string{OriginSubjects(r.Name)}
	cfg.Metadata = map[string]string{MetaRole: "origin", MetaRegion: r.Name}
	return cfg
}

func inboxConfig(p *Policy, r Region, opts CompileOptions) jetstream.StreamConfig {
	cfg := baseConfig(InboxStream(r.Name), opts)
	cfg.Description = fmt.Sprintf("meridian: %s parts from every region and zone %s parts, for region %s", GlobalZone, r.Zone, r.Name)
	cfg.Metadata = map[string]string{MetaRole: "inbox", MetaRegion: r.Name, MetaZone: r.Zone}
	// Every origin, own included: the policy alone decides what may arrive,
	// not an assumption about where writers write.
	for _, origin := range p.Regions() {
		d, _ := p.Domain(origin)
		for _, zone := range []string{GlobalZone, r.Zone} {
			src := &jetstream.StreamSource{Name: OriginStream(origin), FilterSubject: ZoneFilter(origin, zone)}
			// The own origin is a local source: it lives in the same domain,
			// and a source naming its own domain's prefix did not deliver
			// (nats-server 2.15, nothing within 10 s, while cross-domain
			// sources delivered in ~0.1 s). Local also keeps an isolated
			// region sourcing its own writes.
			if origin != r.Name {
				src.External = &jetstream.ExternalStream{APIPrefix: DomainAPIPrefix(d)}
			}
			cfg.Sources = append(cfg.Sources, src)
		}
	}
	return cfg
}

// sourceKey identifies a source by what it copies from where.
type sourceKey struct{ stream, filter, api string }

func keyOf(s *jetstream.StreamSource) sourceKey {
	k := sourceKey{stream: s.Name, filter: s.FilterSubject}
	switch {
	case s.External != nil:
		k.api = s.External.APIPrefix
	case s.Domain != "":
		k.api = DomainAPIPrefix(s.Domain)
	}
	return k
}

func (k sourceKey) String() string {
	if k.api == "" {
		return k.stream + " filter=" + k.filter + " local"
	}
	return k.stream + " filter=" + k.filter + " api=" + k.api
}

// String renders the plan as stable, sorted, human-readable text (used by
// the golden tests and by `meridian policy` style tooling).
func (p *Plan) String() string {
	var b strings.Builder
	o := p.Options
	fmt.Fprintf(&b, "options duplicates=%v max_age=%v max_bytes=%d replicas=%d\n", o.DuplicateWindow, o.MaxAge, o.MaxBytes, o.Replicas)
	for _, z := range p.Policy.Zones() {
		fmt.Fprintf(&b, "zone %s: %s\n", z, strings.Join(p.Policy.ZoneMembers(z), " "))
	}
	if c := p.Claims; c != nil {
		fmt.Fprintf(&b, "claims region=%s domain=%s bucket=%s stream=%s\n", c.Region, c.Domain, c.Bucket, c.Stream)
	} else {
		b.WriteString("claims none\n")
	}
	for _, rp := range p.Regions {
		fmt.Fprintf(&b, "\nregion %s zone=%s domain=%s\n", rp.Region, rp.Zone, rp.Domain)
		writeStream(&b, "origin", rp.Origin)
		writeStream(&b, "inbox", rp.Inbox)
		b.WriteString("  permissions\n")
		writeList(&b, "publish allow", rp.Permissions.Publish.Allow)
		writeList(&b, "publish deny", rp.Permissions.Publish.Deny)
		writeList(&b, "subscribe allow", rp.Permissions.Subscribe.Allow)
		writeList(&b, "subscribe deny", rp.Permissions.Subscribe.Deny)
	}
	return b.String()
}

func writeStream(b *strings.Builder, role string, c jetstream.StreamConfig) {
	fmt.Fprintf(b, "  %s %s\n", role, c.Name)
	fmt.Fprintf(b, "    description: %s\n", c.Description)
	if len(c.Subjects) > 0 {
		fmt.Fprintf(b, "    subjects: %s\n", strings.Join(c.Subjects, " "))
	}
	fmt.Fprintf(b, "    storage=%s retention=%s discard=%s replicas=%d duplicates=%v\n",
		c.Storage, c.Retention, c.Discard, c.Replicas, c.Duplicates)
	fmt.Fprintf(b, "    max_age=%v max_bytes=%d max_msgs=%d max_msgs_per_subject=%d max_msg_size=%d max_consumers=%d\n",
		c.MaxAge, c.MaxBytes, c.MaxMsgs, c.MaxMsgsPerSubject, c.MaxMsgSize, c.MaxConsumers)
	keys := make([]string, 0, len(c.Metadata))
	for k := range c.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "    metadata %s=%s\n", k, c.Metadata[k])
	}
	srcs := make([]string, 0, len(c.Sources))
	for _, s := range c.Sources {
		srcs = append(srcs, keyOf(s).String())
	}
	sort.Strings(srcs)
	for _, s := range srcs {
		fmt.Fprintf(b, "    source %s\n", s)
	}
}

func writeList(b *strings.Builder, label string, items []string) {
	if len(items) == 0 {
		fmt.Fprintf(b, "    %s: (none)\n", label)
		return
	}
	fmt.Fprintf(b, "    %s:\n", label)
	for _, it := range items {
		fmt.Fprintf(b, "      %s\n", it)
	}
}
