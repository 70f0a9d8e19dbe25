package tests

import (
	"cmp"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/conflict"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// referenceView is the naive fold of issue 4: every part of one identity
// found in the regions' logs, sorted by the total order (HLC, origin node,
// event id) and applied one by one to empty states. RESIDENT parts are
// unsealed with keys (a zone region's key store, which holds every key of
// its zone's identities); with keys nil only the GLOBAL parts are folded.
func referenceView(t *testing.T, logs map[string][]record, id string, keys *keystore.Store) *meridianv1.Identity {
	t.Helper()
	m, err := conflict.NewMerger()
	if err != nil {
		t.Fatal(err)
	}
	var parts []*meridianv1.Event
	for _, recs := range logs {
		for _, rec := range recs {
			ev := rec.Event
			if ev.GetIdentityId() != id || ev.GetDataKey() != nil {
				continue
			}
			switch ev.GetPart() {
			case meridianv1.Part_PART_GLOBAL:
				parts = append(parts, ev)
			case meridianv1.Part_PART_RESIDENT:
				if keys == nil {
					continue
				}
				sealed := ev.GetSealed()
				k, err := keys.Get(id, sealed.GetKeyId())
				if err != nil {
					t.Fatalf("reference fold: key %s of %s: %v", sealed.GetKeyId(), id, err)
				}
				pt, err := keystore.Unseal(k.Material, sealed, ev.GetEventId()+":r")
				if err != nil {
					t.Fatalf("reference fold: unseal %s: %v", ev.GetEventId(), err)
				}
				plain := &meridianv1.Event{}
				if err := proto.Unmarshal(pt, plain); err != nil {
					t.Fatal(err)
				}
				plain.EventId, plain.IdentityId, plain.OriginRegion, plain.OriginNode = ev.EventId, ev.IdentityId, ev.OriginRegion, ev.OriginNode
				plain.Sequence, plain.Hlc, plain.Zone, plain.HomeRegion, plain.Part = ev.Sequence, ev.Hlc, ev.Zone, ev.HomeRegion, meridianv1.Part_PART_RESIDENT
				plain.Observed = ev.Observed // as the projector does: the causal context is the outer record's
				parts = append(parts, plain)
			}
		}
	}
	slices.SortFunc(parts, func(a, b *meridianv1.Event) int {
		return cmp.Or(cmp.Compare(a.GetHlc(), b.GetHlc()), cmp.Compare(a.GetOriginNode(), b.GetOriginNode()),
			cmp.Compare(a.GetEventId(), b.GetEventId()), cmp.Compare(a.GetPart(), b.GetPart()))
	})
	global, resident := &meridianv1.IdentityState{}, &meridianv1.IdentityState{}
	for _, ev := range parts {
		st := &global
		if ev.GetPart() == meridianv1.Part_PART_RESIDENT {
			if m.Erased(global) {
				continue // the projector drops resident parts of an erased identity
			}
			st = &resident
		}
		next, err := m.Apply(*st, ev)
		if err != nil {
			t.Fatalf("reference fold: apply %s (%s): %v", ev.GetEventId(), ev.GetPart(), err)
		}
		*st = next
	}
	return m.View(global, resident)
}

// responseView is what GET /v1/identities/{id} serves of a view: credential
// material never leaves the node.
func responseView(ident *meridianv1.Identity) *meridianv1.Identity {
	v := proto.CloneOf(ident)
	for _, c := range v.GetCredentials() {
		c.Material = nil
	}
	return v
}
