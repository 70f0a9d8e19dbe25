package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"google.golang.org/protobuf/proto"
)

// TokenHeader carries the consistency token of an append, and is presented
// by reads that want to see that append.
const TokenHeader = "Meridian-Token"

// Config configures a Server.
type Config struct {
	// Writer serves POST /v1/events. Required.
	Writer *writer.Writer
	// Health reports whether the node can serve (for example: the log is
	// open); nil means always healthy. GET /healthz answers 200 when it
	// returns nil and 503 with its error otherwise.
	Health func() error
	// MaxBodyBytes bounds a request body before it is read (default: the
	// writer's MaxRequestBytes).
	MaxBodyBytes int64
	// Routes are extra handlers by ServeMux pattern (for example
	// "GET /v1/identities/{id}"), registered at New.
	Routes map[string]http.Handler
}

func (c *Config) validate() error {
	if c.Writer == nil {
		return errors.New("httpapi: Config.Writer is required")
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = int64(c.Writer.MaxRequestBytes())
	}
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("httpapi: Config.MaxBodyBytes must not be negative, got %d", c.MaxBodyBytes)
	}
	return nil
}

// Server is the regional HTTP API. It is an http.Handler.
type Server struct {
	cfg Config
	mux *http.ServeMux
}

// New builds the server and registers its routes and cfg.Routes.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST /v1/events", s.postEvents)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	for pattern, h := range cfg.Routes {
		s.mux.Handle(pattern, h)
	}
	return s, nil
}

// Handle registers another route (Go 1.22 pattern) before serving starts.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// ServeHTTP dispatches to the routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// appendResponse is the JSON answer of POST /v1/events.
type appendResponse struct {
	EventIDs []string `json:"event_ids"`
	Token    string   `json:"token"`
}

func (s *Server) postEvents(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			WriteError(w, &ErrorBody{Code: writer.CodeTooLarge, Field: "body",
				Message: fmt.Sprintf("request body exceeds %d bytes", mbe.Limit)}, http.StatusRequestEntityTooLarge)
			return
		}
		WriteError(w, &ErrorBody{Code: writer.CodeInvalid, Field: "body", Message: "reading the request body: " + err.Error()}, http.StatusBadRequest)
		return
	}
	events, err := s.cfg.Writer.DecodeRequest(r.Header.Get("Content-Type"), body)
	if err != nil {
		WriteWriterError(w, err)
		return
	}
	res, err := s.cfg.Writer.Append(r.Context(), events...)
	if err != nil {
		WriteWriterError(w, err)
		return
	}
	w.Header().Set(TokenHeader, res.Token)
	if wantsProtobuf(r) {
		b, err := proto.Marshal(&meridianv1.AppendResponse{EventIds: res.EventIDs, Token: res.Token})
		if err != nil {
			WriteError(w, &ErrorBody{Code: "internal", Message: err.Error()}, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", writer.ContentTypeProtobuf)
		w.WriteHeader(http.StatusOK)
		w.Write(b)
		return
	}
	writeJSON(w, http.StatusOK, appendResponse{EventIDs: res.EventIDs, Token: res.Token})
}

// wantsProtobuf: a client that sends Accept: application/x-protobuf gets an
// AppendResponse; everyone else JSON. Errors are always JSON.
func wantsProtobuf(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil &&
			(mt == writer.ContentTypeProtobuf || mt == "application/protobuf") {
			return true
		}
	}
	return false
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Health != nil {
		if err := s.cfg.Health(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
