package writer

import (
	"encoding/binary"
	"errors"
	"fmt"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Splitting is driven by the schema alone: the (residency) and (key) options
// of every field decide which part of an event it travels in.
//
//   - a GLOBAL message-typed field is a container: its own fields decide;
//   - a RESIDENT field (of any type, message fields included) is resident as
//     a whole;
//   - a field with (key) = true goes into both parts, so that the parts merge
//     into the same set element;
//   - a map or a repeated scalar takes the class of its field as a whole.
//
// The options are read once per message type, at New, into a splitPlan
// indexed by field number. Splitting then works on the protobuf encoding of
// the body: it copies each field's bytes to the GLOBAL, the RESIDENT and the
// key-only output as the plan says and recurses into containers, so an event
// costs one marshal and some byte copies instead of a reflective rebuild and
// three more marshals. A field number the plan does not know is an unknown
// field (a newer schema's event type or field) and is refused.

type class uint8

const (
	clsGlobal class = iota
	clsResident
	clsKey
	clsContainer
)

type fieldPlan struct {
	name  string
	class class
	// sub is the plan of a message-typed field (containers are split with
	// it; other message fields are only checked for unknown fields).
	sub *splitPlan
}

type splitPlan struct {
	name   protoreflect.FullName
	fields []*fieldPlan // indexed by field number; nil: not a field
	// resident: a RESIDENT field may be set at or below this message. When
	// false the whole message is GLOBAL and is copied as it is (after a
	// check for unknown fields, if it has message-typed fields).
	resident bool
	nested   bool // has message-typed fields
}

func (p *splitPlan) field(num protowire.Number) *fieldPlan {
	if num < 0 || int(num) >= len(p.fields) {
		return nil
	}
	return p.fields[num]
}

// buildSplitPlan reads the options of md and everything below it. Every field
// must carry a residency; a key field must be a GLOBAL scalar; a GLOBAL map
// must not hold messages with RESIDENT fields (it would be copied whole into
// the GLOBAL part).
func buildSplitPlan(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*splitPlan) (*splitPlan, error) {
	if p, ok := seen[md.FullName()]; ok {
		return p, nil
	}
	p := &splitPlan{name: md.FullName()}
	seen[md.FullName()] = p
	fields := md.Fields()
	maxNum := protoreflect.FieldNumber(0)
	for i := range fields.Len() {
		maxNum = max(maxNum, fields.Get(i).Number())
	}
	p.fields = make([]*fieldPlan, maxNum+1)
	for i := range fields.Len() {
		fd := fields.Get(i)
		res := proto.GetExtension(fd.Options(), meridianv1.E_Residency).(meridianv1.Residency)
		isKey := proto.GetExtension(fd.Options(), meridianv1.E_Key).(bool)
		fp := &fieldPlan{name: string(fd.Name())}
		switch {
		case fd.IsMap() && fd.MapValue().Message() != nil:
			// Each occurrence is a map entry {1: key, 2: value}.
			val, err := buildSplitPlan(fd.MapValue().Message(), seen)
			if err != nil {
				return nil, err
			}
			p.nested = true
			fp.sub = &splitPlan{name: fd.Message().FullName(), nested: true, resident: val.resident,
				fields: []*fieldPlan{nil, {name: "key"}, {name: "value", sub: val}}}
		case fd.Message() != nil && !fd.IsMap():
			sub, err := buildSplitPlan(fd.Message(), seen)
			if err != nil {
				return nil, err
			}
			p.nested = true
			fp.sub = sub
		}
		switch {
		case res == meridianv1.Residency_RESIDENCY_UNSPECIFIED:
			return nil, fmt.Errorf("writer: schema: field %s has no (residency) option", fd.FullName())
		case isKey && (res != meridianv1.Residency_RESIDENCY_GLOBAL || fd.Message() != nil || fd.IsList()):
			return nil, fmt.Errorf("writer: schema: key field %s must be a GLOBAL scalar", fd.FullName())
		case isKey:
			fp.class = clsKey
		case res == meridianv1.Residency_RESIDENCY_RESIDENT:
			fp.class = clsResident
			p.resident = true
		case fd.Message() != nil && !fd.IsMap():
			fp.class = clsContainer
		case fd.IsMap() && fp.sub != nil && fp.sub.resident:
			return nil, fmt.Errorf("writer: schema: GLOBAL map %s holds messages with RESIDENT fields; annotate the map RESIDENT", fd.FullName())
		default:
			fp.class = clsGlobal
		}
		p.fields[fd.Number()] = fp
	}
	// Containers were planned recursively above, so their flags are final
	// (a cycle would only make this conservative).
	for _, fp := range p.fields {
		if fp != nil && fp.class == clsContainer && fp.sub.resident {
			p.resident = true
		}
	}
	return p, nil
}

// parts is the output of a split: the encodings of the body's GLOBAL part,
// its RESIDENT part (resident + key fields) and its key-only part.
type parts struct {
	global, resident, keys []byte
	hasResident            bool
}

// errMalformed is a body encoding that does not parse; the writer marshals
// bodies itself, so it means a bug or a message built by hand.
var errMalformed = errors.New("malformed encoding")

// unknownError is an unknown field (in protobuf input: a field number this
// schema does not have, such as an event type from a newer schema).
type unknownError struct {
	path string
	num  protowire.Number
	err  error // errMalformed instead of an unknown field
}

func (e *unknownError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("unknown field number %d", e.num)
}

func (e *unknownError) in(name string) *unknownError {
	e.path = joinPath(name, e.path)
	return e
}

// split splits the encoded message b into out (appending to its slices).
func (p *splitPlan) split(b []byte, out *parts) *unknownError {
	if !p.resident {
		if err := p.check(b); err != nil {
			return err
		}
		out.global = append(out.global, b...)
		return nil
	}
	// Key fields go into the resident and key-only parts only if this
	// message has resident content, which may come after them: remember
	// them (slices of b, no copy) and add them at the end.
	var keyBuf [4][]byte
	keys := keyBuf[:0]
	resident := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return &unknownError{err: errMalformed}
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return &unknownError{err: errMalformed}
		}
		raw, val := b[:n+m], b[n:n+m]
		b = b[n+m:]
		fp := p.field(num)
		if fp == nil {
			return &unknownError{num: num}
		}
		switch fp.class {
		case clsGlobal:
			if fp.sub != nil {
				if err := fp.sub.checkValue(typ, val); err != nil {
					return err.in(fp.name)
				}
			}
			out.global = append(out.global, raw...)
		case clsKey:
			out.global = append(out.global, raw...)
			keys = append(keys, raw)
		case clsResident:
			if fp.sub != nil {
				if err := fp.sub.checkValue(typ, val); err != nil {
					return err.in(fp.name)
				}
			}
			out.resident = append(out.resident, raw...)
			resident = true
		case clsContainer:
			if typ != protowire.BytesType {
				return &unknownError{err: errMalformed}
			}
			inner, _ := protowire.ConsumeBytes(val)
			sub, err := p.splitContainer(num, fp, inner, out)
			if err != nil {
				return err.in(fp.name)
			}
			resident = resident || sub
		}
	}
	if resident {
		for _, k := range keys {
			out.resident = append(out.resident, k...)
			out.keys = append(out.keys, k...)
		}
		out.hasResident = true
	}
	return nil
}

// splitContainer splits one occurrence of a container field into the three
// outputs, each as field num with a length prefix patched in afterwards. The
// GLOBAL occurrence is dropped when empty, the others unless the container
// had resident content.
func (p *splitPlan) splitContainer(num protowire.Number, fp *fieldPlan, inner []byte, out *parts) (resident bool, err *unknownError) {
	g0, r0, k0 := len(out.global), len(out.resident), len(out.keys)
	out.global = openField(out.global, num)
	out.resident = openField(out.resident, num)
	out.keys = openField(out.keys, num)
	sub := parts{global: out.global, resident: out.resident, keys: out.keys}
	if err := fp.sub.split(inner, &sub); err != nil {
		out.global, out.resident, out.keys = out.global[:g0], out.resident[:r0], out.keys[:k0]
		return false, err
	}
	out.global = closeField(sub.global, g0, true)
	if sub.hasResident {
		out.resident = closeField(sub.resident, r0, false)
		out.keys = closeField(sub.keys, k0, true)
	} else {
		out.resident, out.keys = sub.resident[:r0], sub.keys[:k0]
	}
	return sub.hasResident, nil
}

// openField appends the tag and a one-byte length placeholder.
func openField(b []byte, num protowire.Number) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return append(b, 0)
}

// closeField patches the length of the field opened at start (tag, one-byte
// placeholder, content), shifting the content when the length needs more
// than one byte. dropEmpty removes a field with no content.
func closeField(b []byte, start int, dropEmpty bool) []byte {
	_, _, tagLen := protowire.ConsumeTag(b[start:])
	lenPos := start + tagLen
	n := len(b) - lenPos - 1
	if n == 0 && dropEmpty {
		return b[:start]
	}
	if n < 0x80 {
		b[lenPos] = byte(n)
		return b
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	b = append(b, zeros[:extra]...)
	copy(b[lenPos+1+extra:], b[lenPos+1:len(b)-extra])
	protowire.AppendVarint(b[lenPos:lenPos], uint64(n))
	return b
}

var zeros [binary.MaxVarintLen64]byte

// check looks for unknown fields anywhere in an encoded message.
func (p *splitPlan) check(b []byte) *unknownError {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return &unknownError{err: errMalformed}
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return &unknownError{err: errMalformed}
		}
		fp := p.field(num)
		if fp == nil {
			return &unknownError{num: num}
		}
		if fp.sub != nil {
			if err := fp.sub.checkValue(typ, b[n:n+m]); err != nil {
				return err.in(fp.name)
			}
		}
		b = b[n+m:]
	}
	return nil
}

// checkValue checks one occurrence of a message-typed field (for a map, one
// entry, whose value field 2 is the message).
func (p *splitPlan) checkValue(typ protowire.Type, val []byte) *unknownError {
	if typ != protowire.BytesType {
		return &unknownError{err: errMalformed}
	}
	inner, _ := protowire.ConsumeBytes(val)
	return p.check(inner)
}

// firstResident returns the path of the first RESIDENT field set in b (for
// error messages; b has been split without error).
func (p *splitPlan) firstResident(b []byte) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if n < 0 || m < 0 {
			return ""
		}
		fp := p.field(num)
		switch {
		case fp == nil:
		case fp.class == clsResident:
			return fp.name
		case fp.class == clsContainer && fp.sub.resident:
			inner, _ := protowire.ConsumeBytes(b[n : n+m])
			if path := fp.sub.firstResident(inner); path != "" {
				return joinPath(fp.name, path)
			}
		}
		b = b[n+m:]
	}
	return ""
}

func joinPath(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "." + b
}

// bodyPlan is everything precomputed about one body type of the Event oneof.
type bodyPlan struct {
	field   protoreflect.FieldDescriptor // the oneof field in Event
	num     protowire.Number
	name    string // its proto name: subject <type>, error paths
	split   *splitPlan
	allowed bool // accepted from clients (not heartbeat, not data_key)
}

// bodyPlans maps Event's body field numbers to plans.
type bodyPlans []*bodyPlan

func buildBodyPlans() (bodyPlans, error) {
	oneof := bodyOneof
	if oneof == nil {
		return nil, fmt.Errorf("writer: schema: Event has no body oneof")
	}
	seen := map[protoreflect.FullName]*splitPlan{}
	fields := oneof.Fields()
	maxNum := protoreflect.FieldNumber(0)
	for i := range fields.Len() {
		maxNum = max(maxNum, fields.Get(i).Number())
	}
	plans := make(bodyPlans, maxNum+1)
	for i := range fields.Len() {
		fd := fields.Get(i)
		sp, err := buildSplitPlan(fd.Message(), seen)
		if err != nil {
			return nil, err
		}
		name := string(fd.Name())
		plans[fd.Number()] = &bodyPlan{
			field:   fd,
			num:     fd.Number(),
			name:    name,
			split:   sp,
			allowed: name != "heartbeat" && name != "data_key",
		}
	}
	return plans, nil
}

func (bp bodyPlans) of(num protowire.Number) *bodyPlan {
	if num < 0 || int(num) >= len(bp) {
		return nil
	}
	return bp[num]
}
