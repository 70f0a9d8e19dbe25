package inspect

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meridian-id/meridian/conflict"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

// The residency audit checks structure, not bytes (the plaintext is not
// known to it): a region of zone Z must hold no RESIDENT part or data key of
// another zone, no GLOBAL record or state may carry a field the schema marks
// RESIDENT, and a read model outside an identity's zone must hold no
// resident state of it.

// Rules of findings.
const (
	// RuleOutsideZone: resident data (a RESIDENT part, a data key or a
	// resident state) of zone Z stored in a region outside Z.
	RuleOutsideZone = "resident_outside_zone"
	// RuleResidentOnGlobal: a RESIDENT part or key record on a global
	// subject, which every region receives.
	RuleResidentOnGlobal = "resident_on_global_subject"
	// RuleResidentField: a field marked RESIDENT set in a GLOBAL record or
	// in a GLOBAL state.
	RuleResidentField = "resident_field_in_global"
	// RuleSubjectMismatch: the subject's zone is not the record's.
	RuleSubjectMismatch = "subject_zone_mismatch"
	// RuleUndecodable: a record that does not decode (it cannot be
	// audited).
	RuleUndecodable = "undecodable"
)

// Finding is one residency violation.
type Finding struct {
	Region   string `json:"region"`
	Store    string `json:"store"` // "log", "model", "stream <name>"
	Seq      uint64 `json:"seq,omitempty"`
	Subject  string `json:"subject,omitempty"`
	Identity string `json:"identity,omitempty"`
	Zone     string `json:"zone,omitempty"` // the zone whose data it is
	Rule     string `json:"rule"`
	Detail   string `json:"detail"`
}

func (f Finding) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", f.Region, f.Store)
	if f.Seq > 0 {
		fmt.Fprintf(&b, " seq %d", f.Seq)
	}
	if f.Subject != "" {
		fmt.Fprintf(&b, " subject %s", f.Subject)
	}
	if f.Identity != "" {
		fmt.Fprintf(&b, " identity %s", f.Identity)
	}
	fmt.Fprintf(&b, ": %s: %s", f.Rule, f.Detail)
	return b.String()
}

// ResidentFields returns the paths of the fields marked RESIDENT that are
// set in m (descending through GLOBAL containers).
func ResidentFields(m proto.Message) []string {
	var out []string
	walkResident(m.ProtoReflect(), "", &out)
	return out
}

func walkResident(m protoreflect.Message, prefix string, out *[]string) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		path := string(fd.Name())
		if prefix != "" {
			path = prefix + "." + path
		}
		if residencyOf(fd) == meridianv1.Residency_RESIDENCY_RESIDENT {
			*out = append(*out, path)
			return true
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				walkResident(l.Get(i).Message(), fmt.Sprintf("%s[%d]", path, i), out)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				walkResident(mv.Message(), fmt.Sprintf("%s[%v]", path, k.Interface()), out)
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			walkResident(v.Message(), path, out)
		}
		return true
	})
}

func residencyOf(fd protoreflect.FieldDescriptor) meridianv1.Residency {
	opts := fd.Options()
	if opts == nil {
		return meridianv1.Residency_RESIDENCY_UNSPECIFIED
	}
	r, _ := proto.GetExtension(opts, meridianv1.E_Residency).(meridianv1.Residency)
	return r
}

// Auditor checks records and states of one region.
type Auditor struct {
	Region string
	Zone   string // the region's residency zone
	// ZoneOf maps a home region to its zone (region.Policy.ZoneOf).
	ZoneOf func(region string) (string, bool)
	Merger *conflict.Merger
}

// NewAuditor returns an Auditor of region r under policy p.
func NewAuditor(p *region.Policy, r string) (*Auditor, error) {
	zone, ok := p.ZoneOf(r)
	if !ok {
		return nil, fmt.Errorf("inspect: region %q is not in the policy", r)
	}
	m, err := conflict.NewMerger()
	if err != nil {
		return nil, err
	}
	return &Auditor{Region: r, Zone: zone, ZoneOf: p.ZoneOf, Merger: m}, nil
}

// Record audits one log record or stream message. subject is "" for log
// records; for stream messages it is checked against the record.
func (a *Auditor) Record(store string, seq uint64, subject string, data []byte) []Finding {
	f := Finding{Region: a.Region, Store: store, Seq: seq, Subject: subject}
	var subjZone string
	if subject != "" {
		sp, err := region.ParseSubject(subject)
		if err != nil {
			return nil // not a meridian record (a KV bucket's, say): not ours to audit
		}
		subjZone = sp.Zone
		if sp.Zone != region.GlobalZone && sp.Zone != a.Zone {
			// Judged by the subject alone: the filters that keep zones
			// apart work on subjects.
			f.Zone, f.Rule = sp.Zone, RuleOutsideZone
			f.Identity = sp.IdentityID
			f.Detail = fmt.Sprintf("a %s record of zone %q in region %s of zone %q", sp.Type, sp.Zone, a.Region, a.Zone)
			return []Finding{f}
		}
	}
	ev := &meridianv1.Event{}
	if err := proto.Unmarshal(data, ev); err != nil {
		f.Rule, f.Detail = RuleUndecodable, err.Error()
		return []Finding{f}
	}
	f.Identity = ev.GetIdentityId()
	var out []Finding
	add := func(rule, zone, format string, args ...any) {
		g := f
		g.Rule, g.Zone, g.Detail = rule, zone, fmt.Sprintf(format, args...)
		out = append(out, g)
	}
	switch ev.GetPart() {
	case meridianv1.Part_PART_RESIDENT, meridianv1.Part_PART_KEY:
		if ev.GetZone() != a.Zone {
			add(RuleOutsideZone, ev.GetZone(), "a %v record of zone %q in region %s of zone %q", ev.GetPart(), ev.GetZone(), a.Region, a.Zone)
		}
		switch subjZone {
		case "":
		case region.GlobalZone:
			add(RuleResidentOnGlobal, ev.GetZone(), "a %v record on a %s subject", ev.GetPart(), region.GlobalZone)
		default:
			if subjZone != ev.GetZone() {
				add(RuleSubjectMismatch, ev.GetZone(), "a record of zone %q on a subject of zone %q", ev.GetZone(), subjZone)
			}
		}
	default:
		if fields := ResidentFields(ev); len(fields) > 0 {
			slices.Sort(fields)
			add(RuleResidentField, ev.GetZone(), "GLOBAL record carries RESIDENT fields %s", strings.Join(fields, ", "))
		}
		if subjZone != "" && subjZone != region.GlobalZone {
			add(RuleSubjectMismatch, ev.GetZone(), "a %v record on a subject of zone %q", ev.GetPart(), subjZone)
		}
	}
	return out
}

// State audits one identity of a read model.
func (a *Auditor) State(id string, global, resident *meridianv1.IdentityState, residentErr error) []Finding {
	f := Finding{Region: a.Region, Store: "model", Identity: id}
	var out []Finding
	var home string
	if global != nil {
		view := a.Merger.View(global)
		home = view.GetHomeRegion()
		if fields := ResidentFields(view); len(fields) > 0 {
			slices.Sort(fields)
			g := f
			g.Rule, g.Detail = RuleResidentField, "the GLOBAL state holds RESIDENT fields "+strings.Join(fields, ", ")
			out = append(out, g)
		}
	}
	if resident == nil && residentErr == nil {
		return out
	}
	if home == "" {
		// A resident part can arrive before the GLOBAL part that names the
		// home region (they travel through different sources); the state
		// is judged once it is attributable.
		return out
	}
	zone, ok := a.ZoneOf(home)
	if !ok || zone != a.Zone {
		g := f
		g.Zone, g.Rule = zone, RuleOutsideZone
		g.Detail = fmt.Sprintf("resident state of an identity of home region %s (zone %q) in region %s of zone %q", home, zone, a.Region, a.Zone)
		out = append(out, g)
	}
	return out
}
