package conflict

import (
	"fmt"
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

// BenchmarkApplyInPlace is BenchmarkApply with ApplyInPlace, as the
// projector applies a batch to the states it owns.
func BenchmarkApplyInPlace(b *testing.B) {
	m := newTestMerger(b)
	r := rand.New(rand.NewSource(1))
	evs := withoutErasure(genEvents(r, 2000))
	ps := parts(m, evs)
	states := map[string]*meridianv1.IdentityState{}
	i := 0
	for b.Loop() {
		p := ps[i%len(ps)]
		i++
		s, _, err := m.ApplyInPlace(states[p.GetIdentityId()], p)
		if err != nil {
			b.Fatal(err)
		}
		states[p.GetIdentityId()] = s
	}
}

// BenchmarkApplyTraitsUpdates applies, in place, what meridian bench's
// replay applies: the GLOBAL and the RESIDENT part of trait updates (a long
// locale, a long name) to 1500 identities in turn.
func BenchmarkApplyTraitsUpdates(b *testing.B) {
	m := newTestMerger(b)
	const ids = 1500
	states := make([]*meridianv1.IdentityState, ids)
	var evs []*meridianv1.Event
	for i := range 20 {
		for j := range ids {
			g := &meridianv1.Event{
				EventId: fmt.Sprintf("0193a6c2-0000-7000-8001-%012d", i*ids+j), IdentityId: fmt.Sprintf("0193a6c2-0000-7000-8000-%012d", j),
				OriginNode: "eu-west-n1", Hlc: uint64(MakeTimestamp(int64(1000+i), 0)), Sequence: uint64(2*(i*ids+j) + 1), Part: meridianv1.Part_PART_GLOBAL,
				Body: &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Locale: new(fmt.Sprintf("de-DE-%0200d", i))}}},
			}
			r := proto.CloneOf(g)
			r.Sequence, r.Part = g.Sequence+1, meridianv1.Part_PART_RESIDENT
			r.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: new(fmt.Sprintf("Name %0200d", i))}}}
			evs = append(evs, g, r)
		}
	}
	i := 0
	for b.Loop() {
		k := (i / 2) % ids
		s, _, err := m.ApplyInPlace(states[k], evs[i%len(evs)])
		if err != nil {
			b.Fatal(err)
		}
		states[k] = s
		i++
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
