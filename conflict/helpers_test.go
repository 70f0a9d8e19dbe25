package conflict

import (
	"flag"
	"math/rand"
	"testing"
	"testing/quick"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func newTestMerger(t testing.TB) *Merger {
	t.Helper()
	m, err := NewMerger()
	if err != nil {
		t.Fatalf("NewMerger: %v", err)
	}
	return m
}

// evt builds a stamped whole event (PART_UNSPECIFIED) for identity "id1".
func evt(node string, hlcMs int64, id string, seq uint64, body proto.Message) *meridianv1.Event {
	ev := &meridianv1.Event{
		EventId:    id,
		IdentityId: "id1",
		OriginNode: node,
		Hlc:        uint64(MakeTimestamp(hlcMs, 0)),
		Sequence:   seq,
	}
	setBody(ev, body)
	return ev
}

// setBody sets the oneof member whose message type is body's.
func setBody(ev *meridianv1.Event, body proto.Message) {
	r := ev.ProtoReflect()
	oneof := r.Descriptor().Oneofs().ByName("body")
	fields := oneof.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Message().FullName() == body.ProtoReflect().Descriptor().FullName() {
			r.Set(fd, protoreflect.ValueOfMessage(body.ProtoReflect()))
			return
		}
	}
	panic("no body field for " + string(body.ProtoReflect().Descriptor().FullName()))
}

func mustApply(t testing.TB, m *Merger, s *meridianv1.IdentityState, evs ...*meridianv1.Event) *meridianv1.IdentityState {
	t.Helper()
	for _, ev := range evs {
		var err error
		if s, err = m.Apply(s, ev); err != nil {
			t.Fatalf("Apply(%s): %v", ev.GetEventId(), err)
		}
	}
	return s
}

func js(m proto.Message) string {
	return protojson.MarshalOptions{Multiline: true}.Format(m)
}

func assertEqual(t testing.TB, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", js(got), js(want))
	}
}

// split mimics the writer: the GLOBAL part keeps GLOBAL fields, the
// RESIDENT part RESIDENT fields and (key) fields; parts without a field of
// their own are not emitted. Each part is its own record, so it gets its own
// sequence.
func split(m *Merger, ev *meridianv1.Event, gseq, rseq uint64) (g, r *meridianv1.Event) {
	g, r = proto.Clone(ev).(*meridianv1.Event), proto.Clone(ev).(*meridianv1.Event)
	g.Part, g.Sequence = meridianv1.Part_PART_GLOBAL, gseq
	r.Part, r.Sequence = meridianv1.Part_PART_RESIDENT, rseq
	body := func(e *meridianv1.Event) protoreflect.Message {
		rm := e.ProtoReflect()
		return rm.Get(rm.WhichOneof(rm.Descriptor().Oneofs().ByName("body"))).Message()
	}
	gOwn := keepClass(m, body(g), meridianv1.Residency_RESIDENCY_GLOBAL)
	rOwn := keepClass(m, body(r), meridianv1.Residency_RESIDENCY_RESIDENT)
	// Fields that fire without a value (OP_INCREMENT, OP_ERASE) belong to
	// their class's part even when unset.
	for _, f := range m.bodies[bodyNumber(ev)].fields {
		if f.op == meridianv1.Op_OP_INCREMENT || f.op == meridianv1.Op_OP_ERASE {
			if f.residency == meridianv1.Residency_RESIDENCY_GLOBAL {
				gOwn = true
			} else {
				rOwn = true
			}
		}
	}
	if !gOwn {
		g = nil
	}
	if !rOwn {
		r = nil
	}
	return g, r
}

func bodyNumber(ev *meridianv1.Event) protoreflect.FieldNumber {
	rm := ev.ProtoReflect()
	return rm.WhichOneof(rm.Descriptor().Oneofs().ByName("body")).Number()
}

// keepClass clears the fields of msg that do not belong to class (keeping
// (key) fields) and reports whether a field of class itself remains.
func keepClass(m *Merger, msg protoreflect.Message, class meridianv1.Residency) bool {
	own := false
	fields := msg.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !msg.Has(fd) {
			continue
		}
		o := m.opts[fd.FullName()]
		if o.residency == meridianv1.Residency_RESIDENCY_GLOBAL && fd.Message() != nil && !fd.IsMap() {
			if fd.IsList() {
				l := msg.Get(fd).List()
				for j := range l.Len() {
					own = keepClass(m, l.Get(j).Message(), class) || own
				}
			} else {
				own = keepClass(m, msg.Mutable(fd).Message(), class) || own
			}
			continue
		}
		switch {
		case o.residency == class:
			own = true
		case o.key:
		default:
			msg.Clear(fd)
		}
	}
	return own
}

var seed = flag.Int64("seed", 1, "seed of the property tests (fixed so that runs are reproducible; vary it to explore)")

// quickConfig runs n property cases from the -seed.
func quickConfig(n int) *quick.Config {
	return &quick.Config{MaxCount: n, Rand: rand.New(rand.NewSource(*seed))}
}
