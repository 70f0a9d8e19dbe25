package projector

import (
	"sync"
	"unicode/utf8"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Every inbox message is an Event to decode, and a RESIDENT part's
// plaintext another, so the envelope is read straight off the wire into a
// recycled Event: the few distinct regions, nodes and zones are interned,
// the sealed part's nonce and ciphertext alias the record's bytes, and only
// the body goes through proto. The result is what proto.Unmarshal makes of
// the bytes; anything this reader does not handle exactly (a field twice,
// an unknown field, a wire type or string proto would refuse) is left to
// proto.Unmarshal, which also makes the errors.

// decoded is a recycled Event with room for its Sealed.
type decoded struct {
	ev     meridianv1.Event
	sealed meridianv1.Sealed
}

var decodedPool = sync.Pool{New: func() any { return new(decoded) }}

// getDecoded returns a decoded to release once nothing refers to its
// event any more (the states keep only strings and copies).
func getDecoded() *decoded { return decodedPool.Get().(*decoded) }

func (d *decoded) release() {
	d.ev.Reset()
	d.sealed.Reset()
	decodedPool.Put(d)
}

// Event field numbers (events.proto).
const (
	fEventID, fIdentityID, fOriginRegion, fOriginNode, fSequence, fHLC, fZone, fHomeRegion, fPart, fSealed = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
	fObserved                                                                                              = 11
	fSealedKeyID, fSealedNonce, fSealedCiphertext                                                          = 1, 2, 3
)

// isBody tells the body oneof's field numbers (all below 64).
var isBody = func() (is [64]bool) {
	fields := bodyOneof.Fields()
	for i := range fields.Len() {
		if n := fields.Get(i).Number(); n < 64 {
			is[n] = true
		}
	}
	return is
}()

// decode reads b (which it may alias: the caller keeps b unchanged while
// the event is in use) into d.ev.
func (d *decoded) decode(b []byte, in *interner) error {
	if d.fast(b, in) {
		return nil
	}
	d.ev.Reset()
	d.sealed.Reset()
	return unmarshalOpts.Unmarshal(b, &d.ev)
}

// fast decodes b if it holds nothing fast cannot read exactly.
func (d *decoded) fast(b []byte, in *interner) bool {
	ev := &d.ev
	ev.Reset()
	var seen uint64     // envelope fields met (bit per field number)
	var body []byte     // the body field, tag included
	var observed []byte // the causal context field, tag included
	for len(b) > 0 {
		field := b
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num < 64 && seen&(1<<num) != 0 {
			return false // bad tag, or a field twice (proto would merge)
		}
		if num < 64 {
			seen |= 1 << num
		}
		b = b[n:]
		switch {
		case num <= fHomeRegion && num != fSequence && num != fHLC || num == fSealed:
			if typ != protowire.BytesType {
				return false
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			var ok bool
			switch num {
			case fEventID:
				ev.EventId, ok = str(v)
			case fIdentityID:
				ev.IdentityId, ok = str(v)
			case fOriginRegion:
				ev.OriginRegion, ok = in.str(v)
			case fOriginNode:
				ev.OriginNode, ok = in.str(v)
			case fZone:
				ev.Zone, ok = in.str(v)
			case fHomeRegion:
				ev.HomeRegion, ok = in.str(v)
			case fSealed:
				ok = d.fastSealed(v)
				ev.Sealed = &d.sealed
			}
			if !ok {
				return false
			}
		case num == fSequence || num == fHLC || num == fPart:
			if typ != protowire.VarintType {
				return false
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case fSequence:
				ev.Sequence = v
			case fHLC:
				ev.Hlc = v
			case fPart:
				ev.Part = meridianv1.Part(int32(v))
			}
		case num == fObserved:
			if typ != protowire.BytesType {
				return false
			}
			_, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return false
			}
			observed, b = field[:n+m], b[m:]
		default:
			if num >= 64 || !isBody[num] || body != nil || typ != protowire.BytesType {
				return false // unknown field, or a second body
			}
			_, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return false
			}
			body, b = field[:n+m], b[m:]
		}
	}
	// The body and the causal context are proto's to read (merged into the
	// envelope read so far).
	if observed != nil && bodyMerge.Unmarshal(observed, ev) != nil {
		return false
	}
	if body == nil {
		return true
	}
	if fastBody(body, ev) {
		return true
	}
	ev.Body = nil // a fast read given up half way leaves nothing behind
	return bodyMerge.Unmarshal(body, ev) == nil
}

// Body field numbers (events.proto) of the bodies fastBody reads, and of
// their fields.
const (
	fIdentityCreated, fTraitsUpdated      = 20, 21
	fCreatedHomeRegion, fCreatedTraits    = 1, 2
	fUpdatedTraits                        = 1
	fTraitsEmailHash, fTraitsUsernameHash = 7, 8
)

// fastBody reads the bodies of most records (a new identity, changed
// traits) off the wire when they hold nothing but the traits' strings and
// hashes: no field twice, no unknown field, no metadata map or address
// (those, and every other body, go to proto). field is the body's tag
// and bytes.
func fastBody(field []byte, ev *meridianv1.Event) bool {
	num, typ, n := protowire.ConsumeTag(field)
	if n < 0 || typ != protowire.BytesType {
		return false
	}
	v, m := protowire.ConsumeBytes(field[n:])
	if m < 0 {
		return false
	}
	var seen uint8
	var traits []byte
	switch num {
	case fTraitsUpdated:
		tu := &meridianv1.TraitsUpdated{}
		for len(v) > 0 {
			f, fv, rest, ok := nextBytesField(v, &seen)
			if !ok || f != fUpdatedTraits {
				return false
			}
			traits, v = fv, rest
			if tu.Traits, ok = fastTraits(traits); !ok {
				return false
			}
		}
		ev.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: tu}
	case fIdentityCreated:
		ic := &meridianv1.IdentityCreated{}
		for len(v) > 0 {
			f, fv, rest, ok := nextBytesField(v, &seen)
			if !ok {
				return false
			}
			v = rest
			switch f {
			case fCreatedHomeRegion:
				if ic.HomeRegion, ok = str(fv); !ok {
					return false
				}
			case fCreatedTraits:
				if ic.Traits, ok = fastTraits(fv); !ok {
					return false
				}
			default:
				return false
			}
		}
		ev.Body = &meridianv1.Event_IdentityCreated{IdentityCreated: ic}
	default:
		return false
	}
	return true
}

// nextBytesField reads a length-delimited field numbered below 8 that
// seen has not seen yet.
func nextBytesField(b []byte, seen *uint8) (num protowire.Number, v, rest []byte, ok bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || typ != protowire.BytesType || num < 1 || num > 7 && num != fTraitsUsernameHash || num < 8 && *seen&(1<<num) != 0 {
		return 0, nil, nil, false
	}
	if num < 8 {
		*seen |= 1 << num
	}
	v, m := protowire.ConsumeBytes(b[n:])
	if m < 0 {
		return 0, nil, nil, false
	}
	return num, v, b[n+m:], true
}

// fastTraits reads Traits holding only optional strings (email, username,
// name, phone, locale) and hashes, each at most once.
func fastTraits(b []byte) (*meridianv1.Traits, bool) {
	t := &meridianv1.Traits{}
	var seen uint8
	var usernameHashSeen bool
	for len(b) > 0 {
		num, v, rest, ok := nextBytesField(b, &seen)
		if !ok {
			return nil, false
		}
		b = rest
		switch num {
		case 1, 2, 3, 4, 5:
			s, ok := str(v)
			if !ok {
				return nil, false
			}
			switch num {
			case 1:
				t.Email = &s
			case 2:
				t.Username = &s
			case 3:
				t.Name = &s
			case 4:
				t.Phone = &s
			case 5:
				t.Locale = &s
			}
		case fTraitsEmailHash:
			t.EmailHash = append([]byte{}, v...)
		case fTraitsUsernameHash:
			if usernameHashSeen {
				return nil, false
			}
			usernameHashSeen = true
			t.UsernameHash = append([]byte{}, v...)
		default:
			return nil, false // metadata, address: proto's
		}
	}
	return t, true
}

var bodyMerge = proto.UnmarshalOptions{Merge: true}

// fastSealed reads a Sealed into d.sealed, its bytes aliasing b.
func (d *decoded) fastSealed(b []byte) bool {
	s := &d.sealed
	s.Reset()
	var seen uint8
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType || num < fSealedKeyID || num > fSealedCiphertext || seen&(1<<num) != 0 {
			return false
		}
		seen |= 1 << num
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return false
		}
		b = b[n+m:]
		switch num {
		case fSealedKeyID:
			var ok bool
			if s.KeyId, ok = str(v); !ok {
				return false
			}
		case fSealedNonce:
			s.Nonce = nonEmpty(v)
		case fSealedCiphertext:
			s.Ciphertext = nonEmpty(v)
		}
	}
	return true
}

// nonEmpty is v as proto keeps a proto3 bytes field: nil when empty.
func nonEmpty(v []byte) []byte {
	if len(v) == 0 {
		return nil
	}
	return v[:len(v):len(v)]
}

// str copies a proto3 string, which must be UTF-8.
func str(v []byte) (string, bool) {
	if !utf8.Valid(v) {
		return "", false
	}
	return string(v), true
}

// interner shares the strings of the envelope fields that take few
// distinct values (regions, nodes, zones) between the events of a batch.
type interner struct {
	m map[string]string
}

// maxInterned bounds what hostile input can make an interner hold.
const maxInterned = 256

// str is str(v), shared; a nil interner shares nothing.
func (in *interner) str(v []byte) (string, bool) {
	if in == nil {
		return str(v)
	}
	if s, ok := in.m[string(v)]; ok {
		return s, true
	}
	s, ok := str(v)
	if ok && len(in.m) < maxInterned {
		if in.m == nil {
			in.m = make(map[string]string)
		}
		in.m[s] = s
	}
	return s, ok
}
