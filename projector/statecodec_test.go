package projector

import (
	"bytes"
	"math/rand"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
)

// randomState makes states with every field of every message either unset,
// zero, or set, so that the encoder meets each default it must leave out.
func randomState(r *rand.Rand) *meridianv1.IdentityState {
	str := func() string {
		return []string{"", "a", "traits.name", "0193a6c2-0000-7000-8000-000000000001", string(make([]byte, 200))}[r.Intn(5)]
	}
	byt := func() []byte {
		switch r.Intn(4) {
		case 0:
			return nil
		case 1:
			return []byte{}
		}
		b := make([]byte, r.Intn(300))
		r.Read(b)
		return b
	}
	num := func() uint64 { return []uint64{0, 1, 127, 128, 1 << 40, 1<<64 - 1}[r.Intn(6)] }
	stamp := func() *meridianv1.Stamp {
		if r.Intn(4) == 0 {
			return nil
		}
		return &meridianv1.Stamp{Hlc: num(), Node: str(), EventId: str()}
	}
	regs := func() []*meridianv1.Register {
		var out []*meridianv1.Register
		for range r.Intn(4) {
			out = append(out, &meridianv1.Register{Path: str(), Stamp: stamp(), Value: byt()})
		}
		return out
	}
	st := &meridianv1.IdentityState{IdentityId: str(), Registers: regs(), MaxRegisters: regs(), Erased: stamp(), UpdatedHlc: num()}
	for range r.Intn(3) {
		set := &meridianv1.SetState{Name: str()}
		for range r.Intn(4) {
			el := &meridianv1.SetElement{Key: byt(), Added: stamp(), Value: byt(), Removed: stamp()}
			for range r.Intn(3) {
				el.OtherAdds = append(el.OtherAdds, &meridianv1.NodeAdd{Stamp: stamp(), Value: byt()})
			}
			for range r.Intn(3) {
				el.Cuts = append(el.Cuts, &meridianv1.NodeCut{Node: str(), Hlc: num()})
			}
			set.Elements = append(set.Elements, el)
		}
		st.Sets = append(st.Sets, set)
	}
	for range r.Intn(3) {
		c := &meridianv1.CounterState{Name: str()}
		for range r.Intn(3) {
			sh := &meridianv1.CounterShare{Node: str()}
			for range r.Intn(5) {
				sh.Sequences = append(sh.Sequences, num())
			}
			c.Shares = append(c.Shares, sh)
		}
		st.Counters = append(st.Counters, c)
	}
	return st
}

// The state encoder writes what proto's deterministic marshaller writes,
// and leaves what it cannot encode the same to it.
func TestEncodeStateMatchesProto(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := range 5000 {
		st := randomState(r)
		switch i % 50 {
		case 1: // unknown fields (a newer build's)
			st.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7))
		case 2: // not UTF-8: proto refuses it, and so must encodeState
			st.IdentityId = "\xff"
		}
		want, wantErr := stateMarshal.Marshal(st)
		got, err := encodeState([]byte("prefix"), st)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("state %d: err %v, proto's %v", i, err, wantErr)
		}
		if err == nil && !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("state %d: encoding differs from proto's:\n got %x\nwant prefix+%x", i, got, want)
		}
		// States the batch trusts (nothing foreign in them) skip the
		// checks and encode the same.
		if f := foreign(st); f != (i%50 == 1 || i%50 == 2) {
			t.Fatalf("state %d: foreign = %v", i, f)
		} else if !f {
			e := stateEncoder{trusted: true}
			if got, err := e.encode(nil, st); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("state %d: trusted encoding %x, %v; want %x", i, got, err, want)
			}
		}
	}
}
