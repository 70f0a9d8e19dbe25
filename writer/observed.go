package writer

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// Causal contexts (issue #4). An event that removes set elements carries
// Event.observed: per origin node, the HLC of the newest event of that node
// the region had applied when the event was written (Config.Observed, the
// projector's). The merger then cuts only the adds the remove observed, so
// a grant made concurrently elsewhere, which this region had not seen,
// survives a revoke even when stamped below it (conflict.AWElement). Other
// events do not need it and go without, which keeps records small.

var evObserved = fieldNum(&meridianv1.Event{}, "observed")

// removeBodies marks the body field numbers of event types with an
// OP_REMOVE field, read from the schema's options.
var removeBodies = func() map[protowire.Number]bool {
	out := map[protowire.Number]bool{}
	fields := (&meridianv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("body").Fields()
	for i := range fields.Len() {
		of := fields.Get(i)
		md := of.Message()
		if md == nil {
			continue
		}
		for j := range md.Fields().Len() {
			fd := md.Fields().Get(j)
			if proto.GetExtension(fd.Options(), meridianv1.E_Op).(meridianv1.Op) == meridianv1.Op_OP_REMOVE {
				out[of.Number()] = true
			}
		}
	}
	return out
}()

var ctxMarshal = proto.MarshalOptions{Deterministic: true}

// observed returns the encoded Event.observed field (tag included) for the
// records of p, or nil: for events without a remove, and when the writer has
// no Config.Observed or it reports no context. Node ids that are empty and
// HLCs that are 0 are left out (they would name nothing).
func (w *Writer) observed(p *prepared) []byte {
	if w.cfg.Observed == nil || !removeBodies[p.plan.num] {
		return nil
	}
	seen := w.cfg.Observed()
	if seen == nil {
		return nil
	}
	ctx := &meridianv1.CausalContext{Hlc: make(map[string]uint64, len(seen))}
	for n, h := range seen {
		if n != "" && h != 0 {
			ctx.Hlc[n] = h
		}
	}
	b, err := ctxMarshal.Marshal(ctx)
	if err != nil {
		return nil // a map of strings and integers always marshals
	}
	out := protowire.AppendTag(make([]byte, 0, len(b)+1+protowire.SizeVarint(uint64(len(b)))+1), evObserved, protowire.BytesType)
	return protowire.AppendBytes(out, b)
}
