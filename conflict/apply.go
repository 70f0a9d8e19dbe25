package conflict

import (
	"bytes"
	"fmt"
	"slices"
	"sync"

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
	out, _, err := m.applyMsg(s, ev.ProtoReflect(), ev, false)
	return out, err
}

// ApplyInPlace is Apply for a state its caller owns outright, such as one
// it decoded or cloned and shares with nobody: it changes s itself where
// Apply would copy what it changes, which saves the copies and their
// garbage over a run of events on one state. It modifies s's lists and the
// lists of the set and counter states in them, and replaces (never
// modifies) registers, set elements and stamps, which states may share.
// It returns the new state: s itself, a new state when s is nil, or a
// tombstone when s is or becomes erased (s is then left as it was). On
// error s is unchanged. The result equals Apply's, and Effect says what
// changed.
func (m *Merger) ApplyInPlace(s *meridianv1.IdentityState, ev *meridianv1.Event) (*meridianv1.IdentityState, Effect, error) {
	if ev == nil {
		return nil, Effect{}, eventErr("event", "required")
	}
	return m.applyMsg(s, ev.ProtoReflect(), ev, true)
}

// Effect is what ApplyInPlace did to the state.
type Effect struct {
	// Changed is false when the event left the state as it was (a
	// redelivery, a write older than what the state holds, any event on
	// an erased identity but an earlier erasure).
	Changed bool
	// Removed reports that a set element's cuts moved (its remove stamp
	// or a per-node cut): payloads that other states hold for the element
	// (the RESIDENT state's) may be dead now, see Prune.
	Removed bool
	// Erased reports that the identity became erased by this event.
	Erased bool
}

func (m *Merger) apply(s *meridianv1.IdentityState, ev protoreflect.Message) (*meridianv1.IdentityState, error) {
	out, _, err := m.applyMsg(s, ev, nil, false)
	return out, err
}

// applyMsg applies ev; typed is ev when it is a *meridianv1.Event, whose
// envelope is then read without reflection.
func (m *Merger) applyMsg(s *meridianv1.IdentityState, ev protoreflect.Message, typed *meridianv1.Event, inPlace bool) (*meridianv1.IdentityState, Effect, error) {
	which := ev.WhichOneof(m.env.body)
	if which == nil {
		if len(ev.GetUnknown()) > 0 {
			return nil, Effect{}, eventErr("body", "unknown event type (a field this schema does not know; is the writer newer?)")
		}
		return nil, Effect{}, eventErr("body", "required: exactly one event type must be set")
	}
	plan := m.body(which.Number())
	if len(plan.fields) == 0 {
		return nil, Effect{}, fmt.Errorf("%w: %s", ErrNotIdentityEvent, which.Name())
	}
	var id, eventID, node string
	var hlc, seq uint64
	var part meridianv1.Part
	var observed map[string]uint64 // the causal context, if hasCtx
	var hasCtx bool
	if typed != nil && m.typed {
		id, eventID, node = typed.GetIdentityId(), typed.GetEventId(), typed.GetOriginNode()
		hlc, seq, part = typed.GetHlc(), typed.GetSequence(), typed.GetPart()
		if ctx := typed.GetObserved(); ctx != nil {
			observed, hasCtx = ctx.GetHlc(), true
		}
	} else {
		str := func(fd protoreflect.FieldDescriptor) string { return ev.Get(fd).String() }
		id, eventID, node = str(m.env.identityID), str(m.env.eventID), str(m.env.node)
		hlc, seq = ev.Get(m.env.hlc).Uint(), ev.Get(m.env.sequence).Uint()
		part = meridianv1.Part(ev.Get(m.env.part).Enum())
		observed, hasCtx = m.observedOf(ev)
	}
	switch {
	case id == "":
		return nil, Effect{}, eventErr("identity_id", "required")
	case eventID == "":
		return nil, Effect{}, eventErr("event_id", "required (it orders concurrent writes and identifies the event)")
	case node == "":
		return nil, Effect{}, eventErr("origin_node", "required (it orders concurrent writes)")
	case hlc == 0:
		return nil, Effect{}, eventErr("hlc", "required: the writer stamps every event with its hybrid logical clock")
	case part != meridianv1.Part_PART_UNSPECIFIED && part != meridianv1.Part_PART_GLOBAL && part != meridianv1.Part_PART_RESIDENT:
		return nil, Effect{}, eventErr("part", "%v is not a part of an identity event", part)
	case s != nil && s.GetIdentityId() != "" && s.GetIdentityId() != id:
		return nil, Effect{}, eventErr("identity_id", "event for %s applied to the state of %s", id, s.GetIdentityId())
	}
	if hasCtx {
		if err := checkObserved(observed); err != nil {
			return nil, Effect{}, err
		}
	}
	body := ev.Get(which).Message()
	if part != meridianv1.Part_PART_UNSPECIFIED && !residencyOK(body, plan.res, part) {
		if err := m.checkResidency(body, part, string(which.Name())); err != nil {
			return nil, Effect{}, err
		}
	}

	// First every write the event makes, validated and encoded, so that an
	// error leaves the state untouched even in place; then the writes.
	a := applier{m: m, stamp: Stamp{HLC: Timestamp(hlc), Node: node, EventID: eventID}, seq: seq, inPlace: inPlace}
	sc := scratchPool.Get().(*scratch)
	defer sc.put()
	a.regs, a.elems, a.incs = sc.regs[:0], sc.elems[:0], sc.incs[:0]
	defer func() { sc.regs, sc.elems, sc.incs = a.regs, a.elems, a.incs }()
	for i := range plan.fields {
		f := &plan.fields[i]
		fires := part == meridianv1.Part_PART_UNSPECIFIED ||
			(part == meridianv1.Part_PART_GLOBAL) == (f.residency == meridianv1.Residency_RESIDENCY_GLOBAL)
		var err error
		switch f.op {
		case meridianv1.Op_OP_SET:
			if v, ok := get(body, f.fd); ok {
				err = a.set(f.target.reg, v)
			}
		case meridianv1.Op_OP_ADD, meridianv1.Op_OP_REMOVE:
			err = a.setOp(f, body)
		case meridianv1.Op_OP_INCREMENT:
			if fires {
				if seq == 0 {
					err = eventErr("sequence", "required for %s (OP_INCREMENT counts each event once by its origin's log sequence)", f.path)
				}
				a.incs = append(a.incs, f.target)
			}
		case meridianv1.Op_OP_ERASE:
			a.erase = a.erase || fires
		}
		if err != nil {
			return nil, Effect{}, err
		}
	}
	if hasCtx {
		for _, w := range a.elems {
			if w.remove {
				a.cuts = ObservedCuts(a.stamp, observed)
				break
			}
		}
	}

	// Erasure wins over everything: the state is the tombstone alone, and an
	// erased state ignores whatever comes later (it was validated above, so
	// bad input still gets its error).
	if prev := s.GetErased(); prev != nil {
		if ps := stampFromPB(prev); !a.erase || a.stamp.Compare(ps) >= 0 {
			return tombstoneState(id, ps), Effect{}, nil
		}
		return tombstoneState(id, a.stamp), Effect{Changed: true}, nil
	}
	if a.erase {
		return tombstoneState(id, a.stamp), Effect{Changed: true, Erased: true}, nil
	}
	switch {
	case !inPlace:
		a.out = shallowState(s)
	case s == nil:
		a.out = &meridianv1.IdentityState{}
	default:
		a.out = s
	}
	if a.out.IdentityId == "" { // otherwise it is id (checked above)
		a.out.IdentityId, a.eff.Changed = id, true
	}
	a.write()
	if hlc > a.out.UpdatedHlc {
		a.out.UpdatedHlc, a.eff.Changed = hlc, true
	}
	return a.out, a.eff, nil
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

// applier applies one event part: set, setOp and the increments collect
// the writes, write makes them.
type applier struct {
	m     *Merger
	stamp Stamp
	pb    *meridianv1.Stamp // stamp as stored, shared by every write of the event
	seq   uint64
	erase bool
	// cuts are the per-node cuts of the event's removes when it carries a
	// causal context (Event.observed); nil: its removes cut by its stamp.
	cuts  []NodeCut
	regs  []regWrite
	elems []elemWrite
	incs  []*target

	out     *meridianv1.IdentityState
	inPlace bool // out is the caller's: change it; otherwise copy on write
	own     owned
	eff     Effect
}

// get returns a field's value and whether it is set, with one reflective
// access for singular message fields (whose Has and Get both reflect): an
// unset one reads as an invalid, empty message.
func get(msg protoreflect.Message, fd protoreflect.FieldDescriptor) (protoreflect.Value, bool) {
	if fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
		v := msg.Get(fd)
		return v, v.Message().IsValid()
	}
	if !msg.Has(fd) {
		return protoreflect.Value{}, false
	}
	return msg.Get(fd), true
}

// scratch keeps the write lists of an apply for the next one: they are
// needed for every event and garbage right after it.
type scratch struct {
	regs  []regWrite
	elems []elemWrite
	incs  []*target
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// put clears what the lists point to (encoded values that states keep)
// and returns sc to the pool.
func (sc *scratch) put() {
	clear(sc.regs)
	clear(sc.elems)
	clear(sc.incs)
	scratchPool.Put(sc)
}

type regWrite struct {
	r    *regField
	path string
	enc  []byte
}

type elemWrite struct {
	t       *target
	key     []byte
	remove  bool
	payload []byte
}

// owned is what a copying apply has copied into out already, and may change.
type owned struct {
	regs, maxRegs, sets bool
	setStates           []*meridianv1.SetState
}

// set collects the registers v writes at r: one for a scalar or atomic
// message, one per key for a map, and field by field (present fields only)
// for a container.
func (a *applier) set(r *regField, v protoreflect.Value) error {
	switch {
	case r.container != nil:
		msg := v.Message()
		for _, c := range r.container {
			if cv, ok := get(msg, c.fd); ok {
				if err := a.set(c, cv); err != nil {
					return err
				}
			}
		}
		return nil
	case r.fd.IsMap():
		regs, err := a.m.mapRegisters(r, v.Map(), a.regs)
		a.regs = regs
		return err
	}
	enc, err := a.m.appendRegister(r, protoreflect.MapKey{}, v)
	if err != nil {
		return err
	}
	a.regs = append(a.regs, regWrite{r: r, path: r.path, enc: enc})
	return nil
}

// mapRegisters appends the registers of a map's entries to regs.
func (m *Merger) mapRegisters(r *regField, mp protoreflect.Map, regs []regWrite) ([]regWrite, error) {
	var err error
	mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
		var enc []byte
		if enc, err = m.appendRegister(r, k, mv); err == nil {
			regs = append(regs, regWrite{r: r, path: r.path + "." + k.String(), enc: enc})
		}
		return err == nil
	})
	return regs, err
}

// setOp collects the element writes of OP_ADD and OP_REMOVE on a set.
func (a *applier) setOp(f *bodyField, body protoreflect.Message) error {
	v, ok := get(body, f.fd)
	if !ok {
		return nil
	}
	if !f.fd.IsList() {
		return a.element(f, v, -1)
	}
	l := v.List()
	for i := range l.Len() {
		if err := a.element(f, l.Get(i), i); err != nil {
			return err
		}
	}
	return nil
}

// element collects one element write; i is its index in a repeated field
// (-1 for a singular one), for errors.
func (a *applier) element(f *bodyField, v protoreflect.Value, i int) error {
	t := f.target
	path := func() string {
		if i < 0 {
			return f.path
		}
		return fmt.Sprintf("%s[%d]", f.path, i)
	}
	var key, payload []byte
	switch {
	case f.op == meridianv1.Op_OP_ADD && t.keyField != nil:
		elem := v.Message()
		if !elem.Has(t.keyField) {
			return eventErr(path()+"."+string(t.keyField.Name()), "required: the (key) field identifies the element of %q", t.fd.Name())
		}
		key = encodeKey(t.keyField.Kind(), elem.Get(t.keyField))
		var err error
		if payload, err = marshalOpts.Marshal(elem.Interface()); err != nil {
			return eventErr(path(), "cannot encode the element: %v", err)
		}
	default:
		if isZeroScalar(f.fd.Kind(), v) {
			return eventErr(path(), "an element of %q cannot be the empty value", t.fd.Name())
		}
		key = encodeKey(f.fd.Kind(), v)
	}
	a.elems = append(a.elems, elemWrite{t: t, key: key, remove: f.op == meridianv1.Op_OP_REMOVE, payload: payload})
	return nil
}

// write makes the collected writes in a.out.
func (a *applier) write() {
	for _, w := range a.regs {
		a.putRegister(w)
	}
	for _, w := range a.elems {
		a.updateElement(w)
	}
	for _, t := range a.incs {
		a.increment(t)
	}
}

func (a *applier) stampPB() *meridianv1.Stamp {
	if a.pb == nil {
		a.pb = stampToPB(a.stamp)
	}
	return a.pb
}

// putRegister stores the write if it beats the register at its path.
func (a *applier) putRegister(w regWrite) {
	regs, own := &a.out.Registers, &a.own.regs
	isMax := w.r.rule == meridianv1.MergeRule_MERGE_RULE_MAX
	if isMax {
		regs, own = &a.out.MaxRegisters, &a.own.maxRegs
	}
	var reg *meridianv1.Register
	if a.pb == nil {
		// The event's stamp and its first register in one allocation.
		rs := &regStamp{stamp: meridianv1.Stamp{Hlc: uint64(a.stamp.HLC), Node: a.stamp.Node, EventId: a.stamp.EventID}}
		a.pb, reg = &rs.stamp, &rs.reg
	} else {
		reg = new(meridianv1.Register)
	}
	reg.Path, reg.Stamp, reg.Value = w.path, a.pb, w.enc
	i, found := findRegister(*regs, w.path)
	if found {
		old := (*regs)[i]
		if isMax && !a.m.maxLessAt(w.r.chain, old, reg) || !isMax && !registerLess(old, reg) {
			return
		}
	}
	if !a.inPlace && !*own {
		*regs, *own = append(make([]*meridianv1.Register, 0, len(*regs)+1), *regs...), true
	}
	if found {
		(*regs)[i] = reg
	} else {
		*regs = slices.Insert(*regs, i, reg)
	}
	a.eff.Changed = true
}

// regStamp is a register and the stamp it (and the event's other writes)
// points to.
type regStamp struct {
	reg   meridianv1.Register
	stamp meridianv1.Stamp
}

// updateElement applies an add or a remove to the element of its set.
func (a *applier) updateElement(w elemWrite) {
	t := w.t
	si, setFound := findSet(a.out.Sets, t.name)
	var set *meridianv1.SetState
	if setFound {
		set = a.out.Sets[si]
	}
	elems := set.GetElements()
	i, found := findElement(elems, w.key)
	var old AWElement[[]byte]
	var oldPB *meridianv1.SetElement
	if found {
		oldPB = elems[i]
		old = elementFromPB(oldPB)
	}
	var e AWElement[[]byte]
	switch {
	case w.remove && a.cuts != nil:
		e = old.Merge(AWElement[[]byte]{Cuts: a.cuts}, nil)
	case w.remove:
		e = old.Remove(a.stamp)
	default:
		e = old.Add(a.stamp, w.payload, t.join)
	}
	if t.rule == meridianv1.MergeRule_MERGE_RULE_GROW_ONLY_SET {
		e = e.newestOnly()
	}
	if found && sameElement(e, old) {
		return
	}
	if e.Removed != old.Removed || !slices.Equal(e.Cuts, old.Cuts) {
		a.eff.Removed = true
	}
	a.eff.Changed = true
	pb := &meridianv1.SetElement{
		Key:       w.key,
		Added:     a.reuseStamp(e.Added, old.Added, oldPB.GetAdded()),
		Value:     e.Payload,
		Removed:   a.reuseStamp(e.Removed, old.Removed, oldPB.GetRemoved()),
		OtherAdds: a.othersPB(e.Others, old.Others, oldPB.GetOtherAdds()),
		Cuts:      cutsPB(e.Cuts, old.Cuts, oldPB.GetCuts()),
	}
	if !a.inPlace && !a.own.sets {
		a.out.Sets, a.own.sets = append(make([]*meridianv1.SetState, 0, len(a.out.Sets)+1), a.out.Sets...), true
	}
	switch {
	case !setFound:
		set = &meridianv1.SetState{Name: t.name, Elements: []*meridianv1.SetElement{pb}}
		a.out.Sets = slices.Insert(a.out.Sets, si, set)
		a.own.setStates = append(a.own.setStates, set)
		return
	case !a.inPlace && !slices.Contains(a.own.setStates, set):
		set = &meridianv1.SetState{Name: t.name, Elements: append(make([]*meridianv1.SetElement, 0, len(elems)+1), elems...)}
		a.out.Sets[si] = set
		a.own.setStates = append(a.own.setStates, set)
	}
	if found {
		set.Elements[i] = pb
	} else {
		set.Elements = slices.Insert(set.Elements, i, pb)
	}
}

// reuseStamp returns s as stored, reusing the event's stamp or the old
// element's rather than allocating.
func (a *applier) reuseStamp(s, old Stamp, oldPB *meridianv1.Stamp) *meridianv1.Stamp {
	switch {
	case s.IsZero():
		return nil
	case s == a.stamp:
		return a.stampPB()
	case s == old && oldPB != nil:
		return oldPB
	}
	return stampToPB(s)
}

// othersPB returns an element's other adds as stored, the old element's
// when they did not change.
func (a *applier) othersPB(others, old []AWAdd[[]byte], oldPB []*meridianv1.NodeAdd) []*meridianv1.NodeAdd {
	if len(others) == len(oldPB) && slices.EqualFunc(others, old, func(x, y AWAdd[[]byte]) bool {
		return x.Stamp == y.Stamp && bytes.Equal(x.Payload, y.Payload)
	}) {
		return oldPB
	}
	return othersToPB(others, func(s Stamp) *meridianv1.Stamp {
		if s == a.stamp {
			return a.stampPB()
		}
		return stampToPB(s)
	})
}

// cutsPB returns an element's cuts as stored, the old element's when they
// did not change.
func cutsPB(cuts, old []NodeCut, oldPB []*meridianv1.NodeCut) []*meridianv1.NodeCut {
	if len(cuts) == len(oldPB) && slices.Equal(cuts, old) {
		return oldPB
	}
	return cutsToPB(cuts)
}

// observedOf reads the causal context of an event through reflection
// (schemas without Event.observed have none).
func (m *Merger) observedOf(ev protoreflect.Message) (map[string]uint64, bool) {
	if m.env.observed == nil || !ev.Has(m.env.observed) {
		return nil, false
	}
	mp := ev.Get(m.env.observed).Message().Get(m.env.observedHLC).Map()
	out := make(map[string]uint64, mp.Len())
	mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		out[k.String()] = v.Uint()
		return true
	})
	return out, true
}

// checkObserved refuses a causal context naming an empty node id.
func checkObserved(observed map[string]uint64) error {
	if _, ok := observed[""]; ok {
		return eventErr("observed.hlc", "a node id must not be empty (the context maps origin node ids to the HLC of the newest event of that node observed)")
	}
	return nil
}

// increment counts this event once in its origin's share. The share is the
// set of the origin's log sequences, so redelivery never counts twice.
func (a *applier) increment(t *target) {
	ci, cFound := findCounter(a.out.Counters, t.name)
	var cs *meridianv1.CounterState
	if cFound {
		cs = a.out.Counters[ci]
	}
	shares := cs.GetShares()
	hi, hFound := findShare(shares, a.stamp.Node)
	var sh *meridianv1.CounterShare
	if hFound {
		sh = shares[hi]
	}
	seqs := sh.GetSequences()
	j, counted := slices.BinarySearch(seqs, a.seq)
	if counted {
		return
	}
	a.eff.Changed = true
	if a.inPlace {
		switch {
		case sh != nil:
			sh.Sequences = slices.Insert(sh.Sequences, j, a.seq)
		case cs != nil:
			cs.Shares = slices.Insert(cs.Shares, hi, &meridianv1.CounterShare{Node: a.stamp.Node, Sequences: []uint64{a.seq}})
		default:
			a.out.Counters = slices.Insert(a.out.Counters, ci, &meridianv1.CounterState{Name: t.name,
				Shares: []*meridianv1.CounterShare{{Node: a.stamp.Node, Sequences: []uint64{a.seq}}}})
		}
		return
	}
	nsh := &meridianv1.CounterShare{Node: a.stamp.Node, Sequences: slices.Insert(slices.Clip(seqs), j, a.seq)}
	shares = putSorted(shares, nsh, (*meridianv1.CounterShare).GetNode)
	a.out.Counters = putSorted(a.out.Counters, &meridianv1.CounterState{Name: t.name, Shares: shares}, (*meridianv1.CounterState).GetName)
}

// isZeroScalar reports whether an element value is its kind's zero.
func isZeroScalar(kind protoreflect.Kind, v protoreflect.Value) bool {
	switch kind {
	case protoreflect.StringKind:
		return v.String() == ""
	case protoreflect.BytesKind:
		return len(v.Bytes()) == 0
	case protoreflect.BoolKind:
		return !v.Bool()
	case protoreflect.EnumKind:
		return v.Enum() == 0
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return v.Int() == 0
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return v.Uint() == 0
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return v.Float() == 0
	}
	return false
}
