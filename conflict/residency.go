package conflict

import (
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// resPlan is one message type as the residency check of a part sees it,
// compiled once so that the check of every applied part needs no option
// lookups and builds no field paths: its fields with their classes, and
// for GLOBAL message fields (containers whose own fields' classes decide)
// the plan of the message inside.
type resPlan struct {
	// The fields that a part of each class may not hold, and the
	// containers to look into: all a check has to look at.
	global, resident []resField
}

type resField struct {
	fd        protoreflect.FieldDescriptor
	residency meridianv1.Residency
	key       bool
	sub       *resPlan // set for GLOBAL, non-map message fields
}

// resPlan compiles (once per message type; recursive types share plans)
// the residency plan of md.
func (m *Merger) resPlan(md protoreflect.MessageDescriptor) *resPlan {
	if p := m.resPlans[md.FullName()]; p != nil {
		return p
	}
	p := &resPlan{}
	m.resPlans[md.FullName()] = p
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		o := m.opts[fd.FullName()]
		f := resField{fd: fd, residency: o.residency, key: o.key}
		if o.residency == meridianv1.Residency_RESIDENCY_GLOBAL && fd.Message() != nil && !fd.IsMap() {
			f.sub = m.resPlan(fd.Message())
		}
		if f.sub != nil || f.residency != meridianv1.Residency_RESIDENCY_GLOBAL {
			p.global = append(p.global, f)
		}
		if f.sub != nil || f.residency != meridianv1.Residency_RESIDENCY_RESIDENT && !f.key {
			p.resident = append(p.resident, f)
		}
	}
	return p
}

// residencyOK reports whether msg holds only fields that belong in part, by
// the rules of checkResidency, which names the offending field when this
// says no.
func residencyOK(msg protoreflect.Message, p *resPlan, part meridianv1.Part) bool {
	fields := p.global
	if part == meridianv1.Part_PART_RESIDENT {
		fields = p.resident
	}
	for i := range fields {
		f := &fields[i]
		switch {
		case f.sub == nil:
			if msg.Has(f.fd) {
				return false // a field of the other class
			}
		case f.fd.IsList():
			l := msg.Get(f.fd).List()
			for j := range l.Len() {
				if !residencyOK(l.Get(j).Message(), f.sub, part) {
					return false
				}
			}
		default:
			// One Get, not Has and Get: both reflect on the field. An
			// unset message field reads as an invalid (empty) message.
			if sub := msg.Get(f.fd).Message(); sub.IsValid() && !residencyOK(sub, f.sub, part) {
				return false
			}
		}
	}
	return true
}
