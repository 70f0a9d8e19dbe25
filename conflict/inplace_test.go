package conflict

import (
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// applyRun is one way of folding parts into per-identity states.
type applyRun func(m *Merger, s *meridianv1.IdentityState, ev *meridianv1.Event) (*meridianv1.IdentityState, error)

// foldAll folds ps per identity with run and returns the states after every
// step, the errors of the refused parts, and the final states.
func foldAll(m *Merger, ps []*meridianv1.Event, run applyRun) (steps []*meridianv1.IdentityState, errs []error) {
	states := map[string]*meridianv1.IdentityState{}
	for _, p := range ps {
		out, err := run(m, states[p.GetIdentityId()], p)
		errs = append(errs, err)
		if err == nil {
			states[p.GetIdentityId()] = out
		}
		steps = append(steps, proto.Clone(states[p.GetIdentityId()]).(*meridianv1.IdentityState))
	}
	return steps, errs
}

// spoil turns some parts into bad input of every kind Apply refuses midway
// (after the envelope checks), to show that a refused part changes nothing.
func spoil(r *rand.Rand, ps []*meridianv1.Event) []*meridianv1.Event {
	out := make([]*meridianv1.Event, 0, len(ps))
	for _, p := range ps {
		out = append(out, p)
		if r.Intn(8) != 0 {
			continue
		}
		bad := proto.Clone(p).(*meridianv1.Event)
		bad.EventId += "-bad"
		switch r.Intn(4) {
		case 0: // a RESIDENT field in a GLOBAL part, or the other way round
			if bad.Part == meridianv1.Part_PART_GLOBAL {
				bad.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: new("x")}}}
			} else {
				bad.Body = &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: "x"}}
			}
		case 1: // an empty element after a good one
			bad.Part = meridianv1.Part_PART_GLOBAL
			bad.Body = &meridianv1.Event_EmailVerified{EmailVerified: &meridianv1.EmailVerified{}}
		case 2: // a counted event without a sequence, with a register write before it
			bad.Part, bad.Sequence = meridianv1.Part_PART_GLOBAL, 0
			bad.Body = &meridianv1.Event_LoginFailed{LoginFailed: &meridianv1.LoginFailed{AtUnixMs: 99}}
		case 3: // a string that is not UTF-8 in a register
			bad.Part = meridianv1.Part_PART_GLOBAL
			bad.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Locale: new("\xff"), EmailHash: []byte("h")}}}
		}
		out = append(out, bad)
	}
	return out
}

// TestApplyInPlaceMatchesApply: in place, the states after every step, the
// errors and the refusals that change nothing are Apply's, and Effect says
// what changed.
func TestApplyInPlaceMatchesApply(t *testing.T) {
	m := newTestMerger(t)
	for seed := range int64(200) {
		r := rand.New(rand.NewSource(*seed0 + seed))
		evs := genEvents(r, 1+r.Intn(80))
		ps := spoil(r, shuffledWithRepeats(r, parts(m, evs)))
		if seed%4 == 0 {
			ps = append(ps, evs...) // whole events too
		}
		want, wantErrs := foldAll(m, ps, (*Merger).Apply)
		var effects []Effect
		got, gotErrs := foldAll(m, ps, func(m *Merger, s *meridianv1.IdentityState, ev *meridianv1.Event) (*meridianv1.IdentityState, error) {
			before := proto.Clone(s).(*meridianv1.IdentityState)
			out, eff, err := m.ApplyInPlace(s, ev)
			if err != nil && !proto.Equal(s, before) {
				t.Fatalf("seed %d: refused %s but changed the state", seed, ev.GetEventId())
			}
			if err == nil {
				checkEffect(t, fmt.Sprintf("seed %d, %s", seed, ev.GetEventId()), before, out, eff)
			}
			effects = append(effects, eff)
			return out, err
		})
		for i := range ps {
			if (wantErrs[i] == nil) != (gotErrs[i] == nil) || wantErrs[i] != nil && wantErrs[i].Error() != gotErrs[i].Error() {
				t.Fatalf("seed %d, step %d: error %v, Apply's %v", seed, i, gotErrs[i], wantErrs[i])
			}
			if !proto.Equal(got[i], want[i]) {
				t.Fatalf("seed %d, step %d (%s): in place\n%s\nApply\n%s", seed, i, ps[i].GetEventId(), js(got[i]), js(want[i]))
			}
		}
	}
}

var seed0 = seed

func checkEffect(t *testing.T, what string, before, after *meridianv1.IdentityState, eff Effect) {
	t.Helper()
	if changed := !proto.Equal(before, after); eff.Changed != changed {
		t.Fatalf("%s: Effect.Changed = %v, the state changed: %v\nbefore\n%s\nafter\n%s", what, eff.Changed, changed, js(before), js(after))
	}
	if erased := before.GetErased() == nil && after.GetErased() != nil; eff.Erased != erased {
		t.Fatalf("%s: Effect.Erased = %v, became erased: %v", what, eff.Erased, erased)
	}
	removed := false
	if after.GetErased() == nil {
		for _, set := range after.GetSets() {
			var old *meridianv1.SetState
			if i, ok := findByKey(before.GetSets(), set.GetName(), (*meridianv1.SetState).GetName); ok {
				old = before.GetSets()[i]
			}
			for _, e := range set.GetElements() {
				var prev *meridianv1.SetElement
				if j, ok := findElement(old.GetElements(), e.GetKey()); ok {
					prev = old.GetElements()[j]
				}
				removed = removed || e.GetRemoved() != nil && !proto.Equal(prev.GetRemoved(), e.GetRemoved()) ||
					!slices.EqualFunc(prev.GetCuts(), e.GetCuts(), func(x, y *meridianv1.NodeCut) bool { return proto.Equal(x, y) })
			}
		}
	}
	if eff.Removed != removed {
		t.Fatalf("%s: Effect.Removed = %v, a remove cut moved: %v", what, eff.Removed, removed)
	}
}

// TestFastCodecMatchesReference: registers encoded on the wire and MAX
// registers read off it give the states that marshalling and unmarshalling
// Identity messages give, byte for byte.
func TestFastCodecMatchesReference(t *testing.T) {
	m := newTestMerger(t)
	for seed := range int64(100) {
		r := rand.New(rand.NewSource(*seed0 + seed))
		evs := genEvents(r, 1+r.Intn(80))
		ps := spoil(r, shuffledWithRepeats(r, parts(m, evs)))
		ps = append(ps, evs...)
		ps = append(ps, extremeValues(r)...)
		fast, fastErrs := foldAll(m, ps, (*Merger).Apply)
		fastCodec = false
		ref, refErrs := foldAll(m, ps, (*Merger).Apply)
		fastCodec = true
		for i := range ps {
			if (fastErrs[i] == nil) != (refErrs[i] == nil) || fastErrs[i] != nil && fastErrs[i].Error() != refErrs[i].Error() {
				t.Fatalf("seed %d, step %d: error %v, reference %v", seed, i, fastErrs[i], refErrs[i])
			}
			a, _ := marshalOpts.Marshal(fast[i])
			b, _ := marshalOpts.Marshal(ref[i])
			if string(a) != string(b) {
				t.Fatalf("seed %d, step %d (%s): fast\n%s\nreference\n%s", seed, i, ps[i].GetEventId(), js(fast[i]), js(ref[i]))
			}
		}
	}
}

// extremeValues are whole events with values at the edges of their
// encodings: zero, negative and large numbers, empty and long strings,
// empty map values, an enum the schema does not name.
func extremeValues(r *rand.Rand) []*meridianv1.Event {
	ints := []int64{0, 1, -1, 127, 128, 1 << 40, -1 << 62}
	long := string(make([]byte, 200))
	var out []*meridianv1.Event
	for i := range 12 {
		ev := &meridianv1.Event{
			EventId: fmt.Sprintf("x%02d", i), IdentityId: []string{"id1", "id2"}[r.Intn(2)],
			OriginNode: "n9", Hlc: uint64(MakeTimestamp(int64(7+i), 0)), Sequence: uint64(1000 + i),
		}
		switch i % 4 {
		case 0:
			ev.Body = &meridianv1.Event_LoginFailed{LoginFailed: &meridianv1.LoginFailed{AtUnixMs: ints[r.Intn(len(ints))]}}
		case 1:
			ev.Body = &meridianv1.Event_StateChanged{StateChanged: &meridianv1.StateChanged{Status: meridianv1.IdentityStatus([]int32{0, 2, -3, 1000}[r.Intn(4)])}}
		case 2:
			ev.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{
				Name: new(""), Phone: new(long), Metadata: map[string]string{"": "", "k" + long: long},
				Address: &meridianv1.Address{}, EmailHash: []byte{},
			}}}
		case 3:
			ev.Body = &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{HomeRegion: ""}}
		}
		out = append(out, ev)
	}
	return out
}

func TestApplyInPlaceNilEvent(t *testing.T) {
	m := newTestMerger(t)
	if _, _, err := m.ApplyInPlace(nil, nil); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("err = %v, want ErrInvalidEvent", err)
	}
}
