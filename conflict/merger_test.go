package conflict

import (
	"errors"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func TestNewMergerCompilesSchema(t *testing.T) {
	m := newTestMerger(t)
	for name, rule := range map[string]meridianv1.MergeRule{
		"home_region":               meridianv1.MergeRule_MERGE_RULE_LWW,
		"traits":                    meridianv1.MergeRule_MERGE_RULE_LWW,
		"roles":                     meridianv1.MergeRule_MERGE_RULE_ADD_WINS_SET,
		"revoked_sessions":          meridianv1.MergeRule_MERGE_RULE_GROW_ONLY_SET,
		"failed_logins":             meridianv1.MergeRule_MERGE_RULE_COUNTER,
		"last_failed_login_unix_ms": meridianv1.MergeRule_MERGE_RULE_MAX,
		"erased":                    meridianv1.MergeRule_MERGE_RULE_REMOVE_WINS,
	} {
		if got := m.targets[name]; got == nil || got.rule != rule {
			t.Errorf("target %s: got %+v, want rule %v", name, got, rule)
		}
	}
	if m.targets["credentials"].keyField.Name() != "credential_id" || m.targets["sessions"].keyField.Name() != "session_id" {
		t.Error("set element keys not found")
	}
	if _, ok := m.maxPaths["last_failed_login_unix_ms"]; !ok {
		t.Error("MAX register path missing")
	}
}

func TestApplyRejectsBadInput(t *testing.T) {
	m := newTestMerger(t)
	base := mustApply(t, m, nil, evt("n1", 1, "e0", 1, &meridianv1.RoleGranted{Role: "viewer"}))
	before := proto.Clone(base)
	role := func(mut func(ev *meridianv1.Event)) *meridianv1.Event {
		ev := evt("n1", 5, "e1", 2, &meridianv1.RoleGranted{Role: "admin"})
		mut(ev)
		return ev
	}
	unknownBody := evt("n1", 5, "e1", 2, &meridianv1.RoleGranted{Role: "admin"})
	unknownBody.Body = nil
	unknownBody.ProtoReflect().SetUnknown(append(protowire.AppendTag(nil, 99, protowire.BytesType), 0))
	tests := []struct {
		name  string
		ev    *meridianv1.Event
		field string
	}{
		{"nil event", nil, "event"},
		{"no body", role(func(ev *meridianv1.Event) { ev.Body = nil }), "body"},
		{"unknown event type", unknownBody, "body"},
		{"missing identity id", role(func(ev *meridianv1.Event) { ev.IdentityId = "" }), "identity_id"},
		{"other identity", role(func(ev *meridianv1.Event) { ev.IdentityId = "id2" }), "identity_id"},
		{"missing event id", role(func(ev *meridianv1.Event) { ev.EventId = "" }), "event_id"},
		{"missing origin node", role(func(ev *meridianv1.Event) { ev.OriginNode = "" }), "origin_node"},
		{"missing hlc", role(func(ev *meridianv1.Event) { ev.Hlc = 0 }), "hlc"},
		{"key part", role(func(ev *meridianv1.Event) { ev.Part = meridianv1.Part_PART_KEY }), "part"},
		{"unknown part", role(func(ev *meridianv1.Event) { ev.Part = 42 }), "part"},
		{"resident field in global part", func() *meridianv1.Event {
			ev := evt("n1", 5, "e1", 2, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Email: new("a@example.com")}})
			ev.Part = meridianv1.Part_PART_GLOBAL
			return ev
		}(), "traits_updated.traits.email"},
		{"global field in resident part", func() *meridianv1.Event {
			ev := evt("n1", 5, "e1", 2, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Locale: new("fr")}})
			ev.Part = meridianv1.Part_PART_RESIDENT
			return ev
		}(), "traits_updated.traits.locale"},
		{"global credential field in resident part", func() *meridianv1.Event {
			ev := evt("n1", 5, "e1", 2, &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{CredentialId: "c", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_WEBAUTHN}})
			ev.Part = meridianv1.Part_PART_RESIDENT
			return ev
		}(), "credential_added.credential.type"},
		{"credential without key", evt("n1", 5, "e1", 2, &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{Material: []byte("x")}}), "credential_added.credential.credential_id"},
		{"session without key", evt("n1", 5, "e1", 2, &meridianv1.SessionIssued{Session: &meridianv1.Session{Device: "phone"}}), "session_issued.session.session_id"},
		{"increment without sequence", evt("n1", 5, "e1", 0, &meridianv1.LoginFailed{AtUnixMs: 3}), "sequence"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.Apply(base, tt.ev)
			var ee *EventError
			if !errors.As(err, &ee) || !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("err = %v, want *EventError", err)
			}
			if ee.Field != tt.field || ee.Rule == "" {
				t.Fatalf("error names field %q (rule %q), want %q", ee.Field, ee.Rule, tt.field)
			}
			if got != nil {
				t.Fatalf("state returned with an error: %v", got)
			}
			assertEqual(t, base, before)
		})
	}
}

func TestApplyNotIdentityEvent(t *testing.T) {
	m := newTestMerger(t)
	for _, body := range []proto.Message{&meridianv1.Heartbeat{SentAtUnixMs: 1}, &meridianv1.DataKey{KeyId: "k"}} {
		_, err := m.Apply(nil, evt("n1", 1, "e1", 1, body))
		if !errors.Is(err, ErrNotIdentityEvent) {
			t.Errorf("%T: err = %v, want ErrNotIdentityEvent", body, err)
		}
	}
}

func TestApplyDoesNotModifyInput(t *testing.T) {
	m := newTestMerger(t)
	s := mustApply(t, m, nil,
		evt("n1", 1, "e1", 1, &meridianv1.RoleGranted{Role: "a"}),
		evt("n1", 1, "e2", 2, &meridianv1.LoginFailed{AtUnixMs: 4}),
		evt("n1", 1, "e3", 3, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: new("A")}}))
	before := proto.Clone(s)
	mustApply(t, m, s,
		evt("n2", 2, "e4", 1, &meridianv1.RoleRevoked{Role: "a"}),
		evt("n2", 2, "e5", 2, &meridianv1.LoginFailed{AtUnixMs: 9}),
		evt("n2", 2, "e6", 3, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: new("B")}}))
	m.Merge(s, mustApply(t, m, nil, evt("n3", 3, "e7", 1, &meridianv1.RoleGranted{Role: "a"})))
	assertEqual(t, s, before)
}

func TestMergeSemantics(t *testing.T) {
	m := newTestMerger(t)
	type E = *meridianv1.Event
	ident := func(mut func(*meridianv1.Identity)) *meridianv1.Identity {
		id := &meridianv1.Identity{IdentityId: "id1"}
		mut(id)
		return id
	}
	tests := []struct {
		name string
		evs  []E
		want *meridianv1.Identity
	}{
		{
			name: "LWW per trait, newest HLC wins, untouched traits stay",
			evs: []E{
				evt("n1", 10, "a", 1, &meridianv1.IdentityCreated{HomeRegion: "eu-west", Traits: &meridianv1.Traits{Email: new("old@x"), Name: new("Ann")}}),
				evt("n2", 12, "b", 1, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Email: new("new@x")}}),
				evt("n3", 11, "c", 1, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Email: new("mid@x")}}),
			},
			want: ident(func(id *meridianv1.Identity) {
				id.HomeRegion = "eu-west"
				id.Traits = &meridianv1.Traits{Email: new("new@x"), Name: new("Ann")}
				id.UpdatedHlc = uint64(MakeTimestamp(12, 0))
			}),
		},
		{
			name: "equal HLC: larger node wins, then larger event id",
			evs: []E{
				evt("n2", 10, "a", 1, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Phone: new("n2")}}),
				evt("n1", 10, "z", 1, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Phone: new("n1")}}),
				evt("n1", 10, "b", 2, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Locale: new("b")}}),
				evt("n1", 10, "c", 3, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Locale: new("c")}}),
			},
			want: ident(func(id *meridianv1.Identity) {
				id.Traits = &meridianv1.Traits{Phone: new("n2"), Locale: new("c")}
				id.UpdatedHlc = uint64(MakeTimestamp(10, 0))
			}),
		},
		{
			name: "metadata merges per key, address is replaced whole",
			evs: []E{
				evt("n1", 1, "a", 1, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Metadata: map[string]string{"a": "1", "b": "1"}, Address: &meridianv1.Address{City: "Paris", Country: "FR"}}}),
				evt("n2", 2, "b", 1, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Metadata: map[string]string{"b": "2", "c": "2"}, Address: &meridianv1.Address{City: "Lyon"}}}),
			},
			want: ident(func(id *meridianv1.Identity) {
				id.Traits = &meridianv1.Traits{Metadata: map[string]string{"a": "1", "b": "2", "c": "2"}, Address: &meridianv1.Address{City: "Lyon"}}
				id.UpdatedHlc = uint64(MakeTimestamp(2, 0))
			}),
		},
		{
			name: "role revoke observes earlier grants; a later grant wins",
			evs: []E{
				evt("n1", 1, "a", 1, &meridianv1.RoleGranted{Role: "admin"}),
				evt("n1", 2, "b", 2, &meridianv1.RoleGranted{Role: "viewer"}),
				evt("n2", 3, "c", 1, &meridianv1.RoleRevoked{Role: "admin"}),
				evt("n2", 4, "d", 2, &meridianv1.RoleRevoked{Role: "viewer"}),
				evt("n3", 5, "e", 1, &meridianv1.RoleGranted{Role: "viewer"}),
				evt("n3", 1, "f", 2, &meridianv1.RoleRevoked{Role: "editor"}), // remove of nothing
			},
			want: ident(func(id *meridianv1.Identity) {
				id.Roles = []string{"viewer"}
				id.UpdatedHlc = uint64(MakeTimestamp(5, 0))
			}),
		},
		{
			name: "credentials keyed by id: re-add replaces, remove drops material",
			evs: []E{
				evt("n1", 1, "a", 1, &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{CredentialId: "pw", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH, Material: []byte("h1")}}),
				evt("n1", 2, "b", 2, &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{CredentialId: "pw", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH, Material: []byte("h2")}}),
				evt("n1", 3, "c", 3, &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{CredentialId: "wa", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_WEBAUTHN, Material: []byte("pk")}}),
				evt("n2", 4, "d", 1, &meridianv1.CredentialRemoved{CredentialId: "wa"}),
			},
			want: ident(func(id *meridianv1.Identity) {
				id.Credentials = []*meridianv1.Credential{{CredentialId: "pw", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH, Material: []byte("h2")}}
				id.UpdatedHlc = uint64(MakeTimestamp(4, 0))
			}),
		},
		{
			name: "revoked sessions grow only; a re-issue does not un-revoke",
			evs: []E{
				evt("n1", 1, "a", 1, &meridianv1.SessionIssued{Session: &meridianv1.Session{SessionId: "s1", ExpiresAtUnixMs: 100}}),
				evt("n2", 2, "b", 1, &meridianv1.SessionRevoked{SessionId: "s1"}),
				evt("n1", 3, "c", 2, &meridianv1.SessionIssued{Session: &meridianv1.Session{SessionId: "s1", ExpiresAtUnixMs: 200}}),
			},
			want: ident(func(id *meridianv1.Identity) {
				id.Sessions = []*meridianv1.Session{{SessionId: "s1", ExpiresAtUnixMs: 200}}
				id.RevokedSessions = []string{"s1"}
				id.UpdatedHlc = uint64(MakeTimestamp(3, 0))
			}),
		},
		{
			name: "failed logins count per origin, once per event; last time is the max",
			evs: []E{
				evt("n1", 1, "a", 7, &meridianv1.LoginFailed{AtUnixMs: 1000}),
				evt("n1", 1, "a", 7, &meridianv1.LoginFailed{AtUnixMs: 1000}), // redelivery
				evt("n1", 2, "b", 8, &meridianv1.LoginFailed{AtUnixMs: 900}),
				evt("n2", 3, "c", 7, &meridianv1.LoginFailed{AtUnixMs: 950}), // same sequence, other node
			},
			want: ident(func(id *meridianv1.Identity) {
				id.FailedLogins = 3
				id.LastFailedLoginUnixMs = 1000
				id.UpdatedHlc = uint64(MakeTimestamp(3, 0))
			}),
		},
		{
			name: "status LWW; verified emails are add-wins sets",
			evs: []E{
				evt("n1", 1, "a", 1, &meridianv1.StateChanged{Status: meridianv1.IdentityStatus_IDENTITY_STATUS_DISABLED}),
				evt("n2", 2, "b", 1, &meridianv1.StateChanged{Status: meridianv1.IdentityStatus_IDENTITY_STATUS_ACTIVE}),
				evt("n2", 2, "c", 2, &meridianv1.EmailVerified{Email: "b@x", EmailHash: []byte{2}}),
				evt("n2", 2, "d", 3, &meridianv1.EmailVerified{Email: "a@x", EmailHash: []byte{1}}),
			},
			want: ident(func(id *meridianv1.Identity) {
				id.Status = meridianv1.IdentityStatus_IDENTITY_STATUS_ACTIVE
				id.VerifiedEmails = []string{"a@x", "b@x"}
				id.VerifiedEmailHashes = [][]byte{{1}, {2}}
				id.UpdatedHlc = uint64(MakeTimestamp(2, 0))
			}),
		},
		{
			name: "erasure wins over earlier, concurrent and later updates",
			evs: []E{
				evt("n1", 1, "a", 1, &meridianv1.IdentityCreated{HomeRegion: "eu-west", Traits: &meridianv1.Traits{Email: new("a@x")}}),
				evt("n2", 5, "b", 1, &meridianv1.IdentityErased{Reason: "gdpr"}),
				evt("n3", 9, "c", 1, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Email: new("late@x")}}),
				evt("n1", 7, "d", 2, &meridianv1.IdentityErased{}),
			},
			want: ident(func(id *meridianv1.Identity) {
				id.Erased = true
				id.UpdatedHlc = uint64(MakeTimestamp(5, 0))
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Forward, backward, and one replica per event joined.
			fwd := mustApply(t, m, nil, tt.evs...)
			var bwd, joined *meridianv1.IdentityState
			for i := len(tt.evs) - 1; i >= 0; i-- {
				bwd = mustApply(t, m, bwd, tt.evs[i])
				joined = m.Merge(joined, mustApply(t, m, nil, tt.evs[i]))
			}
			assertEqual(t, m.View(fwd), tt.want)
			assertEqual(t, bwd, fwd)
			assertEqual(t, joined, fwd)
		})
	}
}

func TestErasedStateKeepsOnlyTombstone(t *testing.T) {
	m := newTestMerger(t)
	s := mustApply(t, m, nil,
		evt("n1", 1, "a", 1, &meridianv1.IdentityCreated{HomeRegion: "eu-west", Traits: &meridianv1.Traits{Email: new("a@x")}}),
		evt("n1", 2, "b", 2, &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{CredentialId: "pw", Material: []byte("secret")}}),
		evt("n2", 3, "c", 1, &meridianv1.IdentityErased{Reason: "gdpr"}))
	if !m.Erased(s) {
		t.Fatal("not erased")
	}
	assertEqual(t, s, &meridianv1.IdentityState{
		IdentityId: "id1",
		Erased:     &meridianv1.Stamp{Hlc: uint64(MakeTimestamp(3, 0)), Node: "n2", EventId: "c"},
		UpdatedHlc: uint64(MakeTimestamp(3, 0)),
	})
	// A state merged with a tombstone is a tombstone too.
	other := mustApply(t, m, nil, evt("n3", 9, "d", 1, &meridianv1.RoleGranted{Role: "admin"}))
	assertEqual(t, m.Merge(other, s), s)
	if m.Erased(nil) || m.Erased(other) {
		t.Fatal("Erased reports true for a live identity")
	}
}
