package conflict

import (
	"fmt"
	"slices"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Apply applies one part of an event to s and returns the new state. s is
// not modified (nil is the empty state); the result may share unchanged
// sub-messages with it, so treat states as immutable values. The envelope
// must be stamped (event_id, origin_node, hlc, identity_id; sequence for
// counting events) and the body must hold one identity event. A GLOBAL part may hold no
// RESIDENT field and a RESIDENT part no GLOBAL field but (key) fields;
// PART_UNSPECIFIED applies a whole event. Bad input returns an *EventError
// naming the field and the rule; heartbeats and data keys return
// ErrNotIdentityEvent.
//
// Apply is idempotent and order-insensitive: applying any permutation of a
// set of parts, with repeats, gives the same state, and the state of an erased
// identity never changes again (a second erasure can only lower the kept
// erase stamp).
func (m *Merger) Apply(s *meridianv1.IdentityState, ev *meridianv1.Event) (*meridianv1.IdentityState, error) {
	if ev == nil {
		return nil, eventErr("event", "required")
	}
	return m.apply(s, ev.ProtoReflect())
}

func (m *Merger) apply(s *meridianv1.IdentityState, ev protoreflect.Message) (*meridianv1.IdentityState, error) {
	which := ev.WhichOneof(m.env.body)
	if which == nil {
		if len(ev.GetUnknown()) > 0 {
			return nil, eventErr("body", "unknown event type (a field this schema does not know; is the writer newer?)")
		}
		return nil, eventErr("body", "required: exactly one event type must be set")
	}
	plan := m.bodies[which.Number()]
	if len(plan.fields) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotIdentityEvent, which.Name())
	}
	str := func(fd protoreflect.FieldDescriptor) string { return ev.Get(fd).String() }
	id, eventID, node := str(m.env.identityID), str(m.env.eventID), str(m.env.node)
	hlc, seq := ev.Get(m.env.hlc).Uint(), ev.Get(m.env.sequence).Uint()
	part := meridianv1.Part(ev.Get(m.env.part).Enum())
	switch {
	case id == "":
		return nil, eventErr("identity_id", "required")
	case eventID == "":
		return nil, eventErr("event_id", "required (it orders concurrent writes and identifies the event)")
	case node == "":
		return nil, eventErr("origin_node", "required (it orders concurrent writes)")
	case hlc == 0:
		return nil, eventErr("hlc", "required: the writer stamps every event with its hybrid logical clock")
	case part != meridianv1.Part_PART_UNSPECIFIED && part != meridianv1.Part_PART_GLOBAL && part != meridianv1.Part_PART_RESIDENT:
		return nil, eventErr("part", "%v is not a part of an identity event", part)
	case s != nil && s.GetIdentityId() != "" && s.GetIdentityId() != id:
		return nil, eventErr("identity_id", "event for %s applied to the state of %s", id, s.GetIdentityId())
	}
	body := ev.Get(which).Message()
	if part != meridianv1.Part_PART_UNSPECIFIED {
		if err := m.checkResidency(body, part, string(which.Name())); err != nil {
			return nil, err
		}
	}

	a := &applier{m: m, out: shallowState(s), stamp: Stamp{HLC: Timestamp(hlc), Node: node, EventID: eventID}, seq: seq}
	a.out.IdentityId = id
	erase := false
	for _, f := range plan.fields {
		path := string(which.Name()) + "." + string(f.fd.Name())
		fires := part == meridianv1.Part_PART_UNSPECIFIED ||
			(part == meridianv1.Part_PART_GLOBAL) == (f.residency == meridianv1.Residency_RESIDENCY_GLOBAL)
		var err error
		switch f.op {
		case meridianv1.Op_OP_SET:
			if body.Has(f.fd) {
				err = a.set(f.target.reg, string(f.target.fd.Name()), []protoreflect.FieldDescriptor{f.target.fd}, body.Get(f.fd))
			}
		case meridianv1.Op_OP_ADD, meridianv1.Op_OP_REMOVE:
			err = a.setOp(f, body, path)
		case meridianv1.Op_OP_INCREMENT:
			if fires {
				err = a.increment(f.target, path)
			}
		case meridianv1.Op_OP_ERASE:
			erase = erase || fires
		}
		if err != nil {
			return nil, err
		}
	}

	// Erasure wins over everything: the state is the tombstone alone, and an
	// erased state ignores whatever comes later (it was validated above, so
	// bad input still gets its error).
	switch prev := stampFromPB(s.GetErased()); {
	case s.GetErased() != nil && erase && a.stamp.Compare(prev) < 0:
		return tombstoneState(id, a.stamp), nil
	case s.GetErased() != nil:
		return tombstoneState(id, prev), nil
	case erase:
		return tombstoneState(id, a.stamp), nil
	}
	a.out.UpdatedHlc = max(a.out.UpdatedHlc, hlc)
	return a.out, nil
}

// checkResidency refuses a part that holds fields of the other class: the
// projector stores GLOBAL parts unsealed, so a RESIDENT field in one would
// leak personal data out of its zone. Message fields marked GLOBAL are
// containers whose own fields' classes decide; (key) fields travel in both.
func (m *Merger) checkResidency(msg protoreflect.Message, part meridianv1.Part, path string) error {
	fields := msg.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !msg.Has(fd) {
			continue
		}
		o := m.opts[fd.FullName()]
		p := path + "." + string(fd.Name())
		if o.residency == meridianv1.Residency_RESIDENCY_GLOBAL && fd.Message() != nil && !fd.IsMap() {
			if fd.IsList() {
				l := msg.Get(fd).List()
				for j := range l.Len() {
					if err := m.checkResidency(l.Get(j).Message(), part, fmt.Sprintf("%s[%d]", p, j)); err != nil {
						return err
					}
				}
				continue
			}
			if err := m.checkResidency(msg.Get(fd).Message(), part, p); err != nil {
				return err
			}
			continue
		}
		switch {
		case part == meridianv1.Part_PART_GLOBAL && o.residency != meridianv1.Residency_RESIDENCY_GLOBAL:
			return eventErr(p, "%v field in a GLOBAL part: personal data travels sealed in the RESIDENT part", o.residency)
		case part == meridianv1.Part_PART_RESIDENT && o.residency != meridianv1.Residency_RESIDENCY_RESIDENT && !o.key:
			return eventErr(p, "%v field in a RESIDENT part: only RESIDENT and (key) fields belong there", o.residency)
		}
	}
	return nil
}

// applier applies one event part to a private copy of the state.
type applier struct {
	m     *Merger
	out   *meridianv1.IdentityState
	stamp Stamp
	seq   uint64
}

// set writes v into the registers of r at path: one register for a scalar
// or atomic message, one per key for a map, and field by field (present
// fields only) for a container.
func (a *applier) set(r *regField, path string, chain []protoreflect.FieldDescriptor, v protoreflect.Value) error {
	switch {
	case r.container != nil:
		msg := v.Message()
		for _, c := range r.container {
			if !msg.Has(c.fd) {
				continue
			}
			sub := append(slices.Clip(chain), c.fd)
			if err := a.set(c, path+"."+string(c.fd.Name()), sub, msg.Get(c.fd)); err != nil {
				return err
			}
		}
		return nil
	case r.fd.IsMap():
		var err error
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			var enc []byte
			if enc, err = a.m.encodeRegister(chain, k, mv); err == nil {
				a.putRegister(&a.out.Registers, path+"."+k.String(), enc, registerLess)
			}
			return err == nil
		})
		return err
	}
	enc, err := a.m.encodeRegister(chain, protoreflect.MapKey{}, v)
	if err != nil {
		return err
	}
	if r.rule == meridianv1.MergeRule_MERGE_RULE_MAX {
		a.putRegister(&a.out.MaxRegisters, path, enc, func(x, y *meridianv1.Register) bool { return a.m.maxLess(path, x, y) })
		return nil
	}
	a.putRegister(&a.out.Registers, path, enc, registerLess)
	return nil
}

// putRegister stores the write at path in *regs if it beats what is there.
func (a *applier) putRegister(regs *[]*meridianv1.Register, path string, enc []byte, less func(x, y *meridianv1.Register) bool) {
	reg := &meridianv1.Register{Path: path, Stamp: stampToPB(a.stamp), Value: enc}
	if i, ok := findByKey(*regs, path, (*meridianv1.Register).GetPath); ok && !less((*regs)[i], reg) {
		return
	}
	*regs = putSorted(*regs, reg, (*meridianv1.Register).GetPath)
}

// setOp applies OP_ADD and OP_REMOVE to a set target.
func (a *applier) setOp(f bodyField, body protoreflect.Message, path string) error {
	if !body.Has(f.fd) {
		return nil
	}
	var vals []protoreflect.Value
	if f.fd.IsList() {
		l := body.Get(f.fd).List()
		for i := range l.Len() {
			vals = append(vals, l.Get(i))
		}
	} else {
		vals = append(vals, body.Get(f.fd))
	}
	t := f.target
	for i, v := range vals {
		p := path
		if f.fd.IsList() {
			p = fmt.Sprintf("%s[%d]", path, i)
		}
		var key, payload []byte
		switch {
		case f.op == meridianv1.Op_OP_ADD && t.keyField != nil:
			elem := v.Message()
			if !elem.Has(t.keyField) {
				return eventErr(p+"."+string(t.keyField.Name()), "required: the (key) field identifies the element of %q", t.fd.Name())
			}
			key = encodeKey(t.keyField.Kind(), elem.Get(t.keyField))
			var err error
			if payload, err = marshalOpts.Marshal(elem.Interface()); err != nil {
				return eventErr(p, "cannot encode the element: %v", err)
			}
		default:
			if isZeroScalar(v) {
				return eventErr(p, "an element of %q cannot be the empty value", t.fd.Name())
			}
			key = encodeKey(f.fd.Kind(), v)
		}
		a.updateElement(t, key, func(e AWElement[[]byte]) AWElement[[]byte] {
			if f.op == meridianv1.Op_OP_REMOVE {
				return e.Remove(a.stamp)
			}
			return e.Add(a.stamp, payload, a.m.joinFor(t))
		})
	}
	return nil
}

func (a *applier) updateElement(t *target, key []byte, f func(AWElement[[]byte]) AWElement[[]byte]) {
	name := string(t.fd.Name())
	var elems []*meridianv1.SetElement
	if i, ok := findByKey(a.out.Sets, name, (*meridianv1.SetState).GetName); ok {
		elems = a.out.Sets[i].GetElements()
	}
	i, found := findElement(elems, key)
	var e AWElement[[]byte]
	if found {
		e = elementFromPB(elems[i])
	}
	// Copy on write: a new list, elements replaced, never changed.
	pb := elementToPB(key, f(e))
	out := make([]*meridianv1.SetElement, 0, len(elems)+1)
	out = append(append(out, elems[:i]...), pb)
	if found {
		i++
	}
	out = append(out, elems[i:]...)
	a.out.Sets = putSorted(a.out.Sets, &meridianv1.SetState{Name: name, Elements: out}, (*meridianv1.SetState).GetName)
}

// increment counts this event once in its origin's share. The share is the
// set of the origin's log sequences, so redelivery never counts twice.
func (a *applier) increment(t *target, path string) error {
	if a.seq == 0 {
		return eventErr("sequence", "required for %s (OP_INCREMENT counts each event once by its origin's log sequence)", path)
	}
	name := string(t.fd.Name())
	var shares []*meridianv1.CounterShare
	if i, ok := findByKey(a.out.Counters, name, (*meridianv1.CounterState).GetName); ok {
		shares = a.out.Counters[i].GetShares()
	}
	var seqs []uint64
	if i, ok := findByKey(shares, a.stamp.Node, (*meridianv1.CounterShare).GetNode); ok {
		seqs = shares[i].GetSequences()
	}
	j, counted := slices.BinarySearch(seqs, a.seq)
	if counted {
		return nil
	}
	sh := &meridianv1.CounterShare{Node: a.stamp.Node, Sequences: slices.Insert(slices.Clip(seqs), j, a.seq)}
	shares = putSorted(shares, sh, (*meridianv1.CounterShare).GetNode)
	a.out.Counters = putSorted(a.out.Counters, &meridianv1.CounterState{Name: name, Shares: shares}, (*meridianv1.CounterState).GetName)
	return nil
}

func isZeroScalar(v protoreflect.Value) bool {
	switch x := v.Interface().(type) {
	case string:
		return x == ""
	case []byte:
		return len(x) == 0
	case bool:
		return !x
	case protoreflect.EnumNumber:
		return x == 0
	case int32:
		return x == 0
	case int64:
		return x == 0
	case uint32:
		return x == 0
	case uint64:
		return x == 0
	case float32:
		return x == 0
	case float64:
		return x == 0
	}
	return false
}
