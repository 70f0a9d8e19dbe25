package projector

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

type apiResp struct {
	status int
	header http.Header
	body   []byte
	err    errorBody
}

func doGet(t *testing.T, srv *httptest.Server, path string, hdr map[string]string) apiResp {
	t.Helper()
	r, err := get(testCtx(t), srv, path, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// get is doGet for other goroutines (it reports instead of failing).
func get(ctx context.Context, srv *httptest.Server, path string, hdr map[string]string) (apiResp, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		return apiResp{}, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		return apiResp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return apiResp{}, err
	}
	r := apiResp{status: res.StatusCode, header: res.Header, body: b}
	if res.StatusCode != http.StatusOK {
		var e struct{ Error errorBody }
		if err := json.Unmarshal(b, &e); err != nil {
			return r, fmt.Errorf("%s: error body %q is not JSON: %w", path, b, err)
		}
		r.err = e.Error
	}
	return r, nil
}

func TestHTTP(t *testing.T) {
	w := newWorld(t)
	id, erased, disabled := newID(), newID(), newID()
	const secret = "$2y$10$material-never-leaves"
	w.append(created(id, "h@example.org", "Hedy"),
		session(id, "s-valid", testNow+60_000), session(id, "s-revoked", testNow+60_000), session(id, "s-expired", testNow-1),
		withBody(id, &meridianv1.SessionRevoked{SessionId: "s-revoked"}),
		withBody(id, &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{CredentialId: "pw", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH, Material: []byte(secret)}}),
		loginFailed(id))
	w.append(created(erased, "e@example.org", "E"), session(erased, "s-erased", testNow+60_000))
	w.append(erase(erased))
	w.append(created(disabled, "d@example.org", "D"), session(disabled, "s-disabled", testNow+60_000),
		withBody(disabled, &meridianv1.StateChanged{Status: meridianv1.IdentityStatus_IDENTITY_STATUS_DISABLED}))
	p := w.start()
	w.sync(p)
	mux := http.NewServeMux()
	p.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	t.Run("identity", func(t *testing.T) {
		r := doGet(t, srv, "/v1/identities/"+id, nil)
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var got meridianv1.Identity
		if err := protojson.Unmarshal(r.body, &got); err != nil {
			t.Fatal(err)
		}
		if got.GetIdentityId() != id || got.GetTraits().GetEmail() != "h@example.org" || got.GetFailedLogins() != 1 ||
			len(got.GetSessions()) != 3 || len(got.GetRevokedSessions()) != 1 || len(got.GetCredentials()) != 1 {
			t.Fatalf("identity view %v", &got)
		}
		if c := got.GetCredentials()[0]; c.GetCredentialId() != "pw" || c.GetType() != meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH || len(c.GetMaterial()) != 0 {
			t.Fatalf("credential view %v: metadata only, never material", c)
		}
		if strings.Contains(string(r.body), "material") || strings.Contains(string(r.body), base64.StdEncoding.EncodeToString([]byte(secret))) {
			t.Fatalf("credential material in the response: %s", r.body)
		}
		if r.header.Get(ResidentHeader) != "held" || r.header.Get(RegionHeader) != projRegion {
			t.Fatalf("headers %v", r.header)
		}
	})

	cases := []struct {
		name, path string
		hdr        map[string]string
		status     int
		code       string
		field      string
	}{
		{"unknown identity", "/v1/identities/" + newID(), nil, 404, CodeNotFound, "id"},
		{"erased identity", "/v1/identities/" + erased, nil, 410, CodeErased, "id"},
		{"bad id", "/v1/identities/not-a-uuid", nil, 400, CodeInvalidArgument, "id"},
		{"upper-case id", "/v1/identities/" + strings.ToUpper(id), nil, 400, CodeInvalidArgument, "id"},
		{"email lookup", "/v1/identities?email=" + url.QueryEscape(" H@Example.org "), nil, 200, "", ""},
		{"email unknown", "/v1/identities?email=nobody@example.org", nil, 404, CodeNotFound, "email"},
		{"email of erased", "/v1/identities?email=e@example.org", nil, 404, CodeNotFound, "email"},
		{"email missing", "/v1/identities", nil, 400, CodeInvalidArgument, "email"},
		{"session unknown", "/v1/sessions/s-nope", nil, 404, CodeNotFound, "id"},
		{"session of erased", "/v1/sessions/s-erased", nil, 404, CodeNotFound, "id"},
		{"bad token", "/v1/identities/" + id, map[string]string{TokenHeader: "!!!"}, 400, CodeInvalidArgument, TokenHeader},
		{"token not a token", "/v1/identities/" + id, map[string]string{TokenHeader: base64.RawURLEncoding.EncodeToString([]byte{0xff})}, 400, CodeInvalidArgument, TokenHeader},
		{"bad wait", "/v1/identities/" + id, map[string]string{TokenHeader: token(1), WaitHeader: "soon"}, 400, CodeInvalidArgument, WaitHeader},
		{"wait too long", "/v1/identities/" + id, map[string]string{TokenHeader: token(1), WaitHeader: "1h"}, 400, CodeInvalidArgument, WaitHeader},
		{"wait without token", "/v1/identities/" + id, map[string]string{WaitHeader: "1s"}, 400, CodeInvalidArgument, WaitHeader},
		{"status", "/v1/status", nil, 200, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := doGet(t, srv, c.path, c.hdr)
			if r.status != c.status || r.err.Code != c.code || r.err.Field != c.field {
				t.Fatalf("got %d %+v, want %d code %q field %q (body %s)", r.status, r.err, c.status, c.code, c.field, r.body)
			}
			if c.status != 200 && r.err.Message == "" {
				t.Fatal("error without a message")
			}
		})
	}

	sessions := []struct {
		sid    string
		valid  bool
		reason string
	}{
		{"s-valid", true, ""},
		{"s-revoked", false, "revoked"},
		{"s-expired", false, "expired"},
		{"s-disabled", false, "identity_disabled"},
	}
	for _, s := range sessions {
		t.Run("session "+s.sid, func(t *testing.T) {
			r := doGet(t, srv, "/v1/sessions/"+s.sid, nil)
			var st SessionStatus
			if err := json.Unmarshal(r.body, &st); err != nil || r.status != 200 {
				t.Fatalf("%d %s %v", r.status, r.body, err)
			}
			if st.Valid != s.valid || st.Reason != s.reason || st.SessionID != s.sid || st.ExpiresAt == 0 || st.IdentityID == "" {
				t.Fatalf("session %+v, want valid=%v reason=%q", st, s.valid, s.reason)
			}
		})
	}

	t.Run("read your writes", func(t *testing.T) {
		// A token for a write that has not reached this region yet: the
		// read waits, and the write arriving meanwhile releases it.
		res, err := w.origin.w.Append(testCtx(t), grant(id, "fresh"))
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			r   apiResp
			err error
		}
		done := make(chan result, 1)
		go func() {
			r, err := get(testCtx(t), srv, "/v1/identities/"+id, map[string]string{TokenHeader: res.Token, WaitHeader: "20s"})
			done <- result{r, err}
		}()
		waitFor(t, "the read to wait for its token", func() bool { return p.Metrics().Waiting == 1 })
		w.ship(w.origin)
		out := <-done
		r := out.r
		if out.err != nil {
			t.Fatal(out.err)
		}
		if r.status != 200 || !strings.Contains(string(r.body), "fresh") {
			t.Fatalf("read with token: %d %s", r.status, r.body)
		}
	})

	t.Run("not replicated", func(t *testing.T) {
		// Appended but never shipped (the link is down): the bounded wait
		// ends with 503 not_replicated naming the origin region.
		res, err := w.origin.w.Append(testCtx(t), grant(id, "stuck"))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r := doGet(t, srv, "/v1/sessions/s-valid", map[string]string{TokenHeader: res.Token, WaitHeader: "150ms"})
		took := time.Since(start)
		if r.status != http.StatusServiceUnavailable || r.err.Code != CodeNotReplicated || r.err.HomeRegion != originRegion || r.err.Field != TokenHeader {
			t.Fatalf("got %d %+v", r.status, r.err)
		}
		if took < 150*time.Millisecond || took > 10*time.Second {
			t.Fatalf("answered after %v, want the 150ms bound", took)
		}
		w.ship(w.origin) // leave the world consistent
	})
}

// token builds a consistency token for the origin node.
func token(seq uint64) string {
	return writer.EncodeToken(&meridianv1.ConsistencyToken{OriginRegion: originRegion, OriginNode: originRegion + "-n1", Sequences: map[string]uint64{"global": seq}})
}

func TestWaitAppliedSkipsZonesNotHeld(t *testing.T) {
	w := newWorld(t)
	id := newID()
	res := w.append(created(id, "z@example.org", "Z"))
	p := w.start()
	w.sync(p)
	tok, err := DecodeToken(res.Token)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitApplied(testCtx(t), tok); err != nil {
		t.Fatalf("applied token: %v", err)
	}
	// A zone this region does not hold is never waited for.
	tok2 := proto.CloneOf(tok)
	tok2.Sequences["us"] = 1 << 40
	ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
	defer cancel()
	if err := p.WaitApplied(ctx, tok2); err != nil {
		t.Fatalf("token with a foreign zone: %v", err)
	}
	// A sequence not applied yet times out with the typed error.
	tok3 := proto.CloneOf(tok)
	tok3.Sequences["eu"] = 1 << 40
	ctx, cancel = context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	err = p.WaitApplied(ctx, tok3)
	var nr *NotReplicatedError
	if !errAs(err, &nr) || nr.Origin != originRegion || len(nr.Missing) != 1 || nr.Missing[0].Zone != "eu" {
		t.Fatalf("WaitApplied = %v, want *NotReplicatedError for zone eu", err)
	}
	if err := p.WaitApplied(testCtx(t), nil); err == nil {
		t.Fatal("nil token accepted")
	}
}
