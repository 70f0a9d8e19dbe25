package conflict

import (
	"math/rand"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzDecodeApply feeds arbitrary bytes to the decoder and the merger, as a
// projector would receive them from a stream and a read model: an Event and a
// stored IdentityState. Nothing may panic; an error returns no state; a
// successful Apply to a fresh state is idempotent; and the state it returns
// views and merges.
func FuzzDecodeApply(f *testing.F) {
	m := newTestMerger(f)
	r := rand.New(rand.NewSource(1))
	evs := genEvents(r, 40)
	states := applyByIdentity(f, m, evs)
	stateBytes, _ := proto.Marshal(states["id1"])
	// Removes with random causal contexts (Event.observed) too.
	ctxEvs := genEvents(r, 40)
	randomContexts(r, ctxEvs)
	for _, ev := range append(append(evs, parts(m, evs)...), ctxEvs...) {
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, stateBytes)
		f.Add(b, []byte(nil))
	}
	for _, body := range []proto.Message{&meridianv1.Heartbeat{SentAtUnixMs: 1}, &meridianv1.DataKey{KeyId: "k"}} {
		b, _ := proto.Marshal(evt("n1", 1, "e", 1, body))
		f.Add(b, stateBytes)
	}
	f.Add([]byte{0xa2, 0x01, 0x00}, []byte{0x0a, 0x03, 'i', 'd', '1'})     // empty identity_created
	f.Add([]byte{0xfa, 0x06, 0x00}, []byte{0x12, 0x02, 0x0a, 0x00})        // unknown body field; empty register
	f.Add([]byte("\x0a\x01e\x12\x03id1"), []byte("\x22\x05\x0a\x03roles")) // envelope only; set without elements

	f.Fuzz(func(t *testing.T, evBytes, stBytes []byte) {
		var ev meridianv1.Event
		if proto.Unmarshal(evBytes, &ev) != nil {
			return
		}
		var st *meridianv1.IdentityState
		if len(stBytes) > 0 {
			st = &meridianv1.IdentityState{}
			if proto.Unmarshal(stBytes, st) != nil {
				st = nil
			}
		}
		for _, base := range []*meridianv1.IdentityState{nil, st} {
			before := proto.Clone(base)
			out, err := m.Apply(base, &ev)
			if !proto.Equal(base, before) {
				t.Fatal("Apply modified its input state")
			}
			if err != nil {
				if out != nil {
					t.Fatalf("state returned with error %v", err)
				}
				continue
			}
			m.View(out, base)
			m.Prune(out, base)
			m.Merge(base, out)
			m.Erased(out)
			if base == nil {
				again, err := m.Apply(out, &ev)
				if err != nil || !proto.Equal(again, out) {
					t.Fatalf("Apply is not idempotent: %v", err)
				}
				if !proto.Equal(m.Merge(out, out), out) {
					t.Fatal("Merge is not idempotent")
				}
			}
		}
	})
}
