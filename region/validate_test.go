package region

import (
	"errors"
	"strings"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

func TestNewPolicyRules(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(pb *meridianv1.Policy)
		field  string
		rule   string
		detail string // substring of the message
	}{
		{"no regions", func(pb *meridianv1.Policy) { pb.Regions = nil }, "regions", RuleRequired, "at least one region"},
		{"missing region name", func(pb *meridianv1.Policy) { pb.Regions[1].Name = "" }, "regions[1].name", RuleRequired, "has a name"},
		{"upper case region", func(pb *meridianv1.Policy) { pb.Regions[0].Name = "US-East" }, "regions[0].name", RuleNameFormat, "subject tokens"},
		{"dotted region", func(pb *meridianv1.Policy) { pb.Regions[0].Name = "us.east" }, "regions[0].name", RuleNameFormat, ""},
		{"wildcard region", func(pb *meridianv1.Policy) { pb.Regions[0].Name = "us*" }, "regions[0].name", RuleNameFormat, ""},
		{"region starting with digit", func(pb *meridianv1.Policy) { pb.Regions[0].Name = "1east" }, "regions[0].name", RuleNameFormat, ""},
		{"region too long", func(pb *meridianv1.Policy) { pb.Regions[0].Name = "a" + strings.Repeat("b", 32) }, "regions[0].name", RuleNameFormat, ""},
		{"duplicate region", func(pb *meridianv1.Policy) {
			pb.Regions = append(pb.Regions, &meridianv1.Region{Name: "eu-west", NatsUrl: "nats://h:1", JetstreamDomain: "other"})
		}, "regions[3].name", RuleDuplicate, "regions[1]"},
		{"missing nats url", func(pb *meridianv1.Policy) { pb.Regions[2].NatsUrl = "" }, "regions[2].nats_url", RuleRequired, "client URL"},
		{"bad nats scheme", func(pb *meridianv1.Policy) { pb.Regions[2].NatsUrl = "http://h:4222" }, "regions[2].nats_url", RuleURL, "scheme"},
		{"nats url without host", func(pb *meridianv1.Policy) { pb.Regions[2].NatsUrl = "nats://" }, "regions[2].nats_url", RuleURL, "no host"},
		{"one bad url of a list", func(pb *meridianv1.Policy) { pb.Regions[2].NatsUrl = "nats://a:1, ftp://b:2" }, "regions[2].nats_url", RuleURL, "scheme"},
		{"missing domain", func(pb *meridianv1.Policy) { pb.Regions[0].JetstreamDomain = "" }, "regions[0].jetstream_domain", RuleRequired, "own JetStream domain"},
		{"dotted domain", func(pb *meridianv1.Policy) { pb.Regions[0].JetstreamDomain = "us.east" }, "regions[0].jetstream_domain", RuleDomainFormat, "$JS.<domain>.API"},
		{"shared domain", func(pb *meridianv1.Policy) { pb.Regions[2].JetstreamDomain = "us-east" }, "regions[2].jetstream_domain", RuleSharedDomain, "regions[0]"},
		{"bad http url", func(pb *meridianv1.Policy) { pb.Regions[1].HttpUrl = "nats://x:1" }, "regions[1].http_url", RuleURL, "http, https"},
		{"missing zone name", func(pb *meridianv1.Policy) { pb.Zones[0].Name = "" }, "zones[0].name", RuleRequired, ""},
		{"reserved zone", func(pb *meridianv1.Policy) { pb.Zones[0].Name = "global" }, "zones[0].name", RuleReserved, "GLOBAL parts"},
		{"bad zone name", func(pb *meridianv1.Policy) { pb.Zones[1].Name = "EU" }, "zones[1].name", RuleNameFormat, ""},
		{"duplicate zone", func(pb *meridianv1.Policy) { pb.Zones[1].Name = "us" }, "zones[1].name", RuleDuplicate, "zones[0]"},
		{"empty zone", func(pb *meridianv1.Policy) {
			pb.Zones = append(pb.Zones, &meridianv1.Zone{Name: "apac"})
		}, "zones[2].regions", RuleEmptyZone, "at least one region"},
		{"unknown region in zone", func(pb *meridianv1.Policy) {
			pb.Zones[1].Regions = append(pb.Zones[1].Regions, "eu-north")
		}, "zones[1].regions[2]", RuleUnknownRegion, "no region"},
		{"region in two zones", func(pb *meridianv1.Policy) {
			pb.Zones[0].Regions = append(pb.Zones[0].Regions, "eu-west")
		}, "zones[1].regions[0]", RuleTwoZones, "zones[0].regions[1]"},
		{"region twice in one zone", func(pb *meridianv1.Policy) {
			pb.Zones[1].Regions = append(pb.Zones[1].Regions, "eu-west")
		}, "zones[1].regions[2]", RuleTwoZones, ""},
		{"region in no zone", func(pb *meridianv1.Policy) { pb.Zones[1].Regions = pb.Zones[1].Regions[:1] }, "regions[2]", RuleNoZone, "in no zone"},
		{"unknown claims region", func(pb *meridianv1.Policy) { pb.ClaimsRegion = "mars" }, "claims_region", RuleUnknownRegion, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pb := DevPolicyProto(nil) // us-east, eu-west, eu-central; zones us, eu
			tc.edit(pb)
			p, err := NewPolicy(pb)
			if err == nil {
				t.Fatalf("NewPolicy accepted the policy: %v", p.Regions())
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v does not wrap ErrInvalidPolicy", err)
			}
			pe := findPolicyError(err, tc.field, tc.rule)
			if pe == nil {
				t.Fatalf("no PolicyError{Field: %q, Rule: %q} in:\n%v", tc.field, tc.rule, err)
			}
			if !strings.Contains(pe.Error(), tc.detail) || !strings.Contains(pe.Error(), tc.field) || !strings.Contains(pe.Error(), tc.rule) {
				t.Fatalf("message %q lacks %q, the field or the rule", pe.Error(), tc.detail)
			}
		})
	}
}

func findPolicyError(err error, field, rule string) *PolicyError {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for _, e := range list {
		var pe *PolicyError
		if errors.As(e, &pe) && pe.Field == field && pe.Rule == rule {
			return pe
		}
	}
	return nil
}

func TestNewPolicyReportsEveryError(t *testing.T) {
	pb := DevPolicyProto(nil)
	pb.Regions[0].NatsUrl = ""
	pb.Zones[0].Name = "global"
	pb.ClaimsRegion = "nowhere"
	_, err := NewPolicy(pb)
	for _, want := range [][2]string{
		{"regions[0].nats_url", RuleRequired},
		{"zones[0].name", RuleReserved},
		{"claims_region", RuleUnknownRegion},
	} {
		if findPolicyError(err, want[0], want[1]) == nil {
			t.Errorf("missing %v in %v", want, err)
		}
	}
	var pe *PolicyError
	if !errors.As(err, &pe) || pe.Field != "regions[0].nats_url" {
		t.Fatalf("errors.As found %+v, want the first error in declaration order", pe)
	}
}

func TestNewPolicyNil(t *testing.T) {
	if _, err := NewPolicy(nil); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("NewPolicy(nil) = %v", err)
	}
}
