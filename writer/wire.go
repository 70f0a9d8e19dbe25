package writer

import (
	"fmt"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Records are encoded directly with protowire: the envelope fields, then the
// body field holding the split bytes. Field numbers are looked up by name in
// the descriptors once, so a renumbered schema fails at start-up, not
// silently.

func fieldNum(m proto.Message, name protoreflect.Name) protowire.Number {
	fd := m.ProtoReflect().Descriptor().Fields().ByName(name)
	if fd == nil {
		panic(fmt.Sprintf("writer: schema: %s has no field %s", m.ProtoReflect().Descriptor().FullName(), name))
	}
	return fd.Number()
}

var (
	evEventID      = fieldNum(&meridianv1.Event{}, "event_id")
	evIdentityID   = fieldNum(&meridianv1.Event{}, "identity_id")
	evOriginRegion = fieldNum(&meridianv1.Event{}, "origin_region")
	evOriginNode   = fieldNum(&meridianv1.Event{}, "origin_node")
	evHLC          = fieldNum(&meridianv1.Event{}, "hlc")
	evZone         = fieldNum(&meridianv1.Event{}, "zone")
	evHomeRegion   = fieldNum(&meridianv1.Event{}, "home_region")
	evPart         = fieldNum(&meridianv1.Event{}, "part")
	evSealed       = fieldNum(&meridianv1.Event{}, "sealed")

	sealedKeyID      = fieldNum(&meridianv1.Sealed{}, "key_id")
	sealedNonce      = fieldNum(&meridianv1.Sealed{}, "nonce")
	sealedCiphertext = fieldNum(&meridianv1.Sealed{}, "ciphertext")

	icHomeRegion   = fieldNum(&meridianv1.IdentityCreated{}, "home_region")
	icTraits       = fieldNum(&meridianv1.IdentityCreated{}, "traits")
	tuTraits       = fieldNum(&meridianv1.TraitsUpdated{}, "traits")
	evEmailHash    = fieldNum(&meridianv1.EmailVerified{}, "email_hash")
	trEmailHash    = fieldNum(&meridianv1.Traits{}, "email_hash")
	trUsernameHash = fieldNum(&meridianv1.Traits{}, "username_hash")
	lfAtUnixMs     = fieldNum(&meridianv1.LoginFailed{}, "at_unix_ms")
	lfCounted      = fieldNum(&meridianv1.LoginFailed{}, "counted")
)

// envelopeFields marks Event's field numbers outside the body oneof.
var envelopeFields = func() []bool {
	fields := (&meridianv1.Event{}).ProtoReflect().Descriptor().Fields()
	var known []bool
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.ContainingOneof() != nil {
			continue
		}
		for int(fd.Number()) >= len(known) {
			known = append(known, false)
		}
		known[fd.Number()] = true
	}
	return known
}()

// envelope is what the writer stamps on every record of one event.
type envelope struct {
	eventID, identityID, originRegion, originNode, zone, homeRegion string
	hlc                                                             uint64
	observed                                                        []byte // encoded Event.observed, tag included (observed.go)
}

// encodedSize is the exact length appendEnvelope writes for part.
func (e *envelope) encodedSize(part meridianv1.Part) int {
	return sizeString(evEventID, e.eventID) + sizeString(evIdentityID, e.identityID) +
		sizeString(evOriginRegion, e.originRegion) + sizeString(evOriginNode, e.originNode) +
		sizeVarintField(evHLC, e.hlc) + sizeString(evZone, e.zone) + sizeString(evHomeRegion, e.homeRegion) +
		sizeVarintField(evPart, uint64(part)) + len(e.observed)
}

func sizeString(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func sizeVarintField(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// appendEnvelope writes the envelope fields in field-number order, as
// proto.Marshal would, then the causal context, if any.
func appendEnvelope(b []byte, e *envelope, part meridianv1.Part) []byte {
	b = appendString(b, evEventID, e.eventID)
	b = appendString(b, evIdentityID, e.identityID)
	b = appendString(b, evOriginRegion, e.originRegion)
	b = appendString(b, evOriginNode, e.originNode)
	b = appendVarintField(b, evHLC, e.hlc)
	b = appendString(b, evZone, e.zone)
	b = appendString(b, evHomeRegion, e.homeRegion)
	b = appendVarintField(b, evPart, uint64(part))
	return append(b, e.observed...) // out of number order in a RESIDENT part (before sealed), which decoders accept
}

// appendBody writes the body oneof field num holding content... (the parts
// concatenated: split output, then writer-derived fields, which protobuf
// merges into the same message).
func appendBody(b []byte, num protowire.Number, content ...[]byte) []byte {
	n := 0
	for _, c := range content {
		n += len(c)
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	for _, c := range content {
		b = append(b, c...)
	}
	return b
}

// appendSealed writes Event.sealed.
func appendSealed(b []byte, s *meridianv1.Sealed) []byte {
	n := protowire.SizeTag(sealedKeyID) + protowire.SizeBytes(len(s.KeyId)) +
		protowire.SizeTag(sealedNonce) + protowire.SizeBytes(len(s.Nonce)) +
		protowire.SizeTag(sealedCiphertext) + protowire.SizeBytes(len(s.Ciphertext))
	b = protowire.AppendTag(b, evSealed, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = protowire.AppendTag(b, sealedKeyID, protowire.BytesType)
	b = protowire.AppendString(b, s.KeyId)
	b = appendBytesField(b, sealedNonce, s.Nonce)
	return appendBytesField(b, sealedCiphertext, s.Ciphertext)
}

// bodyBytes finds the body oneof field in an encoded Event and returns its
// number and content. unknown is the first field number that is neither an
// envelope field nor a body type.
func bodyBytes(enc []byte, plans bodyPlans) (num protowire.Number, body []byte, unknown protowire.Number, ok bool) {
	for len(enc) > 0 {
		n, typ, tl := protowire.ConsumeTag(enc)
		if tl < 0 {
			return 0, nil, 0, false
		}
		vl := protowire.ConsumeFieldValue(n, typ, enc[tl:])
		if vl < 0 {
			return 0, nil, 0, false
		}
		switch {
		case plans.of(n) != nil:
			if typ != protowire.BytesType {
				return 0, nil, 0, false
			}
			num, body = n, enc[tl:tl+vl]
			body, _ = protowire.ConsumeBytes(body)
		case int(n) < len(envelopeFields) && envelopeFields[n]:
		default:
			if unknown == 0 {
				unknown = n
			}
		}
		enc = enc[tl+vl:]
	}
	return num, body, unknown, true
}
