package ops

import (
	"fmt"
	"maps"
	"slices"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

// Region is how the operator tools reach one region.
type Region struct {
	Name   string `json:"name"`
	Zone   string `json:"zone"`
	HTTP   string `json:"http"`             // base URL of the node's HTTP API
	NATS   string `json:"nats"`             // the region's NATS URL
	Domain string `json:"jetstream_domain"` // its JetStream domain
}

// Endpoint overrides how a region is reached (dev's endpoints.json holds
// one per region).
type Endpoint struct {
	HTTP   string
	NATS   string
	Domain string
	Zone   string
}

// Deployment is the regions of a policy and how to reach them.
type Deployment struct {
	Policy  *region.Policy
	Regions []Region // sorted by name
}

// NewDeployment takes the regions from the policy; endpoints, when given
// for a region, override its HTTP and NATS URLs.
func NewDeployment(p *region.Policy, endpoints map[string]Endpoint) (*Deployment, error) {
	if p == nil {
		return nil, invalidf("policy", "required")
	}
	d := &Deployment{Policy: p}
	for _, name := range slices.Sorted(maps.Keys(endpoints)) {
		if _, ok := p.Region(name); !ok {
			return nil, invalidf("endpoints", "region %q is not in the policy (regions: %v)", name, p.Regions())
		}
	}
	for _, name := range p.Regions() {
		r, _ := p.Region(name)
		reg := Region{Name: name, Zone: r.Zone, HTTP: r.HTTPURL, NATS: r.NATSURL, Domain: r.JetStreamDomain}
		if ep, ok := endpoints[name]; ok {
			if ep.HTTP != "" {
				reg.HTTP = ep.HTTP
			}
			if ep.NATS != "" {
				reg.NATS = ep.NATS
			}
		}
		d.Regions = append(d.Regions, reg)
	}
	return d, nil
}

// PolicyFromEndpoints builds the policy a set of endpoints describes
// (regions, their zones, URLs and domains), for deployments that publish
// endpoints rather than a policy file (`meridian dev`). Streams and
// filters compiled from it are those of the real policy; it names no
// claims region.
func PolicyFromEndpoints(endpoints map[string]Endpoint) (*region.Policy, error) {
	if len(endpoints) == 0 {
		return nil, invalidf("endpoints", "at least one region is required")
	}
	pb := &meridianv1.Policy{}
	zones := map[string][]string{}
	for _, name := range slices.Sorted(maps.Keys(endpoints)) {
		ep := endpoints[name]
		if ep.Zone == "" {
			return nil, invalidf("endpoints["+name+"].zone", "required")
		}
		domain := ep.Domain
		if domain == "" {
			domain = name
		}
		pb.Regions = append(pb.Regions, &meridianv1.Region{Name: name, NatsUrl: ep.NATS, JetstreamDomain: domain, HttpUrl: ep.HTTP})
		zones[ep.Zone] = append(zones[ep.Zone], name)
	}
	for _, z := range slices.Sorted(maps.Keys(zones)) {
		pb.Zones = append(pb.Zones, &meridianv1.Zone{Name: z, Regions: zones[z]})
	}
	p, err := region.NewPolicy(pb)
	if err != nil {
		return nil, fmt.Errorf("ops: policy from endpoints: %w", err)
	}
	return p, nil
}

// Region returns one region.
func (d *Deployment) Region(name string) (Region, bool) {
	for _, r := range d.Regions {
		if r.Name == name {
			return r, true
		}
	}
	return Region{}, false
}

// Names returns the region names, sorted.
func (d *Deployment) Names() []string {
	out := make([]string, len(d.Regions))
	for i, r := range d.Regions {
		out[i] = r.Name
	}
	return out
}
