package conflict

import (
	"bytes"
	"cmp"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The state stores values encoded, so that one IdentityState shape serves
// every schema. Registers hold a whole Identity with one field set (viewing
// is unmarshalling them all into one Identity); set elements are keyed by
// encoded scalars.

var (
	marshalOpts   = proto.MarshalOptions{Deterministic: true}
	unmarshalOpts = proto.UnmarshalOptions{Merge: true, DiscardUnknown: true}
)

// encodeKey encodes a scalar as a set element key: strings and bytes as they
// are (so that elements list in their natural order), other kinds in their
// protowire form.
func encodeKey(kind protoreflect.Kind, v protoreflect.Value) []byte {
	switch kind {
	case protoreflect.StringKind:
		return []byte(v.String())
	case protoreflect.BytesKind:
		return bytes.Clone(v.Bytes())
	case protoreflect.BoolKind:
		return protowire.AppendVarint(nil, protowire.EncodeBool(v.Bool()))
	case protoreflect.EnumKind:
		return protowire.AppendVarint(nil, uint64(int64(v.Enum())))
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		return protowire.AppendVarint(nil, uint64(v.Int()))
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		return protowire.AppendVarint(nil, v.Uint())
	case protoreflect.Sfixed32Kind:
		return protowire.AppendFixed32(nil, uint32(v.Int()))
	case protoreflect.Fixed32Kind:
		return protowire.AppendFixed32(nil, uint32(v.Uint()))
	case protoreflect.FloatKind:
		return protowire.AppendFixed32(nil, math.Float32bits(float32(v.Float())))
	case protoreflect.Sfixed64Kind:
		return protowire.AppendFixed64(nil, uint64(v.Int()))
	case protoreflect.Fixed64Kind:
		return protowire.AppendFixed64(nil, v.Uint())
	case protoreflect.DoubleKind:
		return protowire.AppendFixed64(nil, math.Float64bits(v.Float()))
	}
	return nil
}

// decodeKey reverses encodeKey; ok is false for bytes it never produced.
func decodeKey(fd protoreflect.FieldDescriptor, b []byte) (protoreflect.Value, bool) {
	varint := func() (uint64, bool) {
		v, n := protowire.ConsumeVarint(b)
		return v, n == len(b)
	}
	fixed32 := func() (uint32, bool) {
		v, n := protowire.ConsumeFixed32(b)
		return v, n == len(b)
	}
	fixed64 := func() (uint64, bool) {
		v, n := protowire.ConsumeFixed64(b)
		return v, n == len(b)
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(string(b)), true
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(bytes.Clone(b)), true
	case protoreflect.BoolKind:
		v, ok := varint()
		return protoreflect.ValueOfBool(protowire.DecodeBool(v)), ok
	case protoreflect.EnumKind:
		v, ok := varint()
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(v))), ok
	case protoreflect.Int32Kind, protoreflect.Sint32Kind:
		v, ok := varint()
		return protoreflect.ValueOfInt32(int32(v)), ok
	case protoreflect.Int64Kind, protoreflect.Sint64Kind:
		v, ok := varint()
		return protoreflect.ValueOfInt64(int64(v)), ok
	case protoreflect.Uint32Kind:
		v, ok := varint()
		return protoreflect.ValueOfUint32(uint32(v)), ok
	case protoreflect.Uint64Kind:
		v, ok := varint()
		return protoreflect.ValueOfUint64(v), ok
	case protoreflect.Sfixed32Kind:
		v, ok := fixed32()
		return protoreflect.ValueOfInt32(int32(v)), ok
	case protoreflect.Fixed32Kind:
		v, ok := fixed32()
		return protoreflect.ValueOfUint32(v), ok
	case protoreflect.FloatKind:
		v, ok := fixed32()
		return protoreflect.ValueOfFloat32(math.Float32frombits(v)), ok
	case protoreflect.Sfixed64Kind:
		v, ok := fixed64()
		return protoreflect.ValueOfInt64(int64(v)), ok
	case protoreflect.Fixed64Kind:
		v, ok := fixed64()
		return protoreflect.ValueOfUint64(v), ok
	case protoreflect.DoubleKind:
		v, ok := fixed64()
		return protoreflect.ValueOfFloat64(math.Float64frombits(v)), ok
	}
	return protoreflect.Value{}, false
}

// compareScalar orders two values of one scalar kind (MAX registers).
func compareScalar(kind protoreflect.Kind, a, b protoreflect.Value) int {
	switch kind {
	case protoreflect.BoolKind:
		return cmp.Compare(protowire.EncodeBool(a.Bool()), protowire.EncodeBool(b.Bool()))
	case protoreflect.EnumKind:
		return cmp.Compare(a.Enum(), b.Enum())
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return cmp.Compare(a.Int(), b.Int())
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return cmp.Compare(a.Uint(), b.Uint())
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return cmp.Compare(a.Float(), b.Float())
	case protoreflect.StringKind:
		return cmp.Compare(a.String(), b.String())
	case protoreflect.BytesKind:
		return bytes.Compare(a.Bytes(), b.Bytes())
	}
	return 0
}

// encodeRegister marshals an Identity holding only the value at chain (the
// field path from Identity), or, when key is valid, only that map entry.
func (m *Merger) encodeRegister(chain []protoreflect.FieldDescriptor, key protoreflect.MapKey, v protoreflect.Value) ([]byte, error) {
	id := m.newIdentity()
	cur := id
	for _, fd := range chain[:len(chain)-1] {
		cur = cur.Mutable(fd).Message()
	}
	last := chain[len(chain)-1]
	if last.IsMap() {
		cur.Mutable(last).Map().Set(key, v)
	} else {
		cur.Set(last, v)
	}
	return marshalOpts.Marshal(id.Interface())
}

// decodeRegister returns the value a register holds at chain, and false if
// the bytes do not decode or do not hold it.
func (m *Merger) decodeRegister(chain []protoreflect.FieldDescriptor, b []byte) (protoreflect.Value, bool) {
	id := m.newIdentity()
	if err := unmarshalOpts.Unmarshal(b, id.Interface()); err != nil {
		return protoreflect.Value{}, false
	}
	cur := id
	for _, fd := range chain[:len(chain)-1] {
		if !cur.Has(fd) {
			return protoreflect.Value{}, false
		}
		cur = cur.Get(fd).Message()
	}
	last := chain[len(chain)-1]
	if !cur.Has(last) {
		return protoreflect.Value{}, false
	}
	return cur.Get(last), true
}

// joinElement joins the payloads two parts of one add wrote to a message
// element (the GLOBAL part's and the RESIDENT part's fields). Field by field:
// a field one side lacks comes from the other; a field both hold with
// different values (only a corrupt producer does that) keeps the larger
// encoding. Absent-below-everything and max per field make the join
// commutative, associative and idempotent.
func joinElement(newElem func() protoreflect.Message, a, b []byte) []byte {
	if bytes.Equal(a, b) {
		return a
	}
	ma, mb := newElem(), newElem()
	if unmarshalOpts.Unmarshal(a, ma.Interface()) != nil {
		return maxBytes(a, b)
	}
	if unmarshalOpts.Unmarshal(b, mb.Interface()) != nil {
		return maxBytes(a, b)
	}
	mb.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if !ma.Has(fd) {
			ma.Set(fd, v)
			return true
		}
		ea, eb := encodeField(newElem, fd, ma.Get(fd)), encodeField(newElem, fd, v)
		if bytes.Compare(eb, ea) > 0 {
			ma.Set(fd, v)
		}
		return true
	})
	out, err := marshalOpts.Marshal(ma.Interface())
	if err != nil {
		return maxBytes(a, b)
	}
	return out
}

func encodeField(newElem func() protoreflect.Message, fd protoreflect.FieldDescriptor, v protoreflect.Value) []byte {
	m := newElem()
	m.Set(fd, v)
	b, _ := marshalOpts.Marshal(m.Interface())
	return b
}

func maxBytes(a, b []byte) []byte {
	if bytes.Compare(a, b) >= 0 {
		return a
	}
	return b
}
