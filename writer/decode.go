package writer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Media types DecodeRequest accepts.
const (
	ContentTypeJSON     = "application/json"
	ContentTypeProtobuf = "application/x-protobuf"
)

// protobufTypes are the names in use for binary protobuf bodies.
var protobufTypes = map[string]bool{
	ContentTypeProtobuf:               true,
	"application/protobuf":            true,
	"application/vnd.google.protobuf": true,
}

// eventJSONNames are the top-level keys an Event object may have (protojson
// accepts both the JSON and the proto name of each field).
var eventJSONNames = func() map[string]bool {
	names := map[string]bool{}
	fields := (&meridianv1.Event{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		names[fd.JSONName()] = true
		names[string(fd.Name())] = true
	}
	return names
}()

// DecodeRequest decodes the body of POST /v1/events. JSON (protojson) may be
// a single Event object, an array of them, or {"events":[...]}; protobuf is
// an AppendRequest. The body must be within MaxRequestBytes; the events are
// validated by Append. Errors are *Error (400, 413 or 415).
func (w *Writer) DecodeRequest(contentType string, body []byte) ([]*meridianv1.Event, error) {
	evs, err := w.decode(contentType, body)
	if err != nil {
		w.count(err)
		return nil, err
	}
	return evs, nil
}

func (w *Writer) decode(contentType string, body []byte) ([]*meridianv1.Event, *Error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if contentType == "" || err != nil || (mt != ContentTypeJSON && !protobufTypes[mt]) {
		e := newError(ErrUnsupportedMediaType, CodeUnsupportedMediaType, 415, "Content-Type",
			fmt.Sprintf("%q is not supported; send %s or %s", contentType, ContentTypeJSON, ContentTypeProtobuf))
		return nil, e
	}
	if len(body) > w.cfg.MaxRequestBytes {
		return nil, tooLargef("body", "request body is %d bytes; the limit is %d (MaxRequestBytes)", len(body), w.cfg.MaxRequestBytes)
	}
	var evs []*meridianv1.Event
	if mt == ContentTypeJSON {
		evs, err = decodeJSON(body)
	} else {
		evs, err = decodeProtobuf(body)
	}
	if err != nil {
		if e, ok := err.(*Error); ok {
			return nil, e
		}
		return nil, invalidf("body", "%v", err)
	}
	switch {
	case len(evs) == 0:
		return nil, invalidf("events", "required: at least one event")
	case len(evs) > w.cfg.MaxEvents:
		return nil, tooLargef("events", "%d events in one request; the limit is %d (MaxEvents)", len(evs), w.cfg.MaxEvents)
	}
	return evs, nil
}

func decodeProtobuf(body []byte) ([]*meridianv1.Event, error) {
	req := &meridianv1.AppendRequest{}
	if err := proto.Unmarshal(body, req); err != nil {
		return nil, invalidf("body", "malformed protobuf AppendRequest: %v", err)
	}
	if u := req.ProtoReflect().GetUnknown(); len(u) > 0 {
		num, _, _ := protowire.ConsumeTag(u)
		return nil, invalidf("body", "unknown field number %d in AppendRequest", num)
	}
	return req.Events, nil
}

var jsonOpts = protojson.UnmarshalOptions{}

func decodeJSON(body []byte) ([]*meridianv1.Event, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, invalidf("body", "empty JSON body")
	}
	switch trimmed[0] {
	case '[':
		var raws []json.RawMessage
		if err := json.Unmarshal(trimmed, &raws); err != nil {
			return nil, invalidf("body", "malformed JSON array of events: %v", err)
		}
		evs := make([]*meridianv1.Event, len(raws))
		for i, raw := range raws {
			ev, err := decodeJSONEvent(raw)
			if err != nil {
				return nil, err.at(i)
			}
			evs[i] = ev
		}
		return evs, nil
	case '{':
		var top map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &top); err != nil {
			return nil, invalidf("body", "malformed JSON object: %v", err)
		}
		if _, ok := top["events"]; ok {
			req := &meridianv1.AppendRequest{}
			if err := jsonOpts.Unmarshal(trimmed, req); err != nil {
				return nil, invalidf("events", "malformed JSON AppendRequest: %v", err)
			}
			return req.Events, nil
		}
		ev, err := decodeJSONEvent(trimmed)
		if err != nil {
			return nil, err.at(0)
		}
		return []*meridianv1.Event{ev}, nil
	}
	return nil, invalidf("body", "JSON body must be an event object, an array of events or {\"events\":[...]}")
}

// decodeJSONEvent names an unknown top-level key itself (the usual mistake:
// a misspelt or unknown event type) and leaves the rest to protojson.
func decodeJSONEvent(raw []byte) (*meridianv1.Event, *Error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, invalidf("", "an event must be a JSON object: %v", err)
	}
	for k := range top {
		if !eventJSONNames[k] {
			return nil, invalidf(k, "unknown field: not an event type or envelope field of this schema")
		}
	}
	ev := &meridianv1.Event{}
	if err := jsonOpts.Unmarshal(raw, ev); err != nil {
		return nil, invalidf("", "malformed event JSON: %v", err)
	}
	return ev, nil
}
