package projector

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// HTTP headers of the query API.
const (
	// TokenHeader carries a consistency token from an append (unpadded
	// base64url of the ConsistencyToken's binary form).
	TokenHeader = "Meridian-Token"
	// WaitHeader bounds how long a read with a token waits (a Go duration
	// such as "500ms"; default DefaultWait, at most MaxWait).
	WaitHeader = "Meridian-Wait"
	// ResidentHeader says whether the answer includes RESIDENT fields:
	// "held" where this region holds them, "not-held" elsewhere.
	ResidentHeader = "Meridian-Resident"
	// RegionHeader names the region that answered.
	RegionHeader = "Meridian-Region"

	DefaultWait = 2 * time.Second
	MaxWait     = 30 * time.Second
	maxTokenLen = 4096
	maxIDLen    = 256
)

// Error codes of the query API, in {"error":{"code":...}}.
const (
	CodeInvalidArgument = "invalid_argument"
	CodeNotFound        = "not_found"
	CodeErased          = "erased"
	CodeNotReplicated   = "not_replicated"
	CodeInternal        = "internal"
	CodeUnavailable     = "unavailable"
	CodeNotImplemented  = "not_implemented"
)

// Routes registers the query API on mux:
//
//	GET /v1/identities/{id}       the identity (200), 404, 410 erased, 400 bad id
//	GET /v1/identities?email=...  the identity with that email (via its keyed hash)
//	GET /v1/sessions/{id}         whether the session is valid (200), 404 unknown
//	GET /v1/status                Status
//
// The identity and session reads honour read-your-writes: with a
// Meridian-Token header they wait (Meridian-Wait, default 2 s) until this
// region has applied the token, and answer 503 not_replicated, naming the
// region the write was made in, if it has not by then.
func (p *Projector) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/identities/{id}", p.getIdentity)
	mux.HandleFunc("GET /v1/identities", p.findIdentity)
	mux.HandleFunc("GET /v1/sessions/{id}", p.getSession)
	mux.HandleFunc("GET /v1/status", p.getStatus)
}

type errorBody struct {
	Code    string `json:"code"`
	Field   string `json:"field"`
	Message string `json:"message"`
	// HomeRegion is set on not_replicated: the region the write was made
	// in, where it can be read now.
	HomeRegion string `json:"home_region,omitempty"`
}

func writeError(w http.ResponseWriter, status int, body errorBody) {
	writeJSON(w, status, struct {
		Error errorBody `json:"error"`
	}{body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","field":"","message":"encode response"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeErr maps an error of the query methods to its status.
func (p *Projector) writeErr(w http.ResponseWriter, field string, err error) {
	var inv *InvalidError
	var nr *NotReplicatedError
	switch {
	case errors.As(err, &nr):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, errorBody{
			Code: CodeNotReplicated, Field: TokenHeader, HomeRegion: nr.Origin,
			Message: fmt.Sprintf("the write is not yet replicated to region %s; read it in %s or retry", p.cfg.Region, nr.Origin),
		})
	case errors.As(err, &inv):
		writeError(w, http.StatusBadRequest, errorBody{Code: CodeInvalidArgument, Field: inv.Field, Message: inv.Rule})
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, errorBody{Code: CodeNotFound, Field: field, Message: err.Error()})
	case errors.Is(err, ErrErased):
		writeError(w, http.StatusGone, errorBody{Code: CodeErased, Field: field, Message: err.Error()})
	case errors.Is(err, ErrClosed):
		writeError(w, http.StatusServiceUnavailable, errorBody{Code: CodeUnavailable, Message: err.Error()})
	default:
		p.cfg.Logger.Error("projector: query failed", "err", err)
		writeError(w, http.StatusInternalServerError, errorBody{Code: CodeInternal, Message: err.Error()})
	}
}

// awaitToken waits for the request's consistency token, if any. It
// returns false after writing the error response.
func (p *Projector) awaitToken(w http.ResponseWriter, r *http.Request) bool {
	raw := r.Header.Get(TokenHeader)
	waitStr := r.Header.Get(WaitHeader)
	if raw == "" {
		if waitStr != "" {
			p.writeErr(w, "", invalidf(WaitHeader, "only meaningful with a %s header", TokenHeader))
			return false
		}
		return true
	}
	token, err := DecodeToken(raw)
	if err != nil {
		p.writeErr(w, "", err)
		return false
	}
	wait := DefaultWait
	if waitStr != "" {
		d, err := time.ParseDuration(waitStr)
		switch {
		case err != nil:
			p.writeErr(w, "", invalidf(WaitHeader, "%q is not a duration (for example 500ms, 2s)", waitStr))
			return false
		case d < 0 || d > MaxWait:
			p.writeErr(w, "", invalidf(WaitHeader, "%v is outside 0..%v", d, MaxWait))
			return false
		}
		wait = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	if err := p.WaitApplied(ctx, token); err != nil {
		p.writeErr(w, TokenHeader, err)
		return false
	}
	return true
}

// DecodeToken parses a Meridian-Token header value. Errors are
// *InvalidError naming the header.
func DecodeToken(s string) (*meridianv1.ConsistencyToken, error) {
	if len(s) > maxTokenLen {
		return nil, invalidf(TokenHeader, "longer than %d bytes", maxTokenLen)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, invalidf(TokenHeader, "not unpadded base64url: %v", err)
	}
	t := &meridianv1.ConsistencyToken{}
	if err := proto.Unmarshal(b, t); err != nil {
		return nil, invalidf(TokenHeader, "not a ConsistencyToken: %v", err)
	}
	if len(t.ProtoReflect().GetUnknown()) > 0 {
		return nil, invalidf(TokenHeader, "has unknown fields")
	}
	if t.GetOriginRegion() == "" || t.GetOriginNode() == "" || len(t.GetSequences()) == 0 {
		return nil, invalidf(TokenHeader, "must name origin_region, origin_node and at least one sequence")
	}
	return t, nil
}

// checkIdentityID requires the canonical lower-case UUID form the writer
// enforces, so a malformed id is a 400, not a 404.
func checkIdentityID(id string) error {
	u, err := uuid.Parse(id)
	if err != nil || u.String() != id {
		return invalidf("id", "%q is not a UUID in canonical lower-case form", truncate(id))
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

var viewJSON = protojson.MarshalOptions{UseProtoNames: true}

func (p *Projector) getIdentity(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := checkIdentityID(id); err != nil {
		p.writeErr(w, "id", err)
		return
	}
	if !p.awaitToken(w, r) {
		return
	}
	p.writeIdentity(w, id)
}

func (p *Projector) findIdentity(w http.ResponseWriter, r *http.Request) {
	email := r.URL.Query().Get("email")
	switch {
	case email == "":
		p.writeErr(w, "", invalidf("email", "required query parameter"))
		return
	case p.cfg.HashEmail == nil:
		writeError(w, http.StatusNotImplemented, errorBody{Code: CodeNotImplemented, Field: "email", Message: "email lookup needs Config.HashEmail"})
		return
	}
	if !p.awaitToken(w, r) {
		return
	}
	id, err := p.LookupEmail(p.cfg.HashEmail(email))
	if err != nil {
		p.writeErr(w, "email", err)
		return
	}
	p.writeIdentity(w, id)
}

func (p *Projector) writeIdentity(w http.ResponseWriter, id string) {
	if err := p.open(); err != nil {
		p.writeErr(w, "id", err)
		return
	}
	ident, held, err := p.eng.get(id)
	p.mu.RUnlock()
	p.gets.Add(1)
	if err != nil {
		p.writeErr(w, "id", err)
		return
	}
	b, err := viewJSON.Marshal(responseView(ident))
	if err != nil {
		p.writeErr(w, "", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(RegionHeader, p.cfg.Region)
	if held {
		w.Header().Set(ResidentHeader, "held")
	} else {
		w.Header().Set(ResidentHeader, "not-held")
	}
	w.WriteHeader(http.StatusOK)
	w.Write(append(b, '\n'))
}

// responseView is what the API may show of an identity: everything but
// credential material (password hashes, keys, subjects), which never
// leaves the process through the API.
func responseView(ident *meridianv1.Identity) *meridianv1.Identity {
	v := proto.CloneOf(ident)
	for _, c := range v.GetCredentials() {
		c.Material = nil
	}
	return v
}

func (p *Projector) getSession(w http.ResponseWriter, r *http.Request) {
	sid := r.PathValue("id")
	if sid == "" || len(sid) > maxIDLen {
		p.writeErr(w, "", invalidf("id", "a session id of 1..%d bytes", maxIDLen))
		return
	}
	if !p.awaitToken(w, r) {
		return
	}
	st, err := p.Session(sid)
	if err != nil {
		p.writeErr(w, "id", err)
		return
	}
	w.Header().Set(RegionHeader, p.cfg.Region)
	writeJSON(w, http.StatusOK, st)
}

func (p *Projector) getStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, p.Status())
}
