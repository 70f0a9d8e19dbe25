package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/meridian-id/meridian/client"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/httpapi"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"google.golang.org/protobuf/proto"
)

type topology map[string]string

func (t topology) ZoneOf(r string) (string, bool) { z, ok := t[r]; return z, ok }

// region is a real write path (Pebble log, key store, writer, HTTP API)
// behind a front handler that a test can use to fail requests the way a
// network or an overloaded node would.
type region struct {
	log *eventlog.Log
	srv *httptest.Server

	mu struct {
		sync.Mutex
		bodies [][]byte
		// plan[i] is what to do with request i: "" pass, "503" answer 503,
		// "drop" close the connection without answering, "lose" append and
		// then close the connection (the answer is lost).
		plan []string
	}
}

func newRegion(t *testing.T, name string) *region {
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
		Region: name, Node: "n1", Topology: topology{"eu-west": "eu", "us-east": "us"},
		Log: l, Keys: ks, HashKey: []byte("0123456789abcdef"),
		ZoneKeys: map[string]keystore.ZoneKey{"eu": {ID: "eu-1", Key: zk}, "us": {ID: "us-1", Key: zk}},
	})
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Config{Writer: w})
	if err != nil {
		t.Fatal(err)
	}
	r := &region{log: l}
	r.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		i := len(r.mu.bodies)
		r.mu.bodies = append(r.mu.bodies, body)
		action := ""
		if i < len(r.mu.plan) {
			action = r.mu.plan[i]
		}
		r.mu.Unlock()
		switch action {
		case "503":
			httpapi.WriteError(rw, &httpapi.ErrorBody{Code: "unavailable", Message: "test: overloaded"}, 503)
			return
		case "drop":
			hijackClose(t, rw)
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		if action == "lose" {
			api.ServeHTTP(httptest.NewRecorder(), req)
			hijackClose(t, rw)
			return
		}
		api.ServeHTTP(rw, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *region) setPlan(p ...string) {
	r.mu.Lock()
	r.mu.plan = p
	r.mu.Unlock()
}

// requests decodes every request body the region received.
func (r *region) requests(t *testing.T) []*meridianv1.AppendRequest {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*meridianv1.AppendRequest
	for _, b := range r.mu.bodies {
		req := &meridianv1.AppendRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			t.Fatal(err)
		}
		out = append(out, req)
	}
	return out
}

func hijackClose(t *testing.T, rw http.ResponseWriter) {
	conn, _, err := rw.(http.Hijacker).Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
}

func roleGranted(identity string) *meridianv1.Event {
	return &meridianv1.Event{IdentityId: identity, HomeRegion: "eu-west",
		Body: &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: "admin"}}}
}

func fastRetry(attempts int) client.Option {
	return client.WithRetry(attempts, time.Millisecond, 5*time.Millisecond)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAppendProtobufAndJSON(t *testing.T) {
	r := newRegion(t, "eu-west")
	for _, opts := range [][]client.Option{nil, {client.WithJSON()}} {
		c, err := client.New(r.srv.URL, opts...)
		if err != nil {
			t.Fatal(err)
		}
		evs := []*meridianv1.Event{
			roleGranted(uuid.NewString()),
			{IdentityId: uuid.NewString(), HomeRegion: "eu-west", Body: &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{
				Traits: &meridianv1.Traits{Email: proto.String("c@example.com")}}}},
		}
		before := proto.Clone(evs[0])
		res, err := c.Append(ctxT(t), evs...)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(before, evs[0]) {
			t.Error("Append modified the caller's event")
		}
		if len(res.EventIDs) != 2 || res.Attempts != 1 {
			t.Fatalf("result %+v", res)
		}
		for _, id := range res.EventIDs {
			if u, err := uuid.Parse(id); err != nil || u.Version() != 7 {
				t.Errorf("event id %q is not a UUIDv7", id)
			}
		}
		if _, err := writer.DecodeToken(res.Token); err != nil {
			t.Errorf("token: %v", err)
		}
	}
}

func TestAPIErrorsAreNotRetried(t *testing.T) {
	r := newRegion(t, "us-east")
	c, _ := client.New(r.srv.URL, fastRetry(5))
	ev := &meridianv1.Event{IdentityId: uuid.NewString(), HomeRegion: "eu-west",
		Body: &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: proto.String("Ana")}}}}
	_, err := c.Append(ctxT(t), ev)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 421 || apiErr.Code != "wrong_region" || apiErr.HomeRegion != "eu-west" || apiErr.Index != 0 {
		t.Fatalf("err = %#v", err)
	}
	bad := roleGranted("not-a-uuid")
	_, err = c.Append(ctxT(t), bad)
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || apiErr.Field != "identity_id" {
		t.Fatalf("err = %v", err)
	}
	if n := len(r.requests(t)); n != 2 {
		t.Errorf("%d requests; want 2 (no retries of 4xx)", n)
	}
}

// 503s and dropped connections are retried with the same event ids.
func TestRetriesKeepEventIDs(t *testing.T) {
	r := newRegion(t, "eu-west")
	r.setPlan("503", "drop", "")
	c, _ := client.New(r.srv.URL, fastRetry(5))
	res, err := c.Append(ctxT(t), roleGranted(uuid.NewString()), roleGranted(uuid.NewString()))
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 3 {
		t.Errorf("Attempts = %d; want 3", res.Attempts)
	}
	reqs := r.requests(t)
	if len(reqs) != 3 {
		t.Fatalf("%d requests; want 3", len(reqs))
	}
	for i, req := range reqs {
		for j, ev := range req.Events {
			if ev.EventId != res.EventIDs[j] {
				t.Errorf("attempt %d event %d id %s; acknowledged id %s", i, j, ev.EventId, res.EventIDs[j])
			}
		}
	}
	if r.log.LastSeq() != 2 {
		t.Errorf("LastSeq %d; want 2 (only the last attempt appended)", r.log.LastSeq())
	}
}

// When the answer of a successful append is lost, the retry appends the
// same event ids again: the two copies carry the same record ids, which the
// stream's duplicate window folds into one.
func TestLostAnswerRetryIsIdempotentByID(t *testing.T) {
	r := newRegion(t, "eu-west")
	r.setPlan("lose", "")
	c, _ := client.New(r.srv.URL, fastRetry(3))
	res, err := c.Append(ctxT(t), roleGranted(uuid.NewString()))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := r.log.Read(1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("%d records; want the append twice", len(recs))
	}
	for _, rec := range recs {
		ev := &meridianv1.Event{}
		if err := proto.Unmarshal(rec.Data, ev); err != nil {
			t.Fatal(err)
		}
		if writer.RecordID(ev) != res.EventIDs[0]+":g" {
			t.Errorf("record %d has id %s; want %s:g", rec.Seq, writer.RecordID(ev), res.EventIDs[0])
		}
	}
}

func TestRetriesExhaustedAndContext(t *testing.T) {
	r := newRegion(t, "eu-west")
	r.setPlan("503", "503", "503", "503", "503", "503", "503", "503", "503", "503")
	c, _ := client.New(r.srv.URL, fastRetry(3))
	_, err := c.Append(ctxT(t), roleGranted(uuid.NewString()))
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 503 || !apiErr.Temporary() {
		t.Fatalf("err = %v; want the last 503", err)
	}
	if n := len(r.requests(t)); n != 3 {
		t.Errorf("%d requests; want 3", n)
	}

	slow, _ := client.New(r.srv.URL, client.WithRetry(100, time.Hour, time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = slow.Append(ctx, roleGranted(uuid.NewString()))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want the context's deadline", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("backoff did not stop at the context deadline")
	}
}

func TestNewAndAppendArguments(t *testing.T) {
	for _, u := range []string{"", "localhost:8080", "ftp://x", "http://"} {
		if _, err := client.New(u); !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("New(%q) = %v; want ErrInvalidArgument", u, err)
		}
	}
	if _, err := client.New("http://x", client.WithRetry(0, time.Millisecond, time.Second)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("zero attempts accepted")
	}
	c, _ := client.New("http://127.0.0.1:1")
	if _, err := c.Append(context.Background()); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("Append() = %v; want ErrInvalidArgument", err)
	}
	if _, err := c.Append(context.Background(), nil); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("Append(nil) = %v; want ErrInvalidArgument", err)
	}
}
