package ops

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/eventlog"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

// routeRecord is the shipper's route of a region's records, the same
// subject and message id the node's own shipper gives them (the contract
// of the brief: meridian.<region>.<zone>.<type>, key records
// ...<zone>.key.<identity>, record ids as Nats-Msg-Id). It decodes the
// whole record: re-seeding is not the hot path.
func routeRecord(regionName string) func(rec eventlog.Record) (string, string, error) {
	return func(rec eventlog.Record) (string, string, error) {
		ev := &meridianv1.Event{}
		if err := proto.Unmarshal(rec.Data, ev); err != nil {
			return "", "", fmt.Errorf("record does not decode: %w", err)
		}
		zone, typ := writer.SubjectZone(ev), writer.SubjectType(ev)
		switch {
		case typ == "":
			return "", "", fmt.Errorf("record %s has no body", ev.GetEventId())
		case zone == "":
			return "", "", fmt.Errorf("record %s (part %s) has no zone", ev.GetEventId(), ev.GetPart())
		case ev.GetPart() == meridianv1.Part_PART_KEY:
			return region.KeySubject(regionName, zone, ev.GetIdentityId()), writer.RecordID(ev), nil
		}
		return region.Subject(regionName, zone, typ), writer.RecordID(ev), nil
	}
}
