package projector

import (
	"unicode/utf8"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Every batch encodes the state of every identity it touched, so states
// are encoded here directly rather than through proto's generic marshaller:
// byte for byte what stateMarshal produces (fields in number order, proto3
// defaults left out, sequences packed), sizing each message once. States
// holding what this encoder does not handle (unknown fields, from a newer
// build; strings that are not UTF-8, which proto refuses) go to
// stateMarshal.

// IdentityState, Register, Stamp, SetState, SetElement, NodeAdd, NodeCut,
// CounterState and CounterShare field numbers (state.proto).
const (
	fStateID, fStateRegisters, fStateMax, fStateSets, fStateCounters, fStateErased, fStateUpdated = 1, 2, 3, 4, 5, 6, 7
	fRegPath, fRegStamp, fRegValue                                                                = 1, 2, 3
	fStampHLC, fStampNode, fStampEvent                                                            = 1, 2, 3
	fSetName, fSetElements                                                                        = 1, 2
	fElemKey, fElemAdded, fElemValue, fElemRemoved, fElemOthers, fElemCuts                        = 1, 2, 3, 4, 5, 6
	fAddStamp, fAddValue                                                                          = 1, 2
	fCutNode, fCutHLC                                                                             = 1, 2
	fCounterName, fCounterShares                                                                  = 1, 2
	fShareNode, fShareSeqs                                                                        = 1, 2
)

// stateEncoder encodes states; its size list is reused between them.
type stateEncoder struct {
	// Sizes of the nested messages, in the order the encoding meets
	// them; sizing fills them, encoding reads them back (next).
	sizes []int
	next  int
	// trusted skips the checks for unknown fields and UTF-8: for states
	// made of decoded data and the merger's writes only, which cannot
	// hold either (see batch.trusted).
	trusted bool
	ok      bool
}

// encode appends st's encoding to b.
func (e *stateEncoder) encode(b []byte, st *meridianv1.IdentityState) ([]byte, error) {
	e.sizes, e.next, e.ok = e.sizes[:0], 0, st != nil
	if e.ok {
		size := e.state(st)
		if e.ok {
			out := e.appendState(b, st)
			if len(out)-len(b) == size {
				return out, nil
			}
		}
	}
	return stateMarshal.MarshalAppend(b, st)
}

// encodeState encodes an untrusted state.
func encodeState(b []byte, st *meridianv1.IdentityState) ([]byte, error) {
	var e stateEncoder
	return e.encode(b, st)
}

// check notes whether a message (nil: a nil element of a repeated field)
// has unknown fields.
func (e *stateEncoder) check(m proto.Message, isNil bool) {
	if isNil {
		e.ok = false
		return
	}
	if !e.trusted && len(m.ProtoReflect().GetUnknown()) > 0 {
		e.ok = false
	}
}

func (e *stateEncoder) str(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	if !e.trusted && !utf8.ValidString(s) {
		e.ok = false
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

// push reserves the size slot of a message about to be sized.
func (e *stateEncoder) push() int {
	e.sizes = append(e.sizes, 0)
	return len(e.sizes) - 1
}

// The sizers return a message's size and record it (and its nested
// messages') in e.sizes.

func (e *stateEncoder) state(st *meridianv1.IdentityState) int {
	e.check(st, false)
	n := e.str(fStateID, st.GetIdentityId())
	for _, r := range st.GetRegisters() {
		n += msgSize(fStateRegisters, e.register(r))
	}
	for _, r := range st.GetMaxRegisters() {
		n += msgSize(fStateMax, e.register(r))
	}
	for _, s := range st.GetSets() {
		n += msgSize(fStateSets, e.set(s))
	}
	for _, c := range st.GetCounters() {
		n += msgSize(fStateCounters, e.counter(c))
	}
	if s := st.GetErased(); s != nil {
		n += msgSize(fStateErased, e.stamp(s))
	}
	return n + uintSize(fStateUpdated, st.GetUpdatedHlc())
}

func (e *stateEncoder) register(r *meridianv1.Register) int {
	i := e.push()
	e.check(r, r == nil)
	n := e.str(fRegPath, r.GetPath())
	if s := r.GetStamp(); s != nil {
		n += msgSize(fRegStamp, e.stamp(s))
	}
	n += bytesSize(fRegValue, r.GetValue())
	e.sizes[i] = n
	return n
}

func (e *stateEncoder) stamp(s *meridianv1.Stamp) int {
	i := e.push()
	e.check(s, false)
	n := uintSize(fStampHLC, s.GetHlc()) + e.str(fStampNode, s.GetNode()) + e.str(fStampEvent, s.GetEventId())
	e.sizes[i] = n
	return n
}

func (e *stateEncoder) set(s *meridianv1.SetState) int {
	i := e.push()
	e.check(s, s == nil)
	n := e.str(fSetName, s.GetName())
	for _, el := range s.GetElements() {
		n += msgSize(fSetElements, e.element(el))
	}
	e.sizes[i] = n
	return n
}

func (e *stateEncoder) element(el *meridianv1.SetElement) int {
	i := e.push()
	e.check(el, el == nil)
	n := bytesSize(fElemKey, el.GetKey())
	if s := el.GetAdded(); s != nil {
		n += msgSize(fElemAdded, e.stamp(s))
	}
	n += bytesSize(fElemValue, el.GetValue())
	if s := el.GetRemoved(); s != nil {
		n += msgSize(fElemRemoved, e.stamp(s))
	}
	for _, a := range el.GetOtherAdds() {
		j := e.push()
		e.check(a, a == nil)
		m := 0
		if s := a.GetStamp(); s != nil {
			m += msgSize(fAddStamp, e.stamp(s))
		}
		m += bytesSize(fAddValue, a.GetValue())
		e.sizes[j] = m
		n += msgSize(fElemOthers, m)
	}
	for _, c := range el.GetCuts() {
		j := e.push()
		e.check(c, c == nil)
		m := e.str(fCutNode, c.GetNode()) + uintSize(fCutHLC, c.GetHlc())
		e.sizes[j] = m
		n += msgSize(fElemCuts, m)
	}
	e.sizes[i] = n
	return n
}

func (e *stateEncoder) counter(c *meridianv1.CounterState) int {
	i := e.push()
	e.check(c, c == nil)
	n := e.str(fCounterName, c.GetName())
	for _, sh := range c.GetShares() {
		j := e.push()
		e.check(sh, sh == nil)
		m := e.str(fShareNode, sh.GetNode())
		if seqs := sh.GetSequences(); len(seqs) > 0 {
			m += msgSize(fShareSeqs, packedSize(seqs))
		}
		e.sizes[j] = m
		n += msgSize(fCounterShares, m)
	}
	e.sizes[i] = n
	return n
}

func bytesSize(num protowire.Number, b []byte) int {
	if len(b) == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(b))
}

func uintSize(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

// msgSize is the size of a length-delimited field holding size bytes.
func msgSize(num protowire.Number, size int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(size)
}

func packedSize(vs []uint64) int {
	n := 0
	for _, v := range vs {
		n += protowire.SizeVarint(v)
	}
	return n
}

// The encoders, in the order of the sizers.

// open appends the tag and the recorded size of the next nested message.
func (e *stateEncoder) open(b []byte, num protowire.Number) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(e.sizes[e.next]))
	e.next++
	return b
}

func (e *stateEncoder) appendState(b []byte, st *meridianv1.IdentityState) []byte {
	b = appendStrField(b, fStateID, st.GetIdentityId())
	for _, r := range st.GetRegisters() {
		b = e.appendRegister(b, fStateRegisters, r)
	}
	for _, r := range st.GetMaxRegisters() {
		b = e.appendRegister(b, fStateMax, r)
	}
	for _, s := range st.GetSets() {
		b = e.open(b, fStateSets)
		b = appendStrField(b, fSetName, s.GetName())
		for _, el := range s.GetElements() {
			b = e.open(b, fSetElements)
			b = appendBytesField(b, fElemKey, el.GetKey())
			if s := el.GetAdded(); s != nil {
				b = e.appendStamp(b, fElemAdded, s)
			}
			b = appendBytesField(b, fElemValue, el.GetValue())
			if s := el.GetRemoved(); s != nil {
				b = e.appendStamp(b, fElemRemoved, s)
			}
			for _, a := range el.GetOtherAdds() {
				b = e.open(b, fElemOthers)
				if s := a.GetStamp(); s != nil {
					b = e.appendStamp(b, fAddStamp, s)
				}
				b = appendBytesField(b, fAddValue, a.GetValue())
			}
			for _, c := range el.GetCuts() {
				b = e.open(b, fElemCuts)
				b = appendStrField(b, fCutNode, c.GetNode())
				b = appendUintField(b, fCutHLC, c.GetHlc())
			}
		}
	}
	for _, c := range st.GetCounters() {
		b = e.open(b, fStateCounters)
		b = appendStrField(b, fCounterName, c.GetName())
		for _, sh := range c.GetShares() {
			b = e.open(b, fCounterShares)
			b = appendStrField(b, fShareNode, sh.GetNode())
			if seqs := sh.GetSequences(); len(seqs) > 0 {
				b = protowire.AppendTag(b, fShareSeqs, protowire.BytesType)
				b = protowire.AppendVarint(b, uint64(packedSize(seqs)))
				for _, v := range seqs {
					b = protowire.AppendVarint(b, v)
				}
			}
		}
	}
	if s := st.GetErased(); s != nil {
		b = e.appendStamp(b, fStateErased, s)
	}
	return appendUintField(b, fStateUpdated, st.GetUpdatedHlc())
}

func (e *stateEncoder) appendRegister(b []byte, num protowire.Number, r *meridianv1.Register) []byte {
	b = e.open(b, num)
	b = appendStrField(b, fRegPath, r.GetPath())
	if s := r.GetStamp(); s != nil {
		b = e.appendStamp(b, fRegStamp, s)
	}
	return appendBytesField(b, fRegValue, r.GetValue())
}

func (e *stateEncoder) appendStamp(b []byte, num protowire.Number, s *meridianv1.Stamp) []byte {
	b = e.open(b, num)
	b = appendUintField(b, fStampHLC, s.GetHlc())
	b = appendStrField(b, fStampNode, s.GetNode())
	return appendStrField(b, fStampEvent, s.GetEventId())
}

func appendStrField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendUintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}
