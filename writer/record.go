package writer

import (
	"encoding/binary"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// GlobalZone is the subject zone of GLOBAL records (and of heartbeats). It is
// region's name for it: subjects are spelled in one place only.
const GlobalZone = region.GlobalZone

// sequenceField is Event.sequence.
const sequenceField protowire.Number = 5

// stampRoom is the spare capacity the writer leaves after each record so
// that StampSequence appends in place: a one-byte tag and a varint.
const stampRoom = 1 + binary.MaxVarintLen64

// StampSequence is the eventlog Options.Stamp hook: it appends Event field 5
// (sequence) to the encoded record. Protobuf decoding keeps the last value of
// a scalar field, and the writer never sets field 5 itself, so the stored
// record decodes with its log sequence. Wire it when opening the log:
//
//	eventlog.Open(eventlog.Options{Dir: dir, Stamp: writer.StampSequence})
func StampSequence(seq uint64, rec []byte) []byte {
	rec = protowire.AppendTag(rec, sequenceField, protowire.VarintType)
	return protowire.AppendVarint(rec, seq)
}

// RecordID is the id of a stored record, used as Nats-Msg-Id: the event id
// qualified by the part (":g", ":r"), or the key id + ":k" for key records.
// Each part has its own id so that deduplication never folds one into the
// other.
func RecordID(ev *meridianv1.Event) string {
	switch ev.GetPart() {
	case meridianv1.Part_PART_GLOBAL:
		return ev.GetEventId() + ":g"
	case meridianv1.Part_PART_RESIDENT:
		return ev.GetEventId() + ":r"
	case meridianv1.Part_PART_KEY:
		return ev.GetDataKey().GetKeyId() + ":k"
	}
	return ev.GetEventId()
}

var bodyOneof = (&meridianv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("body")

// SubjectType is the <type> token of the record's subject: the snake_case
// name of the body field (for example "identity_created", "heartbeat"), or
// "key" for data-key records; "" if the event has no body.
func SubjectType(ev *meridianv1.Event) string {
	fd := ev.ProtoReflect().WhichOneof(bodyOneof)
	if fd == nil {
		return ""
	}
	if fd.Number() == dataKeyField {
		return "key"
	}
	return string(fd.Name())
}

var dataKeyField = bodyFieldNumber("data_key")

func bodyFieldNumber(name protoreflect.Name) protoreflect.FieldNumber {
	return bodyOneof.Fields().ByName(name).Number()
}

// SubjectZone is the <zone> token of the record's subject: "global" for
// GLOBAL records, the identity's zone for RESIDENT and key records.
func SubjectZone(ev *meridianv1.Event) string {
	switch ev.GetPart() {
	case meridianv1.Part_PART_RESIDENT, meridianv1.Part_PART_KEY:
		return ev.GetZone()
	}
	return GlobalZone
}
