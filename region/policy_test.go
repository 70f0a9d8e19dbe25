package region

import (
	"errors"
	"slices"
	"testing"
)

const fourRegionJSON = `{
  "regions": [
    {"name": "us-east", "natsUrl": "nats://10.0.0.1:4222", "jetstreamDomain": "use"},
    {"name": "eu-west", "nats_url": "tls://10.1.0.1:4222,tls://10.1.0.2:4222", "jetstream_domain": "euw", "http_url": "https://euw.example"},
    {"name": "eu-central", "natsUrl": "nats://10.2.0.1:4222", "jetstreamDomain": "euc"},
    {"name": "ap-south", "natsUrl": "nats://10.3.0.1:4222", "jetstreamDomain": "aps"}
  ],
  "zones": [
    {"name": "us", "regions": ["us-east"]},
    {"name": "eu", "regions": ["eu-west", "eu-central"]},
    {"name": "in", "regions": ["ap-south"]}
  ],
  "claimsRegion": "eu-west"
}`

func TestLoadPolicyJSONAccessors(t *testing.T) {
	p, err := LoadPolicyJSON([]byte(fourRegionJSON))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Regions(), []string{"ap-south", "eu-central", "eu-west", "us-east"}; !slices.Equal(got, want) {
		t.Errorf("Regions() = %v, want %v", got, want)
	}
	if got, want := p.Zones(), []string{"eu", "in", "us"}; !slices.Equal(got, want) {
		t.Errorf("Zones() = %v, want %v", got, want)
	}
	if got, want := p.ZoneMembers("eu"), []string{"eu-central", "eu-west"}; !slices.Equal(got, want) {
		t.Errorf("ZoneMembers(eu) = %v, want %v", got, want)
	}
	if got := p.ZoneMembers("mars"); got != nil {
		t.Errorf("ZoneMembers(mars) = %v", got)
	}
	for region, zone := range map[string]string{"us-east": "us", "eu-west": "eu", "eu-central": "eu", "ap-south": "in"} {
		if z, ok := p.ZoneOf(region); !ok || z != zone {
			t.Errorf("ZoneOf(%s) = %q, %v; want %q", region, z, ok, zone)
		}
	}
	if _, ok := p.ZoneOf("mars"); ok {
		t.Error("ZoneOf(mars) ok")
	}
	if d, ok := p.Domain("eu-central"); !ok || d != "euc" {
		t.Errorf("Domain(eu-central) = %q, %v", d, ok)
	}
	r, ok := p.Region("eu-west")
	want := Region{Name: "eu-west", Zone: "eu", NATSURL: "tls://10.1.0.1:4222,tls://10.1.0.2:4222", JetStreamDomain: "euw", HTTPURL: "https://euw.example"}
	if !ok || r != want {
		t.Errorf("Region(eu-west) = %+v, want %+v", r, want)
	}
	if c, ok := p.ClaimsRegion(); !ok || c != "eu-west" {
		t.Errorf("ClaimsRegion() = %q, %v", c, ok)
	}
	if !p.Allows("us-east", GlobalZone) || !p.Allows("eu-west", "eu") || p.Allows("us-east", "eu") || p.Allows("mars", GlobalZone) {
		t.Error("Allows disagrees with the zones")
	}

	// The policy is a copy: editing the source or the Proto() result does not leak in.
	pb := p.Proto()
	pb.Zones[0].Name = "changed"
	if p.Proto().Zones[0].Name != "us" {
		t.Error("Proto() aliases the policy")
	}

	// Round trip through MarshalJSON.
	out, err := p.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	p2, err := LoadPolicyJSON(out)
	if err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	if !slices.Equal(p2.Regions(), p.Regions()) || !slices.Equal(p2.Zones(), p.Zones()) {
		t.Error("round trip changed the policy")
	}
}

func TestLoadPolicyJSONRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":      `{`,
		"unknown field": `{"regions": [], "colour": "blue"}`,
		"wrong type":    `{"regions": "us-east"}`,
		"invalid":       `{"regions": [{"name": "us-east"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := LoadPolicyJSON([]byte(in)); !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("LoadPolicyJSON(%s) = %v, want ErrInvalidPolicy", in, err)
			}
		})
	}
}

func TestDevPolicy(t *testing.T) {
	p := DefaultDevPolicy()
	if got, want := p.Regions(), []string{"eu-central", "eu-west", "us-east"}; !slices.Equal(got, want) {
		t.Fatalf("Regions() = %v", got)
	}
	for _, r := range p.Regions() {
		if d, _ := p.Domain(r); d != r {
			t.Errorf("Domain(%s) = %s, want the region name", r, d)
		}
	}
	p, err := DevPolicy(map[string]string{"eu-west": "nats://127.0.0.1:40001"})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := p.Region("eu-west"); r.NATSURL != "nats://127.0.0.1:40001" {
		t.Errorf("eu-west URL = %s", r.NATSURL)
	}
	if _, err := DevPolicy(map[string]string{"mars": "nats://h:1"}); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("DevPolicy(mars) = %v", err)
	}
	if _, err := DevPolicy(map[string]string{"us-east": "bogus"}); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("DevPolicy(bad url) = %v", err)
	}
}
