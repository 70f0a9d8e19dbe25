package writer

import (
	"google.golang.org/protobuf/encoding/protowire"
	"slices"
	"strings"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// leafPaths lists the populated leaf fields of m as dotted paths.
func leafPaths(m protoreflect.Message) []string {
	if m == nil {
		return nil
	}
	var out []string
	var walk func(prefix string, m protoreflect.Message)
	walk = func(prefix string, m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := joinPath(prefix, string(fd.Name()))
			if fd.Message() != nil && !fd.IsMap() && !fd.IsList() && fd.Message().FullName() != "meridian.v1.Address" {
				walk(p, v.Message())
			} else {
				out = append(out, p)
			}
			return true
		})
	}
	walk("", m)
	slices.Sort(out)
	return out
}

func TestSplitByResidency(t *testing.T) {
	plans, err := buildBodyPlans()
	if err != nil {
		t.Fatal(err)
	}
	s := func(v string) *string { return &v }
	cases := []struct {
		name                   string
		body                   proto.Message
		global, resident, keys []string // resident == nil: no RESIDENT part
	}{
		{
			name: "identity_created: traits split field by field",
			body: &meridianv1.IdentityCreated{HomeRegion: "eu-west", Traits: &meridianv1.Traits{
				Email: s("a@b.c"), Username: s("al"), Name: s("Al"), Phone: s("+1"), Locale: s("de"),
				Metadata: map[string]string{"k": "v"}, Address: &meridianv1.Address{City: "Berlin"},
			}},
			global:   []string{"home_region", "traits.locale"},
			resident: []string{"traits.address", "traits.email", "traits.metadata", "traits.name", "traits.phone", "traits.username"},
			keys:     []string{},
		},
		{
			name:   "identity_created: only GLOBAL traits",
			body:   &meridianv1.IdentityCreated{HomeRegion: "eu-west", Traits: &meridianv1.Traits{Locale: s("de")}},
			global: []string{"home_region", "traits.locale"},
		},
		{
			name:     "traits_updated: only RESIDENT traits leave an empty GLOBAL body",
			body:     &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Phone: s("+49")}},
			global:   []string{},
			resident: []string{"traits.phone"},
			keys:     []string{},
		},
		{
			name: "credential_added: material resident, id in both parts",
			body: &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
				CredentialId: "c1", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH,
				Material: []byte("hash"), CreatedAtUnixMs: 5,
			}},
			global:   []string{"credential.created_at_unix_ms", "credential.credential_id", "credential.type"},
			resident: []string{"credential.credential_id", "credential.material"},
			keys:     []string{"credential.credential_id"},
		},
		{
			name: "credential_added without material is GLOBAL only",
			body: &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
				CredentialId: "c1", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_OIDC_SUBJECT,
			}},
			global: []string{"credential.credential_id", "credential.type"},
		},
		{
			name: "session_issued: device and ip resident",
			body: &meridianv1.SessionIssued{Session: &meridianv1.Session{
				SessionId: "s1", ExpiresAtUnixMs: 9, IssuedAtUnixMs: 1, Device: "phone", Ip: "10.0.0.1",
			}},
			global:   []string{"session.expires_at_unix_ms", "session.issued_at_unix_ms", "session.session_id"},
			resident: []string{"session.device", "session.ip", "session.session_id"},
			keys:     []string{"session.session_id"},
		},
		{
			name:     "email_verified: email resident (the hash is added later, GLOBAL)",
			body:     &meridianv1.EmailVerified{Email: "a@b.c"},
			global:   []string{},
			resident: []string{"email"},
			keys:     []string{},
		},
		{name: "role_granted", body: &meridianv1.RoleGranted{Role: "admin"}, global: []string{"role"}},
		{name: "session_revoked", body: &meridianv1.SessionRevoked{SessionId: "s"}, global: []string{"session_id"}},
		{name: "login_failed", body: &meridianv1.LoginFailed{AtUnixMs: 1, Counted: true}, global: []string{"at_unix_ms", "counted"}},
		{name: "identity_erased", body: &meridianv1.IdentityErased{Reason: "gdpr"}, global: []string{"reason"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := c.body.ProtoReflect()
			before := proto.Clone(c.body)
			var plan *bodyPlan
			for _, p := range plans {
				if p != nil && p.field.Message().FullName() == m.Descriptor().FullName() {
					plan = p
				}
			}
			enc, err := proto.Marshal(c.body)
			if err != nil {
				t.Fatal(err)
			}
			var res parts
			if uerr := plan.split.split(enc, &res); uerr != nil {
				t.Fatal(uerr)
			}
			decode := func(b []byte) protoreflect.Message {
				out := m.New()
				if err := proto.Unmarshal(b, out.Interface()); err != nil {
					t.Fatalf("part does not decode as %s: %v", m.Descriptor().FullName(), err)
				}
				return out
			}
			global := decode(res.global)
			if got := leafPaths(global); !slices.Equal(got, c.global) {
				t.Errorf("GLOBAL = %v; want %v", got, c.global)
			}
			if c.resident == nil {
				if res.hasResident || len(res.resident) > 0 {
					t.Errorf("RESIDENT = %v; want no resident part", leafPaths(decode(res.resident)))
				}
			} else {
				if !res.hasResident {
					t.Error("hasResident is false")
				}
				resident := decode(res.resident)
				if got := leafPaths(resident); !slices.Equal(got, c.resident) {
					t.Errorf("RESIDENT = %v; want %v", got, c.resident)
				}
				if got := leafPaths(decode(res.keys)); !slices.Equal(got, c.keys) {
					t.Errorf("keys = %v; want %v", got, c.keys)
				}
				// Merged, the parts are the original body again.
				merged := decode(res.global)
				proto.Merge(merged.Interface(), resident.Interface())
				if !proto.Equal(merged.Interface(), c.body) {
					t.Errorf("GLOBAL+RESIDENT = %v; want %v", merged.Interface(), c.body)
				}
			}
			if !proto.Equal(before, c.body) {
				t.Error("split modified its input")
			}
		})
	}
}

// Every body type must be plannable from the schema, and the plans must
// agree with the annotations: the types known to carry personal data are
// resident-capable, the others are not.
func TestPlansFollowSchema(t *testing.T) {
	plans, err := buildBodyPlans()
	if err != nil {
		t.Fatal(err)
	}
	residentCapable := map[string]bool{
		"identity_created": true, "traits_updated": true, "email_verified": true,
		"credential_added": true, "session_issued": true, "data_key": true,
	}
	n := 0
	for _, p := range plans {
		if p == nil {
			continue
		}
		n++
		if p.split.resident != residentCapable[p.name] {
			t.Errorf("%s: resident-capable = %v; want %v", p.name, p.split.resident, residentCapable[p.name])
		}
	}
	if n != 14 {
		t.Errorf("%d body types planned; want 14", n)
	}
}

// Containers longer than 127 bytes need a multi-byte length: the split
// patches it in after the fact.
func TestSplitLongContainers(t *testing.T) {
	plans, _ := buildBodyPlans()
	plan := plans[fieldNum(&meridianv1.Event{}, "identity_created")]
	long := strings.Repeat("x", 300)
	body := &meridianv1.IdentityCreated{HomeRegion: "eu-west", Traits: &meridianv1.Traits{
		Name: &long, Locale: &long, Metadata: map[string]string{"a": long, "b": long},
	}}
	enc, _ := proto.Marshal(body)
	var res parts
	if err := plan.split.split(enc, &res); err != nil {
		t.Fatal(err)
	}
	var g, r meridianv1.IdentityCreated
	if err := proto.Unmarshal(res.global, &g); err != nil || g.GetTraits().GetLocale() != long || g.GetTraits().Name != nil {
		t.Fatalf("GLOBAL = %v (%v)", &g, err)
	}
	if err := proto.Unmarshal(res.resident, &r); err != nil || r.GetTraits().GetName() != long || len(r.GetTraits().GetMetadata()) != 2 || r.GetTraits().Locale != nil {
		t.Fatalf("RESIDENT = %v (%v)", &r, err)
	}
}

// Unknown fields are found at any depth and named by path.
func TestSplitUnknownFields(t *testing.T) {
	plans, _ := buildBodyPlans()
	ic := plans[fieldNum(&meridianv1.Event{}, "identity_created")]
	ca := plans[fieldNum(&meridianv1.Event{}, "credential_added")]
	rg := plans[fieldNum(&meridianv1.Event{}, "role_granted")]
	msg := func(fields ...[]byte) []byte { return slices.Concat(fields...) }
	field := func(num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	cases := []struct {
		name string
		plan *bodyPlan
		body []byte
		path string
		num  protowire.Number
	}{
		{"flat", rg, msg(field(1, []byte("r")), varint(9, 1)), "", 9},
		{"in traits", ic, msg(field(2, msg(field(3, []byte("n")), varint(99, 1)))), "traits", 99},
		{"in address", ic, msg(field(2, field(9, varint(42, 1)))), "traits.address", 42},
		{"in credential", ca, msg(field(1, msg(field(1, []byte("c")), varint(15, 1)))), "credential", 15},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var res parts
			err := c.plan.split.split(c.body, &res)
			if err == nil || err.path != c.path || err.num != c.num {
				t.Fatalf("err = %+v; want path %q num %d", err, c.path, c.num)
			}
		})
	}
}
