package conflict

import (
	"errors"
	"math/rand"
	"slices"
	"testing"
	"testing/quick"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// randomContexts gives every remove a random causal context, or none: per
// node nothing, or an HLC from the range the events use, so that contexts
// are stale, exact or ahead of what the stamp order says. The stamp-order
// fold is no reference then; the OR-set specification is.
func randomContexts(r *rand.Rand, evs []*meridianv1.Event) {
	for _, ev := range evs {
		if !isRemove(ev) {
			continue
		}
		ev.Observed = nil
		if r.Intn(4) == 0 {
			continue
		}
		ctx := map[string]uint64{}
		for _, n := range testNodes {
			if r.Intn(3) != 0 {
				ctx[n] = uint64(MakeTimestamp(int64(r.Intn(7)), uint16(r.Intn(2))))
			}
		}
		ev.Observed = &meridianv1.CausalContext{Hlc: ctx}
	}
}

// specRemoves reports whether the remove rm removes the add a by the OR-set
// specification (see removes in laws_test.go).
func specRemoves(rm, a *meridianv1.Event) bool {
	rs, as := stampOf(rm), stampOf(a)
	if rm.GetObserved() == nil {
		return as.Compare(rs) <= 0
	}
	cut := Timestamp(rm.GetObserved().GetHlc()[as.Node])
	if as.Node == rs.Node {
		cut = rs.HLC
	}
	return as.HLC <= cut
}

// specSets computes the roles and credentials of identity id from its
// events by the OR-set specification: an element is present iff one of its
// adds is removed by none of its removes; a credential is the one the
// newest such add wrote.
func specSets(evs []*meridianv1.Event, id string) (roles []string, creds []*meridianv1.Credential) {
	type op struct {
		ev  *meridianv1.Event
		add bool
	}
	roleOps, credOps := map[string][]op{}, map[string][]op{}
	for _, ev := range evs {
		if ev.GetIdentityId() != id {
			continue
		}
		switch b := ev.GetBody().(type) {
		case *meridianv1.Event_RoleGranted:
			roleOps[b.RoleGranted.GetRole()] = append(roleOps[b.RoleGranted.GetRole()], op{ev, true})
		case *meridianv1.Event_RoleRevoked:
			roleOps[b.RoleRevoked.GetRole()] = append(roleOps[b.RoleRevoked.GetRole()], op{ev, false})
		case *meridianv1.Event_CredentialAdded:
			k := b.CredentialAdded.GetCredential().GetCredentialId()
			credOps[k] = append(credOps[k], op{ev, true})
		case *meridianv1.Event_CredentialRemoved:
			k := b.CredentialRemoved.GetCredentialId()
			credOps[k] = append(credOps[k], op{ev, false})
		}
	}
	// newest returns the newest surviving add of ops, or nil.
	newest := func(ops []op) *meridianv1.Event {
		var best *meridianv1.Event
		for _, a := range ops {
			if !a.add {
				continue
			}
			live := true
			for _, rm := range ops {
				live = live && (rm.add || !specRemoves(rm.ev, a.ev))
			}
			if live && (best == nil || stampOf(a.ev).Compare(stampOf(best)) > 0) {
				best = a.ev
			}
		}
		return best
	}
	for _, k := range slices.Sorted(mapsKeys(roleOps)) {
		if newest(roleOps[k]) != nil {
			roles = append(roles, k)
		}
	}
	for _, k := range slices.Sorted(mapsKeys(credOps)) {
		if a := newest(credOps[k]); a != nil {
			creds = append(creds, a.GetCredentialAdded().GetCredential())
		}
	}
	return roles, creds
}

// TestMergerORSetSpec: with removes carrying random causal contexts (or
// none), every way of applying and merging the parts views the roles and
// credentials the OR-set specification gives, and everything else as the
// stamp-order fold.
func TestMergerORSetSpec(t *testing.T) {
	m := newTestMerger(t)
	withCtx := 0
	f := func(seed int64) bool {
		r := rand.New(rand.NewSource(seed))
		evs := genEvents(r, 1+r.Intn(60))
		randomContexts(r, evs)
		for _, ev := range evs {
			if ev.GetObserved() != nil {
				withCtx++
			}
		}
		w := applyEveryWay(t, m, r, evs)
		global, resident, all, whole, reps := w.global, w.resident, w.all, w.whole, w.reps
		for id, st := range all {
			want := referenceView(evs, id)
			if !want.GetErased() {
				want.Roles, want.Credentials = specSets(evs, id)
			}
			joined := m.Merge(m.Merge(reps[2][id], reps[0][id]), reps[1][id])
			checks := []struct {
				name      string
				got, want proto.Message
			}{
				{"view of all parts", m.View(st), want},
				{"view(global, resident)", m.View(global[id], resident[id]), want},
				{"view(global, pruned resident)", m.View(global[id], m.Prune(resident[id], global[id])), want},
				{"view of whole events", m.View(whole[id]), want},
				{"merged partitions equal applying all", joined, st},
				{"merge(global, resident) equals applying all", m.Merge(global[id], resident[id]), st},
			}
			for _, ch := range checks {
				if !proto.Equal(ch.got, ch.want) {
					t.Logf("seed %d identity %s: %s\ngot  %s\nwant %s", seed, id, ch.name, js(ch.got), js(ch.want))
					return false
				}
			}
		}
		return true
	}
	n := 150
	if testing.Short() {
		n = 25
	}
	if err := quick.Check(f, quickConfig(n)); err != nil {
		t.Fatal(err)
	}
	if withCtx == 0 {
		t.Fatal("no remove carried a context")
	}
}

// TestApplyRefusesBadContext: a causal context naming an empty node id is
// refused with an error naming the field, and changes nothing.
func TestApplyRefusesBadContext(t *testing.T) {
	m := newTestMerger(t)
	s := mustApply(t, m, nil, evt("n1", 5, "g", 1, &meridianv1.RoleGranted{Role: "admin"}))
	bad := evt("n2", 9, "r", 1, &meridianv1.RoleRevoked{Role: "admin"})
	bad.Observed = &meridianv1.CausalContext{Hlc: map[string]uint64{"": 7, "n1": 3}}
	before := proto.Clone(s)
	for name, apply := range map[string]func() error{
		"Apply":        func() error { _, err := m.Apply(s, bad); return err },
		"ApplyInPlace": func() error { _, _, err := m.ApplyInPlace(s, bad); return err },
	} {
		err := apply()
		var ee *EventError
		if !errors.As(err, &ee) || ee.Field != "observed.hlc" {
			t.Fatalf("%s: error %v, want an *EventError naming observed.hlc", name, err)
		}
		if !proto.Equal(s, before) {
			t.Fatalf("%s: a refused event changed the state", name)
		}
	}
}
