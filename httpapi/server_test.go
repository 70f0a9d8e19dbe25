package httpapi_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/httpapi"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"google.golang.org/protobuf/proto"
)

type topology map[string]string

func (t topology) ZoneOf(r string) (string, bool) { z, ok := t[r]; return z, ok }

type node struct {
	log *eventlog.Log
	srv *httptest.Server
}

// newNode runs a real writer (real Pebble log and key store) behind the API
// in region eu-west.
func newNode(t *testing.T, cfg httpapi.Config, region string) *node {
	t.Helper()
	dir := t.TempDir()
	l, err := eventlog.Open(eventlog.Options{Dir: filepath.Join(dir, "log"), Stamp: writer.StampSequence})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ks, err := keystore.Open(keystore.Options{Dir: filepath.Join(dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	var zk [32]byte
	rand.Read(zk[:])
	w, err := writer.New(writer.Config{
		Region: region, Node: "n1",
		Topology: topology{"eu-west": "eu", "us-east": "us"},
		Log:      l, Keys: ks,
		ZoneKeys:      map[string]keystore.ZoneKey{"eu": {ID: "eu-1", Key: zk}, "us": {ID: "us-1", Key: zk}},
		HashKey:       []byte("0123456789abcdef"),
		MaxEventBytes: 4096, MaxRequestBytes: 16384,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Writer = w
	s, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &node{log: l, srv: srv}
}

func post(t *testing.T, url, ctype string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func jsonEvent(identity, home, body string) string {
	return `{"identity_id":"` + identity + `","home_region":"` + home + `",` + body + `}`
}

type errResp struct {
	Error struct {
		Code, Field, Message string
		HomeRegion           string `json:"home_region"`
		Index                *int
	}
}

func TestPostEventsJSON(t *testing.T) {
	n := newNode(t, httpapi.Config{}, "eu-west")
	id := uuid.NewString()
	body := "[" + jsonEvent(id, "eu-west", `"identity_created":{"traits":{"email":"a@example.com","locale":"de"}}`) + "," +
		jsonEvent(id, "eu-west", `"role_granted":{"role":"admin"}`) + "]"
	resp, b := post(t, n.srv.URL+"/v1/events", "application/json", []byte(body))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var r struct {
		EventIDs []string `json:"event_ids"`
		Token    string
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.EventIDs) != 2 || r.Token == "" || resp.Header.Get(httpapi.TokenHeader) != r.Token {
		t.Fatalf("response %s, header %q", b, resp.Header.Get(httpapi.TokenHeader))
	}
	tok, err := writer.DecodeToken(r.Token)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Sequences["global"] == 0 || tok.Sequences["eu"] == 0 || n.log.LastSeq() != 4 {
		t.Errorf("token %v, LastSeq %d; want global and eu sequences, 4 records (2 global, key, resident)", tok, n.log.LastSeq())
	}
}

func TestPostEventsProtobuf(t *testing.T) {
	n := newNode(t, httpapi.Config{}, "eu-west")
	req := &meridianv1.AppendRequest{Events: []*meridianv1.Event{{
		IdentityId: uuid.NewString(), HomeRegion: "eu-west",
		Body: &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: "r"}},
	}}}
	body, _ := proto.Marshal(req)
	resp, b := post(t, n.srv.URL+"/v1/events", "application/x-protobuf", body, "Accept", "application/x-protobuf")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-protobuf" {
		t.Fatalf("status %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var r meridianv1.AppendResponse
	if err := proto.Unmarshal(b, &r); err != nil || len(r.EventIds) != 1 || r.Token != resp.Header.Get(httpapi.TokenHeader) {
		t.Fatalf("AppendResponse %v (%v)", &r, err)
	}
}

func TestPostEventsErrors(t *testing.T) {
	id := uuid.NewString()
	cases := []struct {
		name, region, ctype, body string
		close                     bool // close the log first
		status                    int
		code, field, home         string
		index                     int // -1: absent
	}{
		{name: "invalid", ctype: "application/json", body: jsonEvent("", "eu-west", `"role_granted":{"role":"r"}`),
			status: 400, code: "invalid_argument", field: "identity_id", index: 0},
		{name: "invalid second event", ctype: "application/json",
			body:   "[" + jsonEvent(id, "eu-west", `"role_granted":{"role":"r"}`) + "," + jsonEvent(id, "eu-west", `"role_granted":{}`) + "]",
			status: 400, code: "invalid_argument", field: "role_granted.role", index: 1},
		{name: "unknown type", ctype: "application/json", body: jsonEvent(id, "eu-west", `"role_grant":{"role":"r"}`),
			status: 400, code: "invalid_argument", field: "role_grant", index: 0},
		{name: "malformed json", ctype: "application/json", body: `{"identity_id":`, status: 400, code: "invalid_argument", field: "body", index: -1},
		{name: "malformed protobuf", ctype: "application/x-protobuf", body: "\x0a\xff", status: 400, code: "invalid_argument", field: "body", index: -1},
		{name: "body over limit", ctype: "application/json", body: strings.Repeat(" ", 20000), status: 413, code: "payload_too_large", field: "body", index: -1},
		{name: "event over limit", ctype: "application/json", body: jsonEvent(id, "eu-west", `"role_granted":{"role":"`+strings.Repeat("r", 5000)+`"}`),
			status: 413, code: "payload_too_large", field: "", index: 0},
		{name: "no content type", body: "{}", status: 415, code: "unsupported_media_type", field: "Content-Type", index: -1},
		{name: "xml", ctype: "application/xml", body: "<a/>", status: 415, code: "unsupported_media_type", field: "Content-Type", index: -1},
		{name: "wrong region", region: "us-east", ctype: "application/json",
			body:   jsonEvent(id, "eu-west", `"traits_updated":{"traits":{"name":"Ana"}}`),
			status: 421, code: "wrong_region", field: "traits_updated.traits.name", home: "eu-west", index: 0},
		{name: "log closed", close: true, ctype: "application/json", body: jsonEvent(id, "eu-west", `"role_granted":{"role":"r"}`),
			status: 503, code: "unavailable", index: -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			region := c.region
			if region == "" {
				region = "eu-west"
			}
			n := newNode(t, httpapi.Config{}, region)
			if c.close {
				n.log.Close()
			}
			before := n.log.LastSeq()
			resp, b := post(t, n.srv.URL+"/v1/events", c.ctype, []byte(c.body))
			if resp.StatusCode != c.status {
				t.Fatalf("status %d; want %d (%s)", resp.StatusCode, c.status, b)
			}
			var e errResp
			if err := json.Unmarshal(b, &e); err != nil || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("error body %q: %v", b, err)
			}
			if e.Error.Code != c.code || e.Error.Field != c.field || e.Error.HomeRegion != c.home || e.Error.Message == "" {
				t.Errorf("error = %+v; want code %s field %q home %q", e.Error, c.code, c.field, c.home)
			}
			if (c.index < 0) != (e.Error.Index == nil) || (e.Error.Index != nil && *e.Error.Index != c.index) {
				t.Errorf("index = %v; want %d", e.Error.Index, c.index)
			}
			if c.status == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if n.log.LastSeq() != before {
				t.Error("log changed")
			}
		})
	}
}

func TestHealthzAndRoutes(t *testing.T) {
	var healthErr error
	extra := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "identity "+r.PathValue("id")) })
	n := newNode(t, httpapi.Config{
		Health: func() error { return healthErr },
		Routes: map[string]http.Handler{"GET /v1/identities/{id}": extra},
	}, "eu-west")
	get := func(path string) (int, string) {
		resp, err := http.Get(n.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, b := get("/healthz"); st != 200 || !strings.Contains(b, `"ok"`) {
		t.Errorf("healthz = %d %s", st, b)
	}
	healthErr = errors.New("eventlog: closed")
	if st, b := get("/healthz"); st != 503 || !strings.Contains(b, "eventlog: closed") {
		t.Errorf("unhealthy healthz = %d %s", st, b)
	}
	if st, b := get("/v1/identities/abc"); st != 200 || b != "identity abc" {
		t.Errorf("extra route = %d %s", st, b)
	}
	if st, _ := get("/v1/events"); st != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/events = %d; want 405", st)
	}
}

func TestConfigValidation(t *testing.T) {
	if _, err := httpapi.New(httpapi.Config{}); err == nil {
		t.Error("New without a writer succeeded")
	}
}
