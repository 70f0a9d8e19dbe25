package conflict

import (
	"errors"
	"go/build"
	"strings"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// testSchema rebuilds identity.proto and events.proto as dynamic descriptors
// after mutate has edited their descriptor protos, standing in for a schema
// change plus regeneration.
func testSchema(t *testing.T, mutate func(identity, events *descriptorpb.FileDescriptorProto)) (identity, event protoreflect.MessageDescriptor) {
	t.Helper()
	idp := protodesc.ToFileDescriptorProto(meridianv1.File_meridian_v1_identity_proto)
	evp := protodesc.ToFileDescriptorProto(meridianv1.File_meridian_v1_events_proto)
	mutate(idp, evp)
	reg := new(protoregistry.Files)
	for _, fd := range []protoreflect.FileDescriptor{descriptorpb.File_google_protobuf_descriptor_proto, meridianv1.File_meridian_v1_options_proto} {
		if err := reg.RegisterFile(fd); err != nil {
			t.Fatal(err)
		}
	}
	var files [2]protoreflect.FileDescriptor
	for i, fdp := range []*descriptorpb.FileDescriptorProto{idp, evp} {
		fd, err := protodesc.NewFile(fdp, reg)
		if err != nil {
			t.Fatalf("building %s: %v", fdp.GetName(), err)
		}
		if err := reg.RegisterFile(fd); err != nil {
			t.Fatal(err)
		}
		files[i] = fd
	}
	return files[0].Messages().ByName("Identity"), files[1].Messages().ByName("Event")
}

func msgProto(f *descriptorpb.FileDescriptorProto, name string) *descriptorpb.DescriptorProto {
	for _, m := range f.MessageType {
		if m.GetName() == name {
			return m
		}
	}
	panic("no message " + name)
}

func fieldProto(f *descriptorpb.FileDescriptorProto, msg, field string) *descriptorpb.FieldDescriptorProto {
	for _, fd := range msgProto(f, msg).Field {
		if fd.GetName() == field {
			return fd
		}
	}
	panic("no field " + msg + "." + field)
}

// fieldOpts builds field options with the given meridian annotations.
func fieldOptsProto(res meridianv1.Residency, rule meridianv1.MergeRule) *descriptorpb.FieldOptions {
	o := &descriptorpb.FieldOptions{}
	proto.SetExtension(o, meridianv1.E_Residency, res)
	if rule != meridianv1.MergeRule_MERGE_RULE_UNSPECIFIED {
		proto.SetExtension(o, meridianv1.E_Merge, rule)
	}
	return o
}

// addOptionalField appends a proto3 optional field (with its synthetic oneof).
func addOptionalField(m *descriptorpb.DescriptorProto, name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, opts *descriptorpb.FieldOptions) {
	m.OneofDecl = append(m.OneofDecl, &descriptorpb.OneofDescriptorProto{Name: proto.String("_" + name)})
	m.Field = append(m.Field, &descriptorpb.FieldDescriptorProto{
		Name:           proto.String(name),
		JsonName:       proto.String(name),
		Number:         proto.Int32(num),
		Label:          descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		Type:           typ.Enum(),
		OneofIndex:     proto.Int32(int32(len(m.OneofDecl) - 1)),
		Proto3Optional: proto.Bool(true),
		Options:        opts,
	})
}

// newMergerDynamic compiles a merger from dynamic descriptors.
func newMergerDynamic(identity, event protoreflect.MessageDescriptor) (*Merger, error) {
	return newMerger(identity, event, func() protoreflect.Message { return dynamicpb.NewMessage(identity) })
}

// TestNewTraitNeedsNoCode adds traits (an LWW string and a MAX integer), a
// new set on Identity and a new event type to the schema, and shows that the
// merger handles them with no code change.
func TestNewTraitNeedsNoCode(t *testing.T) {
	identity, event := testSchema(t, func(idp, evp *descriptorpb.FileDescriptorProto) {
		traits := msgProto(idp, "Traits")
		addOptionalField(traits, "nickname", 50, descriptorpb.FieldDescriptorProto_TYPE_STRING,
			fieldOptsProto(meridianv1.Residency_RESIDENCY_RESIDENT, meridianv1.MergeRule_MERGE_RULE_LWW))
		addOptionalField(traits, "last_seen_unix_ms", 51, descriptorpb.FieldDescriptorProto_TYPE_INT64,
			fieldOptsProto(meridianv1.Residency_RESIDENCY_GLOBAL, meridianv1.MergeRule_MERGE_RULE_MAX))
		ident := msgProto(idp, "Identity")
		ident.Field = append(ident.Field, &descriptorpb.FieldDescriptorProto{
			Name: proto.String("groups"), JsonName: proto.String("groups"), Number: proto.Int32(50),
			Label: descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
			Options: fieldOptsProto(meridianv1.Residency_RESIDENCY_GLOBAL, meridianv1.MergeRule_MERGE_RULE_ADD_WINS_SET),
		})
		groupOpts := fieldOptsProto(meridianv1.Residency_RESIDENCY_GLOBAL, 0)
		proto.SetExtension(groupOpts, meridianv1.E_Target, "groups")
		proto.SetExtension(groupOpts, meridianv1.E_Op, meridianv1.Op_OP_ADD)
		evp.MessageType = append(evp.MessageType, &descriptorpb.DescriptorProto{
			Name: proto.String("GroupJoined"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name: proto.String("group"), JsonName: proto.String("group"), Number: proto.Int32(1),
				Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
				Options: groupOpts,
			}},
		})
		ev := msgProto(evp, "Event")
		ev.Field = append(ev.Field, &descriptorpb.FieldDescriptorProto{
			Name: proto.String("group_joined"), JsonName: proto.String("groupJoined"), Number: proto.Int32(60),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(),
			TypeName: proto.String(".meridian.v1.GroupJoined"), OneofIndex: proto.Int32(0),
			Options: fieldOptsProto(meridianv1.Residency_RESIDENCY_GLOBAL, 0),
		})
	})
	m, err := newMergerDynamic(identity, event)
	if err != nil {
		t.Fatalf("newMergerDynamic: %v", err)
	}

	traitsUpdate := func(node, eventID string, hlc int64, set map[string]protoreflect.Value) protoreflect.Message {
		ev := dynamicpb.NewMessage(event)
		setEnvelope(ev, node, eventID, hlc)
		bodyFD := event.Fields().ByName("traits_updated")
		body := ev.Mutable(bodyFD).Message()
		traitsFD := body.Descriptor().Fields().ByName("traits")
		traits := body.Mutable(traitsFD).Message()
		for name, v := range set {
			traits.Set(traits.Descriptor().Fields().ByName(protoreflect.Name(name)), v)
		}
		return ev
	}
	groupJoined := func(node, eventID string, hlc int64, group string) protoreflect.Message {
		ev := dynamicpb.NewMessage(event)
		setEnvelope(ev, node, eventID, hlc)
		body := ev.Mutable(event.Fields().ByName("group_joined")).Message()
		body.Set(body.Descriptor().Fields().ByName("group"), protoreflect.ValueOfString(group))
		return ev
	}
	var s *meridianv1.IdentityState
	for _, ev := range []protoreflect.Message{
		traitsUpdate("n1", "e1", 10, map[string]protoreflect.Value{"nickname": protoreflect.ValueOfString("Nick"), "last_seen_unix_ms": protoreflect.ValueOfInt64(7)}),
		traitsUpdate("n2", "e2", 5, map[string]protoreflect.Value{"nickname": protoreflect.ValueOfString("Old"), "last_seen_unix_ms": protoreflect.ValueOfInt64(9), "email": protoreflect.ValueOfString("a@x")}),
		groupJoined("n3", "e3", 6, "ops"),
	} {
		if s, err = m.apply(s, ev); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	view := m.view(s)
	traits := view.Get(identity.Fields().ByName("traits")).Message()
	get := func(name string) protoreflect.Value {
		return traits.Get(traits.Descriptor().Fields().ByName(protoreflect.Name(name)))
	}
	if got := get("nickname").String(); got != "Nick" {
		t.Errorf("nickname = %q, want the newer write Nick", got)
	}
	if got := get("last_seen_unix_ms").Int(); got != 9 {
		t.Errorf("last_seen_unix_ms = %d, want the max 9", got)
	}
	if got := get("email").String(); got != "a@x" {
		t.Errorf("email = %q", got)
	}
	groups := view.Get(identity.Fields().ByName("groups")).List()
	if groups.Len() != 1 || groups.Get(0).String() != "ops" {
		t.Errorf("groups = %v", groups)
	}
}

func setEnvelope(ev protoreflect.Message, node, eventID string, hlc int64) {
	f := ev.Descriptor().Fields()
	ev.Set(f.ByName("event_id"), protoreflect.ValueOfString(eventID))
	ev.Set(f.ByName("identity_id"), protoreflect.ValueOfString("id1"))
	ev.Set(f.ByName("origin_node"), protoreflect.ValueOfString(node))
	ev.Set(f.ByName("hlc"), protoreflect.ValueOfUint64(uint64(MakeTimestamp(hlc, 0))))
	ev.Set(f.ByName("sequence"), protoreflect.ValueOfUint64(1))
}

// TestEveryTraitIsMergedGenerically sets each Traits field (whatever fields
// the schema has today) through an event and reads it back from the view.
func TestEveryTraitIsMergedGenerically(t *testing.T) {
	m := newTestMerger(t)
	fields := (&meridianv1.Traits{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		t.Run(string(fd.Name()), func(t *testing.T) {
			traits := (&meridianv1.Traits{}).ProtoReflect()
			switch {
			case fd.IsMap():
				traits.Mutable(fd).Map().Set(sampleValue(fd.MapKey()).MapKey(), sampleValue(fd.MapValue()))
			case fd.Message() != nil:
				sub := traits.Mutable(fd).Message()
				sf := sub.Descriptor().Fields().Get(0)
				sub.Set(sf, sampleValue(sf))
			default:
				traits.Set(fd, sampleValue(fd))
			}
			want := traits.Interface().(*meridianv1.Traits)
			s := mustApply(t, m, nil, evt("n1", 1, "e1", 1, &meridianv1.TraitsUpdated{Traits: want}))
			assertEqual(t, m.View(s).GetTraits(), want)
		})
	}
}

func sampleValue(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("sample")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte("sample"))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(1)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(7)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(7)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(7)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(7)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(7)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(7)
	}
	panic("no sample for " + fd.Kind().String())
}

func TestNewMergerRejectsBadAnnotations(t *testing.T) {
	setTarget := func(msg, field, target string, op meridianv1.Op) func(idp, evp *descriptorpb.FileDescriptorProto) {
		return func(_, evp *descriptorpb.FileDescriptorProto) {
			o := fieldProto(evp, msg, field).Options
			proto.SetExtension(o, meridianv1.E_Target, target)
			proto.SetExtension(o, meridianv1.E_Op, op)
		}
	}
	setMerge := func(field string, rule meridianv1.MergeRule) func(idp, evp *descriptorpb.FileDescriptorProto) {
		return func(idp, _ *descriptorpb.FileDescriptorProto) {
			proto.SetExtension(fieldProto(idp, "Identity", field).Options, meridianv1.E_Merge, rule)
		}
	}
	tests := []struct {
		name   string
		mutate func(idp, evp *descriptorpb.FileDescriptorProto)
		field  string
	}{
		{"target missing on Identity", setTarget("RoleGranted", "role", "nope", meridianv1.Op_OP_ADD), "meridian.v1.RoleGranted.role"},
		{"target filled by the merger", setTarget("RoleGranted", "role", "identity_id", meridianv1.Op_OP_SET), "meridian.v1.RoleGranted.role"},
		{"op does not fit the rule", setTarget("RoleGranted", "role", "roles", meridianv1.Op_OP_INCREMENT), "meridian.v1.RoleGranted.role"},
		{"remove from a grow-only set", setTarget("SessionRevoked", "session_id", "revoked_sessions", meridianv1.Op_OP_REMOVE), "meridian.v1.SessionRevoked.session_id"},
		{"no op", setTarget("RoleGranted", "role", "roles", meridianv1.Op_OP_UNSPECIFIED), "meridian.v1.RoleGranted.role"},
		{"type mismatch", setTarget("LoginFailed", "at_unix_ms", "home_region", meridianv1.Op_OP_SET), "meridian.v1.LoginFailed.at_unix_ms"},
		{"add of the wrong element type", setTarget("RoleGranted", "role", "credentials", meridianv1.Op_OP_ADD), "meridian.v1.RoleGranted.role"},
		{"remove by the wrong key type", setTarget("LoginFailed", "at_unix_ms", "credentials", meridianv1.Op_OP_REMOVE), "meridian.v1.LoginFailed.at_unix_ms"},
		{"event field without target", func(_, evp *descriptorpb.FileDescriptorProto) {
			proto.ClearExtension(fieldProto(evp, "LoginFailed", "counted").Options, meridianv1.E_Target)
		}, "meridian.v1.LoginFailed.counted"},
		{"field without residency", func(idp, _ *descriptorpb.FileDescriptorProto) {
			proto.ClearExtension(fieldProto(idp, "Traits", "phone").Options, meridianv1.E_Residency)
		}, "meridian.v1.Traits.phone"},
		{"Identity field without merge rule", func(idp, _ *descriptorpb.FileDescriptorProto) {
			proto.ClearExtension(fieldProto(idp, "Identity", "home_region").Options, meridianv1.E_Merge)
		}, "meridian.v1.Identity.home_region"},
		{"set of messages without key", func(idp, _ *descriptorpb.FileDescriptorProto) {
			proto.ClearExtension(fieldProto(idp, "Credential", "credential_id").Options, meridianv1.E_Key)
		}, "meridian.v1.Credential"},
		{"two keys", func(idp, _ *descriptorpb.FileDescriptorProto) {
			proto.SetExtension(fieldProto(idp, "Session", "device").Options, meridianv1.E_Key, true)
		}, "meridian.v1.Session.device"},
		{"container field without presence", func(idp, _ *descriptorpb.FileDescriptorProto) {
			msgProto(idp, "Traits").Field = append(msgProto(idp, "Traits").Field, &descriptorpb.FieldDescriptorProto{
				Name: proto.String("plain"), JsonName: proto.String("plain"), Number: proto.Int32(60),
				Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
				Options: fieldOptsProto(meridianv1.Residency_RESIDENCY_GLOBAL, meridianv1.MergeRule_MERGE_RULE_LWW),
			})
		}, "meridian.v1.Traits.plain"},
		{"container field with a set rule", func(idp, _ *descriptorpb.FileDescriptorProto) {
			proto.SetExtension(fieldProto(idp, "Traits", "phone").Options, meridianv1.E_Merge, meridianv1.MergeRule_MERGE_RULE_ADD_WINS_SET)
		}, "meridian.v1.Traits.phone"},
		{"MAX on a message", setMerge("traits", meridianv1.MergeRule_MERGE_RULE_MAX), "meridian.v1.Identity.traits"},
		{"set rule on a singular field", setMerge("home_region", meridianv1.MergeRule_MERGE_RULE_ADD_WINS_SET), "meridian.v1.Identity.home_region"},
		{"counter on a string", setMerge("home_region", meridianv1.MergeRule_MERGE_RULE_COUNTER), "meridian.v1.Identity.home_region"},
		{"erasure on a non-bool", setMerge("failed_logins", meridianv1.MergeRule_MERGE_RULE_REMOVE_WINS), "meridian.v1.Identity.failed_logins"},
		{"LWW on a repeated field", setMerge("roles", meridianv1.MergeRule_MERGE_RULE_LWW), "meridian.v1.Identity.roles"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			identity, event := testSchema(t, tt.mutate)
			_, err := newMergerDynamic(identity, event)
			var se *SchemaError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSchema) {
				t.Fatalf("err = %v, want *SchemaError", err)
			}
			if se.Field != tt.field {
				t.Fatalf("error names %q (%s), want %q", se.Field, se.Rule, tt.field)
			}
		})
	}
	t.Run("unchanged schema compiles", func(t *testing.T) {
		identity, event := testSchema(t, func(_, _ *descriptorpb.FileDescriptorProto) {})
		if _, err := newMergerDynamic(identity, event); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPureImports keeps conflict a leaf without I/O or a wall clock.
func TestPureImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		for _, banned := range []string{"os", "io", "net", "time", "syscall", "github.com/nats-io", "github.com/cockroachdb"} {
			if imp == banned || strings.HasPrefix(imp, banned+"/") {
				t.Errorf("conflict imports %s; it must stay pure", imp)
			}
		}
	}
}
