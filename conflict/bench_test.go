package conflict

import (
	"math/rand"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// BenchmarkApply applies a stream of random event parts, each to the state
// of its identity, as the projector does; it is the merge cost per event
// against which projection rates can be read.
func BenchmarkApply(b *testing.B) {
	m := newTestMerger(b)
	r := rand.New(rand.NewSource(1))
	evs := withoutErasure(genEvents(r, 2000))
	ps := parts(m, evs)
	states := map[string]*meridianv1.IdentityState{}
	i := 0
	for b.Loop() {
		p := ps[i%len(ps)]
		i++
		s, err := m.Apply(states[p.GetIdentityId()], p)
		if err != nil {
			b.Fatal(err)
		}
		states[p.GetIdentityId()] = s
	}
}

// BenchmarkApplyDecodeEncode adds what the projector does around Apply:
// decode the stored state and the event, encode the new state.
func BenchmarkApplyDecodeEncode(b *testing.B) {
	m := newTestMerger(b)
	r := rand.New(rand.NewSource(1))
	evs := withoutErasure(genEvents(r, 200))
	for _, ev := range evs {
		ev.IdentityId = "id1"
	}
	var st *meridianv1.IdentityState
	for _, ev := range evs {
		var err error
		if st, err = m.Apply(st, ev); err != nil {
			b.Fatal(err)
		}
	}
	stBytes, _ := proto.Marshal(st)
	evBytes, _ := proto.Marshal(evs[len(evs)-1])
	for b.Loop() {
		var s meridianv1.IdentityState
		var ev meridianv1.Event
		if err := proto.Unmarshal(stBytes, &s); err != nil {
			b.Fatal(err)
		}
		if err := proto.Unmarshal(evBytes, &ev); err != nil {
			b.Fatal(err)
		}
		out, err := m.Apply(&s, &ev)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := marshalOpts.Marshal(out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(stBytes)), "state-bytes")
}

func BenchmarkMerge(b *testing.B) {
	m := newTestMerger(b)
	r := rand.New(rand.NewSource(2))
	x := applyByIdentity(b, m, withoutErasure(genEvents(r, 200)))
	y := applyByIdentity(b, m, withoutErasure(genEvents(r, 200)))
	for b.Loop() {
		m.Merge(x["id1"], y["id1"])
	}
}

// withoutErasure replaces erasures, which would shrink states to tombstones
// and make the benchmarks measure nothing.
func withoutErasure(evs []*meridianv1.Event) []*meridianv1.Event {
	for _, ev := range evs {
		if _, ok := ev.GetBody().(*meridianv1.Event_IdentityErased); ok {
			ev.Body = &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: "x"}}
		}
	}
	return evs
}
