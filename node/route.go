package node

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meridian-id/meridian/eventlog"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

// Route returns the shipper's Route for a region: a record's subject is
// meridian.<region>.<zone>.<type> (key records: ...<zone>.key.<identity>)
// and its message id the record id, so that JetStream deduplicates re-sent
// records and never folds one part into another.
//
// The route runs once per shipped record, so it reads only the envelope
// fields it needs straight off the wire instead of decoding the whole event;
// TestRouteMatchesFullDecode checks it agrees with a full decode.
func Route(regionName string) func(rec eventlog.Record) (string, string, error) {
	return func(rec eventlog.Record) (string, string, error) {
		h, err := readRouteHeader(rec.Data)
		if err != nil {
			return "", "", err
		}
		ev := &meridianv1.Event{
			EventId:    h.eventID,
			IdentityId: h.identityID,
			Zone:       h.zone,
			Part:       meridianv1.Part(h.part),
		}
		if h.body == 0 {
			return "", "", fmt.Errorf("record %s has no body", h.eventID)
		}
		fd := bodyFields.ByNumber(h.body)
		if fd == nil {
			return "", "", fmt.Errorf("record %s has unknown body field %d", h.eventID, h.body)
		}
		zone := writer.SubjectZone(ev)
		if zone == "" {
			return "", "", fmt.Errorf("record %s (part %s) has no zone", h.eventID, ev.GetPart())
		}
		if ev.GetPart() == meridianv1.Part_PART_KEY {
			if h.keyID == "" {
				return "", "", fmt.Errorf("key record of identity %s has no key id", h.identityID)
			}
			ev.Body = &meridianv1.Event_DataKey{DataKey: &meridianv1.DataKey{KeyId: h.keyID}}
			return region.KeySubject(regionName, zone, h.identityID), writer.RecordID(ev), nil
		}
		return region.Subject(regionName, zone, string(fd.Name())), writer.RecordID(ev), nil
	}
}

var (
	eventFields = (&meridianv1.Event{}).ProtoReflect().Descriptor().Fields()
	bodyFields  = (&meridianv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("body").Fields()
	fEventID    = eventFields.ByName("event_id").Number()
	fIdentityID = eventFields.ByName("identity_id").Number()
	fZone       = eventFields.ByName("zone").Number()
	fPart       = eventFields.ByName("part").Number()
	fDataKey    = bodyFields.ByName("data_key").Number()
	fKeyID      = (&meridianv1.DataKey{}).ProtoReflect().Descriptor().Fields().ByName("key_id").Number()
)

// routeHeader is what routing needs of an encoded Event.
type routeHeader struct {
	eventID, identityID, zone, keyID string
	part                             uint64
	body                             protoreflect.FieldNumber
}

var errMalformed = errors.New("malformed record")

// readRouteHeader scans the top-level fields of an encoded Event. Later
// occurrences of a field win, as in protobuf decoding.
func readRouteHeader(b []byte) (routeHeader, error) {
	var h routeHeader
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return h, fmt.Errorf("%w: %v", errMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return h, fmt.Errorf("%w: field %d: %v", errMalformed, num, protowire.ParseError(m))
			}
			switch {
			case num == fEventID:
				h.eventID = string(v)
			case num == fIdentityID:
				h.identityID = string(v)
			case num == fZone:
				h.zone = string(v)
			case bodyFields.ByNumber(num) != nil:
				h.body = num
				if num == fDataKey {
					var k int
					if h.keyID, k = readKeyID(v); k < 0 {
						return h, fmt.Errorf("%w: data_key: %v", errMalformed, protowire.ParseError(k))
					}
				}
			}
			b = b[m:]
			continue
		}
		if typ == protowire.VarintType && num == fPart {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return h, fmt.Errorf("%w: part: %v", errMalformed, protowire.ParseError(m))
			}
			h.part = v
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return h, fmt.Errorf("%w: field %d: %v", errMalformed, num, protowire.ParseError(m))
		}
		b = b[m:]
	}
	return h, nil
}

func readKeyID(b []byte) (string, int) {
	var id string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", n
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return "", m
		}
		if num == fKeyID && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			id = string(v)
		}
		b = b[m:]
	}
	return id, 0
}
