package writer_test

import (
	"context"
	"maps"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
)

func roleRevoked(identity, home, role string) *meridianv1.Event {
	return &meridianv1.Event{
		IdentityId: identity,
		HomeRegion: home,
		Body:       &meridianv1.Event_RoleRevoked{RoleRevoked: &meridianv1.RoleRevoked{Role: role}},
	}
}

// TestObservedOnRemoves: events that remove set elements carry the region's
// causal context from Config.Observed (without empty node ids or zero
// HLCs); other events carry none.
func TestObservedOnRemoves(t *testing.T) {
	seen := map[string]uint64{"us-east-n1": 42, "eu-west-n1": 7, "": 9, "idle": 0}
	e := newEnv(t, "eu-west", func(c *writer.Config) {
		c.Observed = func() map[string]uint64 { return maps.Clone(seen) }
	})
	id := newIdentity()
	cred := &meridianv1.Event{IdentityId: id, HomeRegion: "eu-west",
		Body: &meridianv1.Event_CredentialRemoved{CredentialRemoved: &meridianv1.CredentialRemoved{CredentialId: "c1"}}}
	if _, err := e.w.Append(context.Background(), created(id, "eu-west", &meridianv1.Traits{Name: ptr("Ann")}),
		roleGranted(id, "eu-west", "admin"), roleRevoked(id, "eu-west", "admin"), cred); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"us-east-n1": 42, "eu-west-n1": 7}
	removes := 0
	for _, rec := range e.records(t) {
		switch rec.GetBody().(type) {
		case *meridianv1.Event_RoleRevoked, *meridianv1.Event_CredentialRemoved:
			removes++
			if !maps.Equal(rec.GetObserved().GetHlc(), want) || rec.GetObserved() == nil {
				t.Errorf("%T record %s: observed %v, want %v", rec.GetBody(), rec.GetEventId(), rec.GetObserved(), want)
			}
		default:
			if rec.GetObserved() != nil {
				t.Errorf("%T record %s (%v) carries a context %v", rec.GetBody(), rec.GetEventId(), rec.GetPart(), rec.GetObserved())
			}
		}
	}
	if removes != 2 {
		t.Fatalf("%d remove records, want 2", removes)
	}

	// An empty context is still a context (it observed nothing elsewhere).
	seen = map[string]uint64{}
	if _, err := e.w.Append(context.Background(), roleRevoked(id, "eu-west", "viewer")); err != nil {
		t.Fatal(err)
	}
	recs := e.records(t)
	if last := recs[len(recs)-1]; last.GetObserved() == nil || len(last.GetObserved().GetHlc()) != 0 {
		t.Fatalf("empty context: observed %v, want an empty context", last.GetObserved())
	}
}

// TestObservedNone: without Config.Observed, or when it reports nil,
// removes carry no context (the merger's old rule).
func TestObservedNone(t *testing.T) {
	for name, hook := range map[string]func() map[string]uint64{
		"no hook":    nil,
		"nil result": func() map[string]uint64 { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, "eu-west", func(c *writer.Config) { c.Observed = hook })
			id := newIdentity()
			if _, err := e.w.Append(context.Background(), roleRevoked(id, "eu-west", "admin")); err != nil {
				t.Fatal(err)
			}
			for _, rec := range e.records(t) {
				if rec.GetObserved() != nil {
					t.Fatalf("record %s carries a context %v", rec.GetEventId(), rec.GetObserved())
				}
			}
		})
	}
}

// TestObservedSetByClientRefused: the context is the writer's to set.
func TestObservedSetByClientRefused(t *testing.T) {
	e := newEnv(t, "eu-west")
	ev := roleRevoked(newIdentity(), "eu-west", "admin")
	ev.Observed = &meridianv1.CausalContext{Hlc: map[string]uint64{"us-east-n1": 1}}
	_, err := e.w.Append(context.Background(), ev)
	var werr *writer.Error
	if !asWriterError(err, &werr) || werr.Code != writer.CodeInvalid || werr.Field != "observed" {
		t.Fatalf("error %v, want invalid_event naming observed", err)
	}
}
