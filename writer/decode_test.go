package writer_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"google.golang.org/protobuf/proto"
)

func TestDecodeRequest(t *testing.T) {
	e := newEnv(t, "eu-west", func(c *writer.Config) { c.MaxEventBytes = 4096; c.MaxRequestBytes = 8192; c.MaxEvents = 3 })
	id := newIdentity()
	ev := `{"identity_id":"` + id + `","home_region":"eu-west","role_granted":{"role":"admin"}}`
	evCamel := `{"identityId":"` + id + `","homeRegion":"eu-west","roleGranted":{"role":"admin"}}`
	pb := func(evs ...*meridianv1.Event) string {
		b, err := proto.Marshal(&meridianv1.AppendRequest{Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	good := roleGranted(id, "eu-west", "admin")

	ok := []struct {
		name, ct, body string
		n              int
	}{
		{"json object", "application/json", ev, 1},
		{"json camelCase names", "application/json; charset=utf-8", evCamel, 1},
		{"json array", "application/json", "[" + ev + "," + ev + "]", 2},
		{"json events object", "application/json", `{"events":[` + ev + `]}`, 1},
		{"protobuf", "application/x-protobuf", pb(good, good), 2},
		{"protobuf alias", "application/protobuf", pb(good), 1},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			evs, err := e.w.DecodeRequest(c.ct, []byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != c.n || evs[0].GetRoleGranted().GetRole() != "admin" || evs[0].IdentityId != id {
				t.Fatalf("decoded %v", evs)
			}
		})
	}

	bad := []struct {
		name, ct, body string
		code, field    string
		status, index  int
		is             error
	}{
		{"no content type", "", ev, writer.CodeUnsupportedMediaType, "Content-Type", 415, -1, writer.ErrUnsupportedMediaType},
		{"text/plain", "text/plain", ev, writer.CodeUnsupportedMediaType, "Content-Type", 415, -1, writer.ErrUnsupportedMediaType},
		{"body over MaxRequestBytes", "application/json", strings.Repeat(" ", 8193), writer.CodeTooLarge, "body", 413, -1, writer.ErrTooLarge},
		{"more than MaxEvents", "application/json", "[" + strings.Repeat(ev+",", 3) + ev + "]", writer.CodeTooLarge, "events", 413, -1, writer.ErrTooLarge},
		{"empty body", "application/json", "  ", writer.CodeInvalid, "body", 400, -1, writer.ErrInvalid},
		{"malformed json", "application/json", `{"identity_id":`, writer.CodeInvalid, "body", 400, -1, writer.ErrInvalid},
		{"json scalar", "application/json", `42`, writer.CodeInvalid, "body", 400, -1, writer.ErrInvalid},
		{"empty array", "application/json", `[]`, writer.CodeInvalid, "events", 400, -1, writer.ErrInvalid},
		{"unknown event type", "application/json", `{"identity_id":"` + id + `","role_grantd":{"role":"a"}}`, writer.CodeInvalid, "role_grantd", 400, 0, writer.ErrInvalid},
		{"unknown type in array", "application/json", "[" + ev + `,{"bogus":1}]`, writer.CodeInvalid, "bogus", 400, 1, writer.ErrInvalid},
		{"unknown nested field", "application/json", `{"identity_id":"x","role_granted":{"rolle":"a"}}`, writer.CodeInvalid, "", 400, 0, writer.ErrInvalid},
		{"wrong json type", "application/json", `{"identity_id":5}`, writer.CodeInvalid, "", 400, 0, writer.ErrInvalid},
		{"array element not an object", "application/json", `[1]`, writer.CodeInvalid, "", 400, 0, writer.ErrInvalid},
		{"bad events object", "application/json", `{"events":[{"nope":1}]}`, writer.CodeInvalid, "events", 400, -1, writer.ErrInvalid},
		{"malformed protobuf", "application/x-protobuf", "\x0a\xff\xff", writer.CodeInvalid, "body", 400, -1, writer.ErrInvalid},
		{"protobuf with unknown request field", "application/x-protobuf", "\x10\x01", writer.CodeInvalid, "body", 400, -1, writer.ErrInvalid},
		{"empty protobuf", "application/x-protobuf", "", writer.CodeInvalid, "events", 400, -1, writer.ErrInvalid},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.w.DecodeRequest(c.ct, []byte(c.body))
			var we *writer.Error
			if !errors.As(err, &we) {
				t.Fatalf("err = %v; want *writer.Error", err)
			}
			if we.Code != c.code || we.Field != c.field || we.Status != c.status || we.Index != c.index || !errors.Is(err, c.is) {
				t.Errorf("got %s/%q/%d/index %d; want %s/%q/%d/index %d (%v)", we.Code, we.Field, we.Status, we.Index, c.code, c.field, c.status, c.index, err)
			}
		})
	}
}

func TestTokenRoundTrip(t *testing.T) {
	tok := &meridianv1.ConsistencyToken{OriginRegion: "eu-west", OriginNode: "n1", Sequences: map[string]uint64{"global": 7, "eu": 9}}
	s := writer.EncodeToken(tok)
	if s != writer.EncodeToken(tok) || strings.ContainsAny(s, "+/=") {
		t.Fatalf("token %q is not deterministic unpadded base64url", s)
	}
	got, err := writer.DecodeToken(s)
	if err != nil || !proto.Equal(got, tok) {
		t.Fatalf("DecodeToken = %v, %v", got, err)
	}
	for _, bad := range []string{"", "!!", "AAAA", writer.EncodeToken(&meridianv1.ConsistencyToken{OriginRegion: "x"}), strings.Repeat("A", 5000)} {
		if _, err := writer.DecodeToken(bad); !errors.Is(err, writer.ErrInvalid) {
			t.Errorf("DecodeToken(%.20q) = %v; want ErrInvalid", bad, err)
		}
	}
}

func TestStampSequence(t *testing.T) {
	ev := roleGranted(newIdentity(), "eu-west", "r")
	b, _ := proto.Marshal(ev)
	for _, seq := range []uint64{1, 300, 1 << 40} {
		out := &meridianv1.Event{}
		if err := proto.Unmarshal(writer.StampSequence(seq, append([]byte(nil), b...)), out); err != nil || out.Sequence != seq {
			t.Fatalf("stamped %d, decoded %d (%v)", seq, out.Sequence, err)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	e := newEnv(t, "eu-west")
	base := writer.Config{Region: "eu-west", Node: "n", Topology: testTopology, Log: e.log, Keys: e.keys, ZoneKeys: e.zones, HashKey: e.hash}
	for name, f := range map[string]func(*writer.Config){
		"no region":           func(c *writer.Config) { c.Region = "" },
		"unknown region":      func(c *writer.Config) { c.Region = "mars" },
		"no node":             func(c *writer.Config) { c.Node = "" },
		"no log":              func(c *writer.Config) { c.Log = nil },
		"no keys":             func(c *writer.Config) { c.Keys = nil },
		"no topology":         func(c *writer.Config) { c.Topology = nil },
		"short hash key":      func(c *writer.Config) { c.HashKey = []byte("short") },
		"no zone key":         func(c *writer.Config) { c.ZoneKeys = nil },
		"request below event": func(c *writer.Config) { c.MaxEventBytes = 100; c.MaxRequestBytes = 50 },
	} {
		cfg := base
		f(&cfg)
		if _, err := writer.New(cfg); err == nil {
			t.Errorf("%s: New accepted the config", name)
		}
	}
	if _, err := writer.New(base); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}

// The hand-written token encoding must equal protobuf's deterministic one.
func TestTokenEncodingMatchesProto(t *testing.T) {
	for _, tok := range []*meridianv1.ConsistencyToken{
		{OriginRegion: "eu-west", OriginNode: "n1", Sequences: map[string]uint64{"global": 1 << 40, "eu": 0, "us": 300}},
		{OriginRegion: "r", OriginNode: "n", Sequences: map[string]uint64{"global": 1}},
		{},
	} {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(tok)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := writer.EncodeToken(tok), base64.RawURLEncoding.EncodeToString(b); got != want {
			t.Errorf("EncodeToken(%v) = %s; proto gives %s", tok, got, want)
		}
	}
}
