package region

import (
	"errors"
	"slices"
	"sort"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// Policy is a validated residency policy. It is immutable: every accessor
// returns copies, so it is safe for concurrent use.
type Policy struct {
	pb      *meridianv1.Policy
	regions map[string]Region
	zones   map[string][]string // zone -> sorted member regions
	claims  string
}

// Region is one region of a validated policy.
type Region struct {
	Name            string
	Zone            string
	NATSURL         string
	JetStreamDomain string
	HTTPURL         string // may be empty
}

// LoadPolicyJSON decodes a policy from its protojson form and validates it.
// Unknown JSON fields are rejected so that a misspelt field cannot silently
// drop a rule.
func LoadPolicyJSON(data []byte) (*Policy, error) {
	var pb meridianv1.Policy
	if err := (protojson.UnmarshalOptions{}).Unmarshal(data, &pb); err != nil {
		return nil, &PolicyError{Field: "policy", Rule: RuleJSON, Detail: err.Error()}
	}
	return NewPolicy(&pb)
}

// NewPolicy validates pb and returns the policy. On failure the error joins
// one *PolicyError per broken rule (errors.Is(err, ErrInvalidPolicy) holds).
// pb is copied; later changes to it do not affect the Policy.
func NewPolicy(pb *meridianv1.Policy) (*Policy, error) {
	if errs := validate(pb); len(errs) > 0 {
		joined := make([]error, len(errs))
		for i, e := range errs {
			joined[i] = e
		}
		return nil, errors.Join(joined...)
	}
	p := &Policy{
		pb:      proto.Clone(pb).(*meridianv1.Policy),
		regions: make(map[string]Region, len(pb.GetRegions())),
		zones:   make(map[string][]string, len(pb.GetZones())),
		claims:  pb.GetClaimsRegion(),
	}
	zoneOf := map[string]string{}
	for _, z := range pb.GetZones() {
		members := slices.Clone(z.GetRegions())
		sort.Strings(members)
		p.zones[z.GetName()] = members
		for _, r := range members {
			zoneOf[r] = z.GetName()
		}
	}
	for _, r := range pb.GetRegions() {
		p.regions[r.GetName()] = Region{
			Name:            r.GetName(),
			Zone:            zoneOf[r.GetName()],
			NATSURL:         r.GetNatsUrl(),
			JetStreamDomain: r.GetJetstreamDomain(),
			HTTPURL:         r.GetHttpUrl(),
		}
	}
	return p, nil
}

// Proto returns a copy of the policy as its protobuf message.
func (p *Policy) Proto() *meridianv1.Policy { return proto.Clone(p.pb).(*meridianv1.Policy) }

// MarshalJSON renders the policy in the protojson form LoadPolicyJSON reads.
func (p *Policy) MarshalJSON() ([]byte, error) {
	return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(p.pb)
}

// ZoneOf returns the residency zone of a region.
func (p *Policy) ZoneOf(region string) (zone string, ok bool) {
	r, ok := p.regions[region]
	return r.Zone, ok
}

// Regions returns the region names, sorted.
func (p *Policy) Regions() []string {
	out := make([]string, 0, len(p.regions))
	for name := range p.regions {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Zones returns the residency zone names, sorted (never GlobalZone).
func (p *Policy) Zones() []string {
	out := make([]string, 0, len(p.zones))
	for name := range p.zones {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Region returns one region.
func (p *Policy) Region(name string) (Region, bool) {
	r, ok := p.regions[name]
	return r, ok
}

// Domain returns the JetStream domain of a region.
func (p *Policy) Domain(region string) (string, bool) {
	r, ok := p.regions[region]
	return r.JetStreamDomain, ok
}

// ZoneMembers returns the regions of a zone, sorted; nil for an unknown zone.
func (p *Policy) ZoneMembers(zone string) []string {
	return slices.Clone(p.zones[zone])
}

// ClaimsRegion returns the region hosting the uniqueness claims, if any.
func (p *Policy) ClaimsRegion() (string, bool) { return p.claims, p.claims != "" }

// Allows reports whether region may store data of zone (GlobalZone is
// allowed everywhere). It is the residency rule in one line.
func (p *Policy) Allows(region, zone string) bool {
	r, ok := p.regions[region]
	return ok && (zone == GlobalZone || zone == r.Zone)
}

// Standard names of the development policy used by `meridian dev` and tests.
const (
	DevUSEast    = "us-east"
	DevEUWest    = "eu-west"
	DevEUCentral = "eu-central"
)

// DevPolicyProto returns the standard three-region policy: zone "us" =
// {us-east}, zone "eu" = {eu-west, eu-central}; each region's JetStream domain
// is its name, claims live in us-east. natsURLs overrides the NATS URL of
// regions (the embedded topology picks its ports); the others get
// nats://127.0.0.1:4222..4224. It is a fresh message the caller may edit
// (e.g. to add HTTP URLs) before NewPolicy.
func DevPolicyProto(natsURLs map[string]string) *meridianv1.Policy {
	pb := &meridianv1.Policy{
		Regions: []*meridianv1.Region{
			{Name: DevUSEast, NatsUrl: "nats://127.0.0.1:4222", JetstreamDomain: DevUSEast},
			{Name: DevEUWest, NatsUrl: "nats://127.0.0.1:4223", JetstreamDomain: DevEUWest},
			{Name: DevEUCentral, NatsUrl: "nats://127.0.0.1:4224", JetstreamDomain: DevEUCentral},
		},
		Zones: []*meridianv1.Zone{
			{Name: "us", Regions: []string{DevUSEast}},
			{Name: "eu", Regions: []string{DevEUWest, DevEUCentral}},
		},
		ClaimsRegion: DevUSEast,
	}
	for _, r := range pb.Regions {
		if u, ok := natsURLs[r.Name]; ok {
			r.NatsUrl = u
		}
	}
	return pb
}

// DevPolicy returns the standard three-region policy with the given NATS
// URLs (see DevPolicyProto). A URL for a region outside it is an error.
func DevPolicy(natsURLs map[string]string) (*Policy, error) {
	for name := range natsURLs {
		if name != DevUSEast && name != DevEUWest && name != DevEUCentral {
			return nil, &PolicyError{Field: "regions", Rule: RuleUnknownRegion, Value: name,
				Detail: "the dev policy has regions us-east, eu-west and eu-central"}
		}
	}
	return NewPolicy(DevPolicyProto(natsURLs))
}

// DefaultDevPolicy returns the standard three-region policy with the default
// loopback URLs.
func DefaultDevPolicy() *Policy {
	p, err := NewPolicy(DevPolicyProto(nil))
	if err != nil {
		panic(err) // the literal above is valid; a failure is a bug here
	}
	return p
}
