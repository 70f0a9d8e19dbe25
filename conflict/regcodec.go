package conflict

import (
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Register values are written on every applied field, so they are encoded
// straight onto the wire rather than by building an Identity and
// marshalling it (encodeRegister, the reference): an Identity with a single
// field set at the end of a chain of messages is that field's tag and value
// wrapped in one length-delimited tag per enclosing message, which is what
// the deterministic marshaller emits for it. Whatever this fast path does
// not handle byte for byte (groups, strings that are not UTF-8, marshal
// errors of message values) goes to the reference, which also produces the
// errors.

// fastCodec switches the fast paths on; tests switch it off to compare
// them with the reference.
var fastCodec = true

// appendRegister encodes the register value of v at r (a map entry when key
// is valid), exactly as encodeRegister does.
func (m *Merger) appendRegister(r *regField, key protoreflect.MapKey, v protoreflect.Value) ([]byte, error) {
	if !fastCodec {
		return m.encodeRegister(r.chain, key, v)
	}
	if b, ok := fastRegister(r.chain, key, v); ok {
		return b, nil
	}
	return m.encodeRegister(r.chain, key, v)
}

func fastRegister(chain []protoreflect.FieldDescriptor, key protoreflect.MapKey, v protoreflect.Value) ([]byte, bool) {
	last := chain[len(chain)-1]
	// The size of the innermost field (tag included), then of each
	// enclosing message field from the inside out.
	var inner int
	var entry int // a map entry's body
	switch {
	case last.IsMap():
		ks, ok := valueSize(last.MapKey(), key.Value())
		if !ok {
			return nil, false
		}
		vs, ok := valueSize(last.MapValue(), v)
		if !ok {
			return nil, false
		}
		entry = protowire.SizeTag(1) + ks + protowire.SizeTag(2) + vs
		inner = protowire.SizeTag(last.Number()) + protowire.SizeBytes(entry)
	case !last.HasPresence() && isDefault(last, v):
		inner = 0 // proto3 implicit presence: a zero value is not written
	default:
		s, ok := valueSize(last, v)
		if !ok {
			return nil, false
		}
		inner = protowire.SizeTag(last.Number()) + s
	}
	var sizes [8]int // enclosing messages' body sizes, innermost last
	if len(chain)-1 > len(sizes) {
		return nil, false
	}
	total := inner
	for i := len(chain) - 2; i >= 0; i-- {
		sizes[i] = total
		total = protowire.SizeTag(chain[i].Number()) + protowire.SizeBytes(total)
	}
	b := make([]byte, 0, total)
	for i := range len(chain) - 1 {
		b = protowire.AppendTag(b, chain[i].Number(), protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizes[i]))
	}
	switch {
	case last.IsMap():
		b = protowire.AppendTag(b, last.Number(), protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entry))
		b = appendValue(b, last.MapKey(), 1, key.Value())
		b = appendValue(b, last.MapValue(), 2, v)
	case inner > 0:
		b = appendValue(b, last, last.Number(), v)
	}
	if len(b) != total {
		return nil, false // a message value changed size between Size and Marshal
	}
	return b, true
}

// isDefault reports whether a scalar is the value proto3 does not write for
// a field without presence (-0.0 is written).
func isDefault(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
	switch fd.Kind() {
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
		f := v.Float()
		return f == 0 && !math.Signbit(f)
	}
	return false // messages have presence
}

// valueSize is the size of v's encoding after its tag; ok is false for what
// the fast path leaves to the reference.
func valueSize(fd protoreflect.FieldDescriptor, v protoreflect.Value) (int, bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return 1, true
	case protoreflect.EnumKind:
		return protowire.SizeVarint(uint64(int64(v.Enum()))), true
	case protoreflect.Int32Kind, protoreflect.Int64Kind:
		return protowire.SizeVarint(uint64(v.Int())), true
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		return protowire.SizeVarint(protowire.EncodeZigZag(v.Int())), true
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		return protowire.SizeVarint(v.Uint()), true
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return 4, true
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return 8, true
	case protoreflect.StringKind:
		s := v.String()
		if !utf8.ValidString(s) {
			return 0, false // proto3 refuses it; the reference says so
		}
		return protowire.SizeBytes(len(s)), true
	case protoreflect.BytesKind:
		return protowire.SizeBytes(len(v.Bytes())), true
	case protoreflect.MessageKind:
		return protowire.SizeBytes(marshalOpts.Size(v.Message().Interface())), true
	}
	return 0, false
}

// appendValue appends fd's tag (as field number num) and v; valueSize has
// accepted v.
func appendValue(b []byte, fd protoreflect.FieldDescriptor, num protowire.Number, v protoreflect.Value) []byte {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, protowire.EncodeBool(v.Bool()))
	case protoreflect.EnumKind:
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(int64(v.Enum())))
	case protoreflect.Int32Kind, protoreflect.Int64Kind:
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(v.Int()))
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, protowire.EncodeZigZag(v.Int()))
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, v.Uint())
	case protoreflect.Fixed32Kind:
		b = protowire.AppendTag(b, num, protowire.Fixed32Type)
		return protowire.AppendFixed32(b, uint32(v.Uint()))
	case protoreflect.Sfixed32Kind:
		b = protowire.AppendTag(b, num, protowire.Fixed32Type)
		return protowire.AppendFixed32(b, uint32(v.Int()))
	case protoreflect.FloatKind:
		b = protowire.AppendTag(b, num, protowire.Fixed32Type)
		return protowire.AppendFixed32(b, math.Float32bits(float32(v.Float())))
	case protoreflect.Fixed64Kind:
		b = protowire.AppendTag(b, num, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, v.Uint())
	case protoreflect.Sfixed64Kind:
		b = protowire.AppendTag(b, num, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, uint64(v.Int()))
	case protoreflect.DoubleKind:
		b = protowire.AppendTag(b, num, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(v.Float()))
	case protoreflect.StringKind:
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendString(b, v.String())
	case protoreflect.BytesKind:
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, v.Bytes())
	case protoreflect.MessageKind:
		msg := v.Message().Interface()
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(marshalOpts.Size(msg)))
		out, err := marshalOpts.MarshalAppend(b, msg)
		if err != nil {
			return b[:0] // fails the length check: the reference reports it
		}
		return out
	}
	return b
}

// registerScalar reads the scalar a MAX register holds at chain. canonical
// is false when the bytes are not exactly what appendRegister writes (then
// decodeRegister, the reference, must read them); otherwise ok reports
// whether the register holds the field, as decodeRegister's does.
func registerScalar(chain []protoreflect.FieldDescriptor, b []byte) (v protoreflect.Value, ok, canonical bool) {
	for _, fd := range chain[:len(chain)-1] {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != fd.Number() || typ != protowire.BytesType {
			return v, false, false
		}
		inner, m := protowire.ConsumeBytes(b[n:])
		if m < 0 || n+m != len(b) {
			return v, false, false
		}
		b = inner
	}
	last := chain[len(chain)-1]
	if len(b) == 0 {
		return v, false, true // the field is not set
	}
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != last.Number() {
		return v, false, false
	}
	b = b[n:]
	var x uint64
	switch typ {
	case protowire.VarintType:
		x, n = protowire.ConsumeVarint(b)
	case protowire.Fixed32Type:
		var y uint32
		y, n = protowire.ConsumeFixed32(b)
		x = uint64(y)
	case protowire.Fixed64Type:
		x, n = protowire.ConsumeFixed64(b)
	default:
		return v, false, false
	}
	if n != len(b) {
		return v, false, false
	}
	switch last.Kind() {
	case protoreflect.BoolKind:
		if typ == protowire.VarintType && x <= 1 {
			v = protoreflect.ValueOfBool(x == 1)
		}
	case protoreflect.EnumKind:
		if typ == protowire.VarintType {
			v = protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(x)))
		}
	case protoreflect.Int32Kind:
		if typ == protowire.VarintType {
			v = protoreflect.ValueOfInt32(int32(x))
		}
	case protoreflect.Int64Kind:
		if typ == protowire.VarintType {
			v = protoreflect.ValueOfInt64(int64(x))
		}
	case protoreflect.Sint32Kind:
		if typ == protowire.VarintType {
			v = protoreflect.ValueOfInt32(int32(protowire.DecodeZigZag(x & math.MaxUint32)))
		}
	case protoreflect.Sint64Kind:
		if typ == protowire.VarintType {
			v = protoreflect.ValueOfInt64(protowire.DecodeZigZag(x))
		}
	case protoreflect.Uint32Kind:
		if typ == protowire.VarintType {
			v = protoreflect.ValueOfUint32(uint32(x))
		}
	case protoreflect.Uint64Kind:
		if typ == protowire.VarintType {
			v = protoreflect.ValueOfUint64(x)
		}
	case protoreflect.Fixed32Kind:
		if typ == protowire.Fixed32Type {
			v = protoreflect.ValueOfUint32(uint32(x))
		}
	case protoreflect.Sfixed32Kind:
		if typ == protowire.Fixed32Type {
			v = protoreflect.ValueOfInt32(int32(x))
		}
	case protoreflect.FloatKind:
		if typ == protowire.Fixed32Type {
			v = protoreflect.ValueOfFloat32(math.Float32frombits(uint32(x)))
		}
	case protoreflect.Fixed64Kind:
		if typ == protowire.Fixed64Type {
			v = protoreflect.ValueOfUint64(x)
		}
	case protoreflect.Sfixed64Kind:
		if typ == protowire.Fixed64Type {
			v = protoreflect.ValueOfInt64(int64(x))
		}
	case protoreflect.DoubleKind:
		if typ == protowire.Fixed64Type {
			v = protoreflect.ValueOfFloat64(math.Float64frombits(x))
		}
	}
	if !v.IsValid() {
		return v, false, false
	}
	// A written default of a field without presence reads as unset; leave
	// such (never canonical) bytes to the reference.
	if !last.HasPresence() && isDefault(last, v) {
		return v, false, false
	}
	return v, true, true
}
