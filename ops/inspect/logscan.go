package inspect

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/eventlog"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// ScanLog calls fn with every record of the log from its first sequence to
// the last one at the call, in order. The record's Data is valid only
// during the call.
func ScanLog(ctx context.Context, l *eventlog.Log, fn func(rec eventlog.Record) error) error {
	last := l.LastSeq()
	rd := l.NewReader(l.FirstSeq())
	defer rd.Close()
	for n := 0; rd.Next(); n++ {
		rec := rd.Record()
		if rec.Seq > last {
			return nil
		}
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if err := rd.Err(); err != nil {
		return fmt.Errorf("inspect: read log: %w", err)
	}
	return nil
}

// AuditLog audits every record of a region's log.
func (a *Auditor) AuditLog(ctx context.Context, l *eventlog.Log) ([]Finding, uint64, error) {
	var out []Finding
	var n uint64
	err := ScanLog(ctx, l, func(rec eventlog.Record) error {
		n++
		out = append(out, a.Record("log", rec.Seq, "", rec.Data)...)
		return nil
	})
	return out, n, err
}

// AuditModel audits every identity of a region's read model.
func (a *Auditor) AuditModel(m StateRanger) ([]Finding, uint64, error) {
	var out []Finding
	var n uint64
	_, err := m.RangeStates(func(id string, g, r *meridianv1.IdentityState, rerr error) error {
		n++
		out = append(out, a.State(id, g, r, rerr)...)
		return nil
	})
	return out, n, err
}

// Header is what the operator tools read of an encoded Event without
// decoding it: its identity, part, zone and whether a data key record
// still carries key material.
type Header struct {
	EventID, IdentityID, Zone, OriginNode string
	Part                                  meridianv1.Part
	Sequence                              uint64
	WrappedKey                            bool // a DataKey with wrapped_key set
}

var errMalformed = errors.New("inspect: malformed record")

// Event field numbers (see events.proto).
const (
	fEventID    protowire.Number = 1
	fIdentityID protowire.Number = 2
	fOriginNode protowire.Number = 4
	fSequence   protowire.Number = 5
	fZone       protowire.Number = 7
	fPart       protowire.Number = 9
	fDataKey    protowire.Number = 33
	fWrappedKey protowire.Number = 4 // DataKey.wrapped_key
)

// ReadHeader scans the top-level fields of an encoded Event; later
// occurrences of a field win, as in protobuf decoding.
func ReadHeader(b []byte) (Header, error) {
	var h Header
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return h, fmt.Errorf("%w: %v", errMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return h, fmt.Errorf("%w: field %d: %v", errMalformed, num, protowire.ParseError(m))
			}
			switch num {
			case fEventID:
				h.EventID = string(v)
			case fIdentityID:
				h.IdentityID = string(v)
			case fOriginNode:
				h.OriginNode = string(v)
			case fZone:
				h.Zone = string(v)
			case fDataKey:
				h.WrappedKey = hasField(v, fWrappedKey)
			}
			b = b[m:]
		case typ == protowire.VarintType && (num == fPart || num == fSequence):
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return h, fmt.Errorf("%w: field %d: %v", errMalformed, num, protowire.ParseError(m))
			}
			if num == fPart {
				h.Part = meridianv1.Part(v)
			} else {
				h.Sequence = v
			}
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return h, fmt.Errorf("%w: field %d: %v", errMalformed, num, protowire.ParseError(m))
			}
			b = b[m:]
		}
	}
	return h, nil
}

func hasField(b []byte, want protowire.Number) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return false
		}
		if num == want && typ == protowire.BytesType {
			if v, _ := protowire.ConsumeBytes(b); len(v) > 0 {
				return true
			}
		}
		b = b[m:]
	}
	return false
}

// KeyRecords returns the identity's data-key records in the log that still
// carry key material (copied), and how many were already redacted.
func KeyRecords(ctx context.Context, l *eventlog.Log, identity string) (live []eventlog.Record, redacted int, err error) {
	err = ScanLog(ctx, l, func(rec eventlog.Record) error {
		h, err := ReadHeader(rec.Data)
		if err != nil || h.Part != meridianv1.Part_PART_KEY || h.IdentityID != identity {
			return nil // an undecodable record is the audit's business
		}
		if !h.WrappedKey {
			redacted++
			return nil
		}
		live = append(live, eventlog.Record{Seq: rec.Seq, Data: append([]byte(nil), rec.Data...)})
		return nil
	})
	return live, redacted, err
}

// RedactKeyRecord returns a data-key record without its key material (the
// wrapped key and its nonce; the key id stays, so the record still routes
// and deduplicates as before) and the bytes removed, which no store may
// keep afterwards.
func RedactKeyRecord(data []byte) (out []byte, secrets [][]byte, err error) {
	ev := &meridianv1.Event{}
	if err := proto.Unmarshal(data, ev); err != nil {
		return nil, nil, fmt.Errorf("inspect: redact: %w", err)
	}
	dk := ev.GetDataKey()
	if ev.GetPart() != meridianv1.Part_PART_KEY || dk == nil {
		return nil, nil, fmt.Errorf("inspect: redact: record %s is not a data key record", ev.GetEventId())
	}
	if len(dk.GetWrappedKey()) > 0 {
		secrets = append(secrets, dk.GetWrappedKey())
	}
	dk.WrappedKey, dk.Nonce = nil, nil
	out, err = proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		return nil, nil, fmt.Errorf("inspect: redact: %w", err)
	}
	return out, secrets, nil
}
