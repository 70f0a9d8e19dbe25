package conflict

import (
	"fmt"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Merger applies identity events to IdentityStates by the merge annotations
// of the schema. It is compiled once from the descriptors and is immutable,
// so it is safe for concurrent use.
//
// What each op does to its target (each write is stamped (hlc, origin node,
// event id), the total order of all writes):
//   - OP_SET on an LWW field: one LWW register per scalar or atomic message
//     (Address), one per key of a map (metadata), and for a container (a
//     message whose fields carry merge rules, like Traits) one per present
//     field, recursively. Adding a trait is adding an optional field.
//   - OP_SET on a MAX field: a register keeping the largest value.
//   - OP_ADD / OP_REMOVE on an ADD_WINS_SET: elements keyed by value, or by
//     the element message's (key) field; see AWElement for the
//     observed-remove rule (a remove carrying a causal context,
//     Event.observed, cuts per origin node what it observed; one without
//     cuts by its stamp). The payload is the newest add's element, the union of
//     the fields of its GLOBAL and RESIDENT parts (they share the stamp).
//   - OP_ADD on a GROW_ONLY_SET: the same elements, never removed.
//   - OP_INCREMENT on a COUNTER: the origin node's share gains the event's
//     per-node log sequence; the value is the number of distinct (node,
//     sequence) pairs, so a redelivered event never counts twice and states
//     join by union. It fires whether or not the field is set, in the part
//     of the field's residency class.
//   - OP_ERASE on the REMOVE_WINS field: the state becomes a tombstone (id
//     and the smallest erase stamp); every later or concurrent event of the
//     identity is ignored.
type Merger struct {
	identity    protoreflect.MessageDescriptor
	newIdentity func() protoreflect.Message

	// Identity fields the merger fills itself.
	idField, erasedField, updatedField protoreflect.FieldDescriptor

	env      envelope
	bodies   map[protoreflect.FieldNumber]*bodyPlan // by Event body oneof field number
	byNumber []*bodyPlan                            // bodies, indexed by small field numbers
	typed    bool                                   // built from meridianv1.Event: its getters read the envelope
	targets  map[string]*target                     // by Identity field name
	maxPaths map[string][]protoreflect.FieldDescriptor
	opts     map[protoreflect.FullName]fieldOpts // every field reachable from Identity and Event
	resPlans map[protoreflect.FullName]*resPlan  // residency checks of body messages, by message
}

// envelope holds the Event fields Apply reads.
type envelope struct {
	eventID, identityID, node, hlc, sequence, part protoreflect.FieldDescriptor
	body                                           protoreflect.OneofDescriptor
	// observed is the optional causal context (a message with a
	// map<string, uint64> hlc), nil when the schema has none.
	observed, observedHLC protoreflect.FieldDescriptor
}

// fieldOpts are a field's meridian options.
type fieldOpts struct {
	residency meridianv1.Residency
	merge     meridianv1.MergeRule
	target    string
	op        meridianv1.Op
	key       bool
}

// target is an Identity field that events change.
type target struct {
	fd   protoreflect.FieldDescriptor
	name string // fd.Name(): the SetState or CounterState name
	rule meridianv1.MergeRule
	// join joins the payloads of a set's elements (see joinFor).
	join func(a, b []byte) []byte
	// keyField identifies a message element of a set; nil for scalar sets.
	keyField protoreflect.FieldDescriptor
	// newElem makes an empty element of a set of messages.
	newElem func() protoreflect.Message
	// reg describes LWW and MAX targets: a register, a map of registers, or a
	// container of them.
	reg *regField
}

// regField is a field that is merged as registers: a scalar or atomic
// message (one register), a map (one register per key) or a container (a
// message whose fields carry their own merge rules, merged field by field).
type regField struct {
	fd        protoreflect.FieldDescriptor
	rule      meridianv1.MergeRule // LWW or MAX
	container []*regField          // set for containers
	// path is the register path ("traits.name"; a map's registers add
	// "."+key) and chain the fields from Identity down to fd.
	path  string
	chain []protoreflect.FieldDescriptor
}

// bodyPlan is how one domain event type changes an identity.
type bodyPlan struct {
	fd     protoreflect.FieldDescriptor // the Event body oneof field
	fields []bodyField                  // empty: not an identity event
	res    *resPlan                     // what checkResidency looks at
}

type bodyField struct {
	fd        protoreflect.FieldDescriptor
	path      string // "<event type>.<field>", for errors
	op        meridianv1.Op
	residency meridianv1.Residency
	target    *target
}

// NewMerger compiles the merge annotations of meridianv1.Identity and of every
// message in the Event body oneof. It refuses, with a *SchemaError naming the
// field, an event field without a target or op, a target that Identity lacks,
// an op the target's merge rule cannot take, mismatched types, a set of
// messages without exactly one (key) field, and a field without a residency.
func NewMerger() (*Merger, error) {
	m, err := newMerger(
		(&meridianv1.Identity{}).ProtoReflect().Descriptor(),
		(&meridianv1.Event{}).ProtoReflect().Descriptor(),
		func() protoreflect.Message { return (&meridianv1.Identity{}).ProtoReflect() },
	)
	if err != nil {
		return nil, err
	}
	m.typed = true
	return m, nil
}

// newMerger compiles a merger for any descriptors shaped like meridianv1's
// (tests pass dynamic ones to show that schema changes need no code).
func newMerger(identity, event protoreflect.MessageDescriptor, newIdentity func() protoreflect.Message) (*Merger, error) {
	m := &Merger{
		identity:    identity,
		newIdentity: newIdentity,
		bodies:      map[protoreflect.FieldNumber]*bodyPlan{},
		targets:     map[string]*target{},
		maxPaths:    map[string][]protoreflect.FieldDescriptor{},
		opts:        map[protoreflect.FullName]fieldOpts{},
		resPlans:    map[protoreflect.FullName]*resPlan{},
	}
	if err := m.collectOpts(identity, map[protoreflect.FullName]bool{}); err != nil {
		return nil, err
	}
	if err := m.collectOpts(event, map[protoreflect.FullName]bool{}); err != nil {
		return nil, err
	}
	if err := m.compileEnvelope(event); err != nil {
		return nil, err
	}
	if err := m.compileIdentity(); err != nil {
		return nil, err
	}
	body := m.env.body.Fields()
	for i := range body.Len() {
		if err := m.compileBody(body.Get(i)); err != nil {
			return nil, err
		}
	}
	for n, p := range m.bodies {
		if n < 256 {
			if int(n) >= len(m.byNumber) {
				m.byNumber = append(m.byNumber, make([]*bodyPlan, int(n)+1-len(m.byNumber))...)
			}
			m.byNumber[n] = p
		}
	}
	return m, nil
}

// body returns the plan of the body field number n.
func (m *Merger) body(n protoreflect.FieldNumber) *bodyPlan {
	if n >= 0 && int(n) < len(m.byNumber) {
		return m.byNumber[n]
	}
	return m.bodies[n]
}

// collectOpts reads the options of every field reachable from md, and
// requires a residency class on each (ConsistencyToken-like helper messages
// are not reachable from Identity or Event).
func (m *Merger) collectOpts(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) error {
	if seen[md.FullName()] || md.IsMapEntry() {
		return nil
	}
	seen[md.FullName()] = true
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		o := readOpts(fd)
		if o.residency == meridianv1.Residency_RESIDENCY_UNSPECIFIED {
			return schemaErr(fd, "every field needs a (residency) class")
		}
		m.opts[fd.FullName()] = o
		if sub := fd.Message(); sub != nil && !fd.IsMap() {
			if err := m.collectOpts(sub, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

func readOpts(fd protoreflect.FieldDescriptor) fieldOpts {
	o := fd.Options()
	if o == nil {
		return fieldOpts{}
	}
	return fieldOpts{
		residency: proto.GetExtension(o, meridianv1.E_Residency).(meridianv1.Residency),
		merge:     proto.GetExtension(o, meridianv1.E_Merge).(meridianv1.MergeRule),
		target:    proto.GetExtension(o, meridianv1.E_Target).(string),
		op:        proto.GetExtension(o, meridianv1.E_Op).(meridianv1.Op),
		key:       proto.GetExtension(o, meridianv1.E_Key).(bool),
	}
}

func (m *Merger) compileEnvelope(event protoreflect.MessageDescriptor) error {
	fields := event.Fields()
	need := func(name string, kinds ...protoreflect.Kind) (protoreflect.FieldDescriptor, error) {
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil || fd.Cardinality() == protoreflect.Repeated {
			return nil, &SchemaError{Field: string(event.FullName()) + "." + name, Rule: "the envelope needs this singular field"}
		}
		for _, k := range kinds {
			if fd.Kind() == k {
				return fd, nil
			}
		}
		return nil, schemaErr(fd, "has kind %v, want %v", fd.Kind(), kinds)
	}
	var err error
	e := &m.env
	for _, f := range []struct {
		dst   *protoreflect.FieldDescriptor
		name  string
		kinds []protoreflect.Kind
	}{
		{&e.eventID, "event_id", []protoreflect.Kind{protoreflect.StringKind}},
		{&e.identityID, "identity_id", []protoreflect.Kind{protoreflect.StringKind}},
		{&e.node, "origin_node", []protoreflect.Kind{protoreflect.StringKind}},
		{&e.hlc, "hlc", []protoreflect.Kind{protoreflect.Uint64Kind, protoreflect.Fixed64Kind}},
		{&e.sequence, "sequence", []protoreflect.Kind{protoreflect.Uint64Kind, protoreflect.Fixed64Kind}},
		{&e.part, "part", []protoreflect.Kind{protoreflect.EnumKind}},
	} {
		if *f.dst, err = need(f.name, f.kinds...); err != nil {
			return err
		}
	}
	if fd := fields.ByName("observed"); fd != nil {
		var hlc protoreflect.FieldDescriptor
		if fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
			hlc = fd.Message().Fields().ByName("hlc")
		}
		if hlc == nil || !hlc.IsMap() || hlc.MapKey().Kind() != protoreflect.StringKind ||
			(hlc.MapValue().Kind() != protoreflect.Uint64Kind && hlc.MapValue().Kind() != protoreflect.Fixed64Kind) {
			return schemaErr(fd, "the causal context must be a singular message with a map<string, uint64> hlc")
		}
		e.observed, e.observedHLC = fd, hlc
	}
	if e.body = event.Oneofs().ByName("body"); e.body == nil {
		return &SchemaError{Field: string(event.FullName()) + ".body", Rule: "the envelope needs a oneof body of domain events"}
	}
	return nil
}

func (m *Merger) compileIdentity() error {
	fields := m.identity.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		rule := m.opts[fd.FullName()].merge
		switch {
		case fd.Name() == "identity_id":
			if fd.Kind() != protoreflect.StringKind || fd.IsList() {
				return schemaErr(fd, "identity_id must be a singular string")
			}
			m.idField = fd
			continue
		case fd.Name() == "updated_hlc":
			if fd.Kind() != protoreflect.Uint64Kind || fd.IsList() {
				return schemaErr(fd, "updated_hlc must be a singular uint64")
			}
			m.updatedField = fd
			continue
		}
		t := &target{fd: fd, name: string(fd.Name()), rule: rule}
		switch rule {
		case meridianv1.MergeRule_MERGE_RULE_UNSPECIFIED:
			return schemaErr(fd, "every Identity field needs a (merge) rule")
		case meridianv1.MergeRule_MERGE_RULE_LWW, meridianv1.MergeRule_MERGE_RULE_MAX:
			reg, err := m.compileRegField(fd)
			if err != nil {
				return err
			}
			t.reg = reg
			m.placeRegs(reg, string(fd.Name()), []protoreflect.FieldDescriptor{fd})
		case meridianv1.MergeRule_MERGE_RULE_ADD_WINS_SET, meridianv1.MergeRule_MERGE_RULE_GROW_ONLY_SET:
			if !fd.IsList() {
				return schemaErr(fd, "a %v target must be a repeated field (not a map or singular)", rule)
			}
			if md := fd.Message(); md != nil {
				kf, err := m.keyField(md)
				if err != nil {
					return err
				}
				t.keyField = kf
				t.newElem = m.newIdentity().NewField(fd).List().NewElement().Message().Type().New
			}
		case meridianv1.MergeRule_MERGE_RULE_COUNTER:
			if fd.Cardinality() == protoreflect.Repeated || !isInteger(fd.Kind()) {
				return schemaErr(fd, "a COUNTER target must be a singular integer")
			}
		case meridianv1.MergeRule_MERGE_RULE_REMOVE_WINS:
			if fd.Cardinality() == protoreflect.Repeated || fd.Kind() != protoreflect.BoolKind {
				return schemaErr(fd, "a REMOVE_WINS target must be a singular bool (true once erased)")
			}
			if m.erasedField != nil {
				return schemaErr(fd, "only one REMOVE_WINS field may exist, %s is one already", m.erasedField.FullName())
			}
			m.erasedField = fd
		default:
			return schemaErr(fd, "unknown merge rule %v", rule)
		}
		t.join = m.joinFor(t)
		m.targets[string(fd.Name())] = t
	}
	if m.idField == nil {
		return &SchemaError{Field: string(m.identity.FullName()) + ".identity_id", Rule: "the read model needs a string identity_id"}
	}
	return nil
}

// compileRegField compiles an LWW or MAX field. A message field whose own
// fields carry (merge) rules is a container, merged field by field; other
// message fields are atomic values.
func (m *Merger) compileRegField(fd protoreflect.FieldDescriptor) (*regField, error) {
	rule := m.opts[fd.FullName()].merge
	r := &regField{fd: fd, rule: rule}
	switch {
	case fd.IsList():
		return nil, schemaErr(fd, "a %v field must be singular or a map, not repeated", rule)
	case fd.IsMap():
		if rule != meridianv1.MergeRule_MERGE_RULE_LWW {
			return nil, schemaErr(fd, "a map merges per key as LWW registers; %v is not supported", rule)
		}
		return r, nil
	case rule == meridianv1.MergeRule_MERGE_RULE_MAX:
		if fd.Message() != nil {
			return nil, schemaErr(fd, "a MAX field must be a scalar")
		}
		return r, nil
	case fd.Message() == nil:
		return r, nil
	}
	md := fd.Message()
	sub := md.Fields()
	annotated := 0
	for i := range sub.Len() {
		if m.opts[sub.Get(i).FullName()].merge != meridianv1.MergeRule_MERGE_RULE_UNSPECIFIED {
			annotated++
		}
	}
	if annotated == 0 {
		return r, nil // atomic message value (e.g. Address)
	}
	for i := range sub.Len() {
		sf := sub.Get(i)
		switch m.opts[sf.FullName()].merge {
		case meridianv1.MergeRule_MERGE_RULE_LWW, meridianv1.MergeRule_MERGE_RULE_MAX:
		default:
			return nil, schemaErr(sf, "fields of the container %s must be LWW or MAX (set with OP_SET field by field)", md.FullName())
		}
		if !sf.IsMap() && !sf.HasPresence() {
			return nil, schemaErr(sf, "fields of the container %s must be optional (or maps) so that an update names exactly the fields it sets", md.FullName())
		}
		c, err := m.compileRegField(sf)
		if err != nil {
			return nil, err
		}
		r.container = append(r.container, c)
	}
	return r, nil
}

// placeRegs records the path and field chain of r and its container fields,
// and the chains of MAX registers by path.
func (m *Merger) placeRegs(r *regField, path string, chain []protoreflect.FieldDescriptor) {
	r.path, r.chain = path, chain
	if r.rule == meridianv1.MergeRule_MERGE_RULE_MAX {
		m.maxPaths[path] = chain
	}
	for _, c := range r.container {
		m.placeRegs(c, path+"."+string(c.fd.Name()), append(append([]protoreflect.FieldDescriptor(nil), chain...), c.fd))
	}
}

// keyField returns the single (key)=true field of a set's element message.
func (m *Merger) keyField(md protoreflect.MessageDescriptor) (protoreflect.FieldDescriptor, error) {
	var key protoreflect.FieldDescriptor
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.opts[fd.FullName()].key {
			continue
		}
		if key != nil {
			return nil, schemaErr(fd, "%s has two (key) fields, %s is the other", md.FullName(), key.Name())
		}
		if fd.Cardinality() == protoreflect.Repeated || fd.Message() != nil {
			return nil, schemaErr(fd, "a (key) field must be a singular scalar")
		}
		key = fd
	}
	if key == nil {
		return nil, &SchemaError{Field: string(md.FullName()), Rule: "a set of messages needs exactly one (key)=true field to identify elements"}
	}
	return key, nil
}

func (m *Merger) compileBody(of protoreflect.FieldDescriptor) error {
	md := of.Message()
	if md == nil {
		return schemaErr(of, "members of the body oneof must be messages")
	}
	plan := &bodyPlan{fd: of, res: m.resPlan(md)}
	m.bodies[of.Number()] = plan
	fields := md.Fields()
	targeted := 0
	for i := range fields.Len() {
		if m.opts[fields.Get(i).FullName()].target != "" {
			targeted++
		}
	}
	if targeted == 0 {
		return nil // heartbeat, data key: not an identity event
	}
	for i := range fields.Len() {
		fd := fields.Get(i)
		o := m.opts[fd.FullName()]
		if o.target == "" {
			return schemaErr(fd, "every field of an identity event needs a (target) Identity field")
		}
		t := m.targets[o.target]
		if t == nil {
			if m.identity.Fields().ByName(protoreflect.Name(o.target)) != nil {
				return schemaErr(fd, "(target) %q is filled by the merger itself and cannot be changed by an event", o.target)
			}
			return schemaErr(fd, "(target) %q is not a field of %s", o.target, m.identity.FullName())
		}
		if err := m.checkOp(fd, o.op, t); err != nil {
			return err
		}
		plan.fields = append(plan.fields, bodyField{fd: fd, path: string(of.Name()) + "." + string(fd.Name()), op: o.op, residency: o.residency, target: t})
	}
	return nil
}

// checkOp verifies that op fits the target's merge rule and the field's type
// fits the target's.
func (m *Merger) checkOp(fd protoreflect.FieldDescriptor, op meridianv1.Op, t *target) error {
	rules := map[meridianv1.Op][]meridianv1.MergeRule{
		meridianv1.Op_OP_SET:       {meridianv1.MergeRule_MERGE_RULE_LWW, meridianv1.MergeRule_MERGE_RULE_MAX},
		meridianv1.Op_OP_ADD:       {meridianv1.MergeRule_MERGE_RULE_ADD_WINS_SET, meridianv1.MergeRule_MERGE_RULE_GROW_ONLY_SET},
		meridianv1.Op_OP_REMOVE:    {meridianv1.MergeRule_MERGE_RULE_ADD_WINS_SET},
		meridianv1.Op_OP_INCREMENT: {meridianv1.MergeRule_MERGE_RULE_COUNTER},
		meridianv1.Op_OP_ERASE:     {meridianv1.MergeRule_MERGE_RULE_REMOVE_WINS},
	}
	allowed, ok := rules[op]
	if !ok {
		return schemaErr(fd, "needs an (op); got %v", op)
	}
	fits := false
	for _, r := range allowed {
		fits = fits || r == t.rule
	}
	if !fits {
		return schemaErr(fd, "%v cannot change target %q, whose merge rule is %v (%v works on %v)", op, t.fd.Name(), t.rule, op, allowed)
	}
	switch op {
	case meridianv1.Op_OP_SET:
		if fd.IsList() {
			return schemaErr(fd, "OP_SET needs a singular field or a map")
		}
		if !sameType(fd, t.fd) || fd.IsMap() != t.fd.IsMap() {
			return schemaErr(fd, "OP_SET needs the type of target %q (%s)", t.fd.Name(), typeName(t.fd))
		}
	case meridianv1.Op_OP_ADD:
		if fd.IsMap() || !sameType(fd, t.fd) {
			return schemaErr(fd, "OP_ADD needs the element type of target %q (%s)", t.fd.Name(), typeName(t.fd))
		}
	case meridianv1.Op_OP_REMOVE:
		elem := t.fd
		if t.keyField != nil {
			elem = t.keyField
		}
		if fd.IsMap() || !sameType(fd, elem) {
			return schemaErr(fd, "OP_REMOVE needs the type of the elements (or their key) of target %q (%s)", t.fd.Name(), typeName(elem))
		}
	}
	return nil
}

// sameType compares element types, ignoring cardinality.
func sameType(a, b protoreflect.FieldDescriptor) bool {
	if a.IsMap() && b.IsMap() {
		return sameType(a.MapKey(), b.MapKey()) && sameType(a.MapValue(), b.MapValue())
	}
	if a.Kind() != b.Kind() {
		return false
	}
	switch a.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return a.Message().FullName() == b.Message().FullName()
	case protoreflect.EnumKind:
		return a.Enum().FullName() == b.Enum().FullName()
	}
	return true
}

func typeName(fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsMap():
		return fmt.Sprintf("map<%s, %s>", typeName(fd.MapKey()), typeName(fd.MapValue()))
	case fd.Message() != nil:
		return string(fd.Message().FullName())
	case fd.Enum() != nil:
		return string(fd.Enum().FullName())
	}
	return fd.Kind().String()
}

func isInteger(k protoreflect.Kind) bool {
	switch k {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return true
	}
	return false
}
