package writer_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/meridian-id/meridian/conflict"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// withUnknown returns ev re-decoded with an extra field the schema does not
// have, as a newer client's event type would arrive in protobuf.
func withUnknown(t *testing.T, ev *meridianv1.Event, num protowire.Number) *meridianv1.Event {
	t.Helper()
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{0x0a, 0x01, 'x'})
	out := &meridianv1.Event{}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// withUnknownTraits puts an unknown field inside identity_created.traits.
func withUnknownTraits(t *testing.T, identity string) *meridianv1.Event {
	t.Helper()
	tr := &meridianv1.Traits{Locale: ptr("de")}
	tb, _ := proto.Marshal(tr)
	tb = protowire.AppendTag(tb, 99, protowire.VarintType)
	tb = protowire.AppendVarint(tb, 1)
	ic := protowire.AppendTag(nil, 2, protowire.BytesType) // IdentityCreated.traits
	ic = protowire.AppendBytes(ic, tb)
	ic = protowire.AppendTag(ic, 1, protowire.BytesType)
	ic = protowire.AppendBytes(ic, []byte("eu-west"))
	ev, _ := proto.Marshal(&meridianv1.Event{IdentityId: identity, HomeRegion: "eu-west"})
	ev = protowire.AppendTag(ev, 20, protowire.BytesType)
	ev = protowire.AppendBytes(ev, ic)
	out := &meridianv1.Event{}
	if err := proto.Unmarshal(ev, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestValidationRules(t *testing.T) {
	id := newIdentity()
	home := "eu-west"
	mod := func(ev *meridianv1.Event, f func(*meridianv1.Event)) *meridianv1.Event { f(ev); return ev }
	base := func() *meridianv1.Event { return roleGranted(id, home, "admin") }
	ahead := uint64(conflict.MakeTimestamp(testNow+3000, 0))

	type tc struct {
		name   string
		region string // writer region (default eu-west)
		events func(t *testing.T) []*meridianv1.Event
		tweak  func(*writer.Config)
		code   string
		status int
		field  string
		index  int
		home   string
		is     error
	}
	one := func(ev *meridianv1.Event) func(*testing.T) []*meridianv1.Event {
		return func(*testing.T) []*meridianv1.Event { return []*meridianv1.Event{ev} }
	}
	inv := func(name string, ev *meridianv1.Event, field string) tc {
		return tc{name: name, events: one(ev), code: writer.CodeInvalid, status: http.StatusBadRequest, field: field, is: writer.ErrInvalid}
	}
	cases := []tc{
		inv("null event", nil, ""),
		inv("identity_id missing", mod(base(), func(e *meridianv1.Event) { e.IdentityId = "" }), "identity_id"),
		inv("identity_id not a uuid", mod(base(), func(e *meridianv1.Event) { e.IdentityId = "alice" }), "identity_id"),
		inv("identity_id upper case", mod(base(), func(e *meridianv1.Event) { e.IdentityId = strings.ToUpper(id) }), "identity_id"),
		inv("identity_id braced", mod(base(), func(e *meridianv1.Event) { e.IdentityId = "{" + id + "}" }), "identity_id"),
		inv("event_id not v7", mod(base(), func(e *meridianv1.Event) { e.EventId = uuid.NewString() }), "event_id"),
		inv("event_id garbage", mod(base(), func(e *meridianv1.Event) { e.EventId = "x" }), "event_id"),
		inv("origin_region set", mod(base(), func(e *meridianv1.Event) { e.OriginRegion = "eu-west" }), "origin_region"),
		inv("origin_node set", mod(base(), func(e *meridianv1.Event) { e.OriginNode = "n" }), "origin_node"),
		inv("sequence set", mod(base(), func(e *meridianv1.Event) { e.Sequence = 7 }), "sequence"),
		inv("zone set", mod(base(), func(e *meridianv1.Event) { e.Zone = "eu" }), "zone"),
		inv("part set", mod(base(), func(e *meridianv1.Event) { e.Part = meridianv1.Part_PART_GLOBAL }), "part"),
		inv("sealed set", mod(base(), func(e *meridianv1.Event) { e.Sealed = &meridianv1.Sealed{KeyId: "k"} }), "sealed"),
		inv("no body", mod(base(), func(e *meridianv1.Event) { e.Body = nil }), "body"),
		inv("heartbeat from client", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_Heartbeat{Heartbeat: &meridianv1.Heartbeat{SentAtUnixMs: 1}}
		}), "heartbeat"),
		inv("data_key from client", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_DataKey{DataKey: &meridianv1.DataKey{KeyId: "k"}}
		}), "data_key"),
		{name: "unknown event type (protobuf)", events: func(t *testing.T) []*meridianv1.Event {
			ev := base()
			ev.Body = nil
			return []*meridianv1.Event{withUnknown(t, ev, 40)}
		}, code: writer.CodeInvalid, status: 400, field: "body", is: writer.ErrInvalid},
		{name: "unknown field inside traits", events: func(t *testing.T) []*meridianv1.Event {
			return []*meridianv1.Event{withUnknownTraits(t, id)}
		}, code: writer.CodeInvalid, status: 400, field: "identity_created.traits", is: writer.ErrInvalid},
		inv("home_region missing", mod(base(), func(e *meridianv1.Event) { e.HomeRegion = "" }), "home_region"),
		inv("home_region unknown", mod(base(), func(e *meridianv1.Event) { e.HomeRegion = "mars-1" }), "home_region"),
		inv("identity_created without home region", created(id, "", nil), "identity_created.home_region"),
		inv("identity_created home regions differ", mod(created(id, home, nil), func(e *meridianv1.Event) {
			e.GetIdentityCreated().HomeRegion = "us-east"
		}), "identity_created.home_region"),
		inv("hlc too far ahead", mod(base(), func(e *meridianv1.Event) { e.Hlc = ahead }), "hlc"),
		inv("traits email_hash from client", created(id, home, &meridianv1.Traits{EmailHash: []byte{1}}), "identity_created.traits.email_hash"),
		inv("traits username_hash from client", traitsUpdated(id, home, &meridianv1.Traits{UsernameHash: []byte{}}), "traits_updated.traits.username_hash"),
		inv("traits_updated without traits", traitsUpdated(id, home, nil), "traits_updated.traits"),
		inv("traits_updated with no trait", traitsUpdated(id, home, &meridianv1.Traits{}), "traits_updated.traits"),
		inv("email_verified without email", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_EmailVerified{EmailVerified: &meridianv1.EmailVerified{Email: " "}}
		}), "email_verified.email"),
		inv("email_verified hash from client", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_EmailVerified{EmailVerified: &meridianv1.EmailVerified{Email: "a@b.c", EmailHash: []byte{1}}}
		}), "email_verified.email_hash"),
		inv("credential_added without credential", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_CredentialAdded{CredentialAdded: &meridianv1.CredentialAdded{}}
		}), "credential_added.credential"),
		inv("credential_added without id", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_CredentialAdded{CredentialAdded: &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
				Type: meridianv1.CredentialType_CREDENTIAL_TYPE_WEBAUTHN}}}
		}), "credential_added.credential.credential_id"),
		inv("credential_added without type", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_CredentialAdded{CredentialAdded: &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{CredentialId: "c1"}}}
		}), "credential_added.credential.type"),
		inv("credential_added unknown type", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_CredentialAdded{CredentialAdded: &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{CredentialId: "c1", Type: 99}}}
		}), "credential_added.credential.type"),
		inv("credential_removed without id", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_CredentialRemoved{CredentialRemoved: &meridianv1.CredentialRemoved{}}
		}), "credential_removed.credential_id"),
		inv("role_granted without role", roleGranted(id, home, ""), "role_granted.role"),
		inv("role_revoked without role", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_RoleRevoked{RoleRevoked: &meridianv1.RoleRevoked{}}
		}), "role_revoked.role"),
		inv("session_issued without session", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_SessionIssued{SessionIssued: &meridianv1.SessionIssued{}}
		}), "session_issued.session"),
		inv("session_issued without id", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_SessionIssued{SessionIssued: &meridianv1.SessionIssued{Session: &meridianv1.Session{ExpiresAtUnixMs: testNow}}}
		}), "session_issued.session.session_id"),
		inv("session_issued without expiry", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_SessionIssued{SessionIssued: &meridianv1.SessionIssued{Session: &meridianv1.Session{SessionId: "s"}}}
		}), "session_issued.session.expires_at_unix_ms"),
		inv("session_issued expiring before issue", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_SessionIssued{SessionIssued: &meridianv1.SessionIssued{Session: &meridianv1.Session{
				SessionId: "s", IssuedAtUnixMs: testNow, ExpiresAtUnixMs: testNow - 1}}}
		}), "session_issued.session.expires_at_unix_ms"),
		inv("session_revoked without id", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_SessionRevoked{SessionRevoked: &meridianv1.SessionRevoked{}}
		}), "session_revoked.session_id"),
		inv("state_changed unspecified", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_StateChanged{StateChanged: &meridianv1.StateChanged{}}
		}), "state_changed.status"),
		inv("state_changed unknown", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_StateChanged{StateChanged: &meridianv1.StateChanged{Status: 7}}
		}), "state_changed.status"),
		inv("login_failed negative time", mod(base(), func(e *meridianv1.Event) {
			e.Body = &meridianv1.Event_LoginFailed{LoginFailed: &meridianv1.LoginFailed{AtUnixMs: -1}}
		}), "login_failed.at_unix_ms"),
		{name: "event over MaxEventBytes", events: one(created(id, home, &meridianv1.Traits{Name: ptr(strings.Repeat("n", 70_000))})),
			code: writer.CodeTooLarge, status: 413, field: "", is: writer.ErrTooLarge},
		{name: "no events", events: func(*testing.T) []*meridianv1.Event { return nil },
			code: writer.CodeInvalid, status: 400, field: "events", index: -1, is: writer.ErrInvalid},
		{name: "more than MaxEvents", tweak: func(c *writer.Config) { c.MaxEvents = 2 },
			events: func(*testing.T) []*meridianv1.Event { return []*meridianv1.Event{base(), base(), base()} },
			code:   writer.CodeTooLarge, status: 413, field: "events", index: -1, is: writer.ErrTooLarge},
		{name: "request over MaxRequestBytes", tweak: func(c *writer.Config) { c.MaxEventBytes = 1000; c.MaxRequestBytes = 1500 },
			events: func(*testing.T) []*meridianv1.Event {
				return []*meridianv1.Event{roleGranted(id, home, strings.Repeat("r", 900)), roleGranted(id, home, strings.Repeat("r", 900))}
			},
			code: writer.CodeTooLarge, status: 413, field: "events", index: -1, is: writer.ErrTooLarge},
		{name: "duplicate event ids", events: func(*testing.T) []*meridianv1.Event {
			a, b := base(), base()
			a.EventId = newEventID()
			b.EventId = a.EventId
			return []*meridianv1.Event{a, b}
		}, code: writer.CodeInvalid, status: 400, field: "event_id", index: 1, is: writer.ErrInvalid},
		{name: "second event bad: nothing appended", events: func(*testing.T) []*meridianv1.Event {
			return []*meridianv1.Event{created(newIdentity(), home, &meridianv1.Traits{Email: ptr("ok@example.com")}), roleGranted(id, home, "")}
		}, code: writer.CodeInvalid, status: 400, field: "role_granted.role", index: 1, is: writer.ErrInvalid},
		{name: "resident data outside its zone", region: "us-east",
			events: one(created(id, home, &meridianv1.Traits{Locale: ptr("de"), Email: ptr("eu@example.com")})),
			code:   writer.CodeWrongRegion, status: 421, field: "identity_created.traits.email", home: home, is: writer.ErrWrongRegion},
		{name: "resident credential material outside its zone", region: "us-east",
			events: one(mod(base(), func(e *meridianv1.Event) {
				e.Body = &meridianv1.Event_CredentialAdded{CredentialAdded: &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
					CredentialId: "c1", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH, Material: []byte("$argon2id$")}}}
			})),
			code: writer.CodeWrongRegion, status: 421, field: "credential_added.credential.material", home: home, is: writer.ErrWrongRegion},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			region := c.region
			if region == "" {
				region = "eu-west"
			}
			var tweaks []func(*writer.Config)
			if c.tweak != nil {
				tweaks = append(tweaks, c.tweak)
			}
			e := newEnv(t, region, tweaks...)
			// Something in the log first, so "unchanged" is not just "empty".
			if _, err := e.w.Append(context.Background(), roleGranted(newIdentity(), "us-east", "seed")); err != nil {
				t.Fatal(err)
			}
			evs := c.events(t)
			clones := make([]*meridianv1.Event, len(evs))
			for i, ev := range evs {
				if ev != nil {
					clones[i] = proto.Clone(ev).(*meridianv1.Event)
				}
			}
			before := e.log.LastSeq()
			keysBefore := e.w.Metrics().KeysCreated

			res, err := e.w.Append(context.Background(), evs...)
			if err == nil {
				t.Fatalf("Append accepted it: %+v", res)
			}
			var we *writer.Error
			if !errors.As(err, &we) {
				t.Fatalf("error %v (%T) is not a *writer.Error", err, err)
			}
			wantIndex := c.index
			if we.Code != c.code || we.Status != c.status || we.Field != c.field || we.Index != wantIndex || we.HomeRegion != c.home {
				t.Errorf("got code=%s status=%d field=%q index=%d home=%q; want code=%s status=%d field=%q index=%d home=%q\n(%v)",
					we.Code, we.Status, we.Field, we.Index, we.HomeRegion, c.code, c.status, c.field, wantIndex, c.home, err)
			}
			if !errors.Is(err, c.is) {
				t.Errorf("errors.Is(err, %v) is false", c.is)
			}
			if we.Message == "" {
				t.Error("empty message")
			}
			if after := e.log.LastSeq(); after != before {
				t.Errorf("log changed: LastSeq %d -> %d", before, after)
			}
			if got := e.w.Metrics().KeysCreated; got != keysBefore {
				t.Errorf("a data key was created for a refused request")
			}
			for i, ev := range evs {
				if ev != nil && !proto.Equal(ev, clones[i]) {
					t.Errorf("event %d was modified by the refused Append", i)
				}
			}
		})
	}
}

// The boundaries of the rules above are accepted.
func TestValidationAccepts(t *testing.T) {
	id := newIdentity()
	cases := []struct {
		name   string
		region string
		ev     *meridianv1.Event
	}{
		{"hlc just within drift", "eu-west", func() *meridianv1.Event {
			ev := roleGranted(id, "eu-west", "a")
			ev.Hlc = uint64(conflict.MakeTimestamp(testNow+2000, 5))
			return ev
		}()},
		{"client event id v7", "eu-west", func() *meridianv1.Event {
			ev := roleGranted(id, "eu-west", "a")
			ev.EventId = newEventID()
			return ev
		}()},
		{"GLOBAL-only event outside the zone", "us-east", roleGranted(id, "eu-west", "a")},
		{"identity_created with only GLOBAL traits outside the zone", "us-east", created(id, "eu-west", &meridianv1.Traits{Locale: ptr("fr")})},
		{"home region only in the body", "eu-west", func() *meridianv1.Event {
			ev := created(id, "eu-west", nil)
			ev.HomeRegion = ""
			return ev
		}()},
		{"credential without material outside the zone", "us-east", &meridianv1.Event{IdentityId: id, HomeRegion: "eu-west",
			Body: &meridianv1.Event_CredentialAdded{CredentialAdded: &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
				CredentialId: "c", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_OIDC_SUBJECT}}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.region)
			if _, err := e.w.Append(context.Background(), c.ev); err != nil {
				t.Fatal(err)
			}
		})
	}
}
