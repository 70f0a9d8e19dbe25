package region

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// ErrInvalidPolicy is wrapped by every *PolicyError.
var ErrInvalidPolicy = errors.New("region: invalid policy")

// Rules a policy can break; PolicyError.Rule holds one of them.
const (
	RuleJSON          = "json"           // not the protojson form of a Policy
	RuleRequired      = "required"       // a field that must be set is empty
	RuleNameFormat    = "name-format"    // not ^[a-z][a-z0-9-]{0,31}$
	RuleDomainFormat  = "domain-format"  // not ^[A-Za-z0-9_-]{1,64}$
	RuleURL           = "url"            // not a usable URL of the expected schemes
	RuleDuplicate     = "duplicate"      // a region or zone is declared twice
	RuleSharedDomain  = "shared-domain"  // two regions in one JetStream domain
	RuleReserved      = "reserved"       // a zone named "global"
	RuleUnknownRegion = "unknown-region" // a reference to an undeclared region
	RuleEmptyZone     = "empty-zone"     // a zone without regions
	RuleNoZone        = "no-zone"        // a region that belongs to no zone
	RuleTwoZones      = "two-zones"      // a region listed in more than one zone
)

// PolicyError is one broken rule of a policy. NewPolicy returns all of them,
// joined with errors.Join, in declaration order; errors.As finds the first.
type PolicyError struct {
	// Field is the path of the offending field, e.g. "zones[1].regions[0]".
	Field string
	// Rule is one of the Rule* constants.
	Rule string
	// Value is the offending value (may be empty).
	Value string
	// Detail explains the rule in words.
	Detail string
}

func (e *PolicyError) Error() string {
	v := ""
	if e.Value != "" {
		v = fmt.Sprintf(" %q", e.Value)
	}
	return fmt.Sprintf("region: invalid policy: %s%s: %s: %s", e.Field, v, e.Rule, e.Detail)
}

// Unwrap lets callers test errors.Is(err, ErrInvalidPolicy).
func (e *PolicyError) Unwrap() error { return ErrInvalidPolicy }

// A name becomes a subject token (meridian.<region>.<zone>...) and part of a
// stream name (origin-<region>), so it must be free of '.', '*', '>', spaces
// and path separators; lower case keeps names unambiguous on every platform.
var (
	nameRE   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	domainRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// validate checks the raw policy and returns every broken rule.
func validate(pb *meridianv1.Policy) []*PolicyError {
	var errs []*PolicyError
	add := func(field, rule, value, format string, args ...any) {
		errs = append(errs, &PolicyError{Field: field, Rule: rule, Value: value, Detail: fmt.Sprintf(format, args...)})
	}
	if pb == nil || len(pb.GetRegions()) == 0 {
		add("regions", RuleRequired, "", "a policy declares at least one region")
		return errs
	}

	regionAt := map[string]int{} // region name -> index of first declaration
	domainAt := map[string]int{}
	for i, r := range pb.GetRegions() {
		f := fmt.Sprintf("regions[%d]", i)
		switch {
		case r.GetName() == "":
			add(f+".name", RuleRequired, "", "every region has a name")
		case !nameRE.MatchString(r.GetName()):
			add(f+".name", RuleNameFormat, r.GetName(), "region names must match %s (they become subject tokens and stream names)", nameRE)
		default:
			if j, dup := regionAt[r.GetName()]; dup {
				add(f+".name", RuleDuplicate, r.GetName(), "region already declared at regions[%d]", j)
			} else {
				regionAt[r.GetName()] = i
			}
		}
		if err := checkNATSURL(r.GetNatsUrl()); err != "" {
			rule := RuleURL
			if r.GetNatsUrl() == "" {
				rule = RuleRequired
			}
			add(f+".nats_url", rule, r.GetNatsUrl(), "%s", err)
		}
		switch d := r.GetJetstreamDomain(); {
		case d == "":
			add(f+".jetstream_domain", RuleRequired, "", "every region is its own JetStream domain")
		case !domainRE.MatchString(d):
			add(f+".jetstream_domain", RuleDomainFormat, d, "JetStream domains must match %s (they become the $JS.<domain>.API prefix)", domainRE)
		default:
			if j, dup := domainAt[d]; dup {
				add(f+".jetstream_domain", RuleSharedDomain, d, "domain already used by regions[%d]; each region is its own domain so that it stays autonomous and its credentials reach only its own streams", j)
			} else {
				domainAt[d] = i
			}
		}
		if u := r.GetHttpUrl(); u != "" {
			if err := checkURL(u, "http", "https"); err != "" {
				add(f+".http_url", RuleURL, u, "%s", err)
			}
		}
	}

	zoneAt := map[string]int{}
	memberOf := map[string]string{} // region -> field path of its first zone membership
	for i, z := range pb.GetZones() {
		f := fmt.Sprintf("zones[%d]", i)
		switch {
		case z.GetName() == "":
			add(f+".name", RuleRequired, "", "every zone has a name")
		case z.GetName() == GlobalZone:
			add(f+".name", RuleReserved, z.GetName(), "%q names the subjects of GLOBAL parts that replicate everywhere; it cannot be a residency zone", GlobalZone)
		case !nameRE.MatchString(z.GetName()):
			add(f+".name", RuleNameFormat, z.GetName(), "zone names must match %s (they become subject tokens)", nameRE)
		default:
			if j, dup := zoneAt[z.GetName()]; dup {
				add(f+".name", RuleDuplicate, z.GetName(), "zone already declared at zones[%d]", j)
			} else {
				zoneAt[z.GetName()] = i
			}
		}
		if len(z.GetRegions()) == 0 {
			add(f+".regions", RuleEmptyZone, z.GetName(), "a zone has at least one region")
		}
		for k, rn := range z.GetRegions() {
			rf := fmt.Sprintf("%s.regions[%d]", f, k)
			if _, ok := regionAt[rn]; !ok {
				add(rf, RuleUnknownRegion, rn, "no region of that name is declared in regions")
				continue
			}
			if prev, dup := memberOf[rn]; dup {
				add(rf, RuleTwoZones, rn, "region is already a member at %s; a region belongs to exactly one zone", prev)
				continue
			}
			memberOf[rn] = rf
		}
	}
	for i, r := range pb.GetRegions() {
		if _, ok := regionAt[r.GetName()]; !ok || regionAt[r.GetName()] != i {
			continue // already reported as bad or duplicate
		}
		if _, ok := memberOf[r.GetName()]; !ok {
			add(fmt.Sprintf("regions[%d]", i), RuleNoZone, r.GetName(), "region is in no zone; every region belongs to exactly one zone")
		}
	}
	if c := pb.GetClaimsRegion(); c != "" {
		if _, ok := regionAt[c]; !ok {
			add("claims_region", RuleUnknownRegion, c, "no region of that name is declared in regions")
		}
	}
	return errs
}

// checkNATSURL returns why s is not a usable NATS client URL list, or "".
func checkNATSURL(s string) string {
	if s == "" {
		return "every region names the client URL of its NATS servers"
	}
	for _, part := range strings.Split(s, ",") {
		if err := checkURL(strings.TrimSpace(part), "nats", "tls", "ws", "wss"); err != "" {
			return err
		}
	}
	return ""
}

// checkURL returns why s is not an absolute URL with a host and one of the
// schemes, or "".
func checkURL(s string, schemes ...string) string {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("not a URL: %v", err)
	}
	ok := false
	for _, sc := range schemes {
		ok = ok || u.Scheme == sc
	}
	if !ok {
		return fmt.Sprintf("scheme must be one of %s", strings.Join(schemes, ", "))
	}
	if u.Host == "" {
		return "URL has no host"
	}
	return ""
}
