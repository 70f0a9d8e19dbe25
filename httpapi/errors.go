package httpapi

import (
	"errors"
	"net/http"

	"github.com/meridian-id/meridian/writer"
)

// ErrorBody is the "error" object of every error response, for this package's
// routes and the query routes added later.
type ErrorBody struct {
	Code    string `json:"code"`
	Field   string `json:"field"`
	Message string `json:"message"`
	// HomeRegion names where to send (or read) the identity's resident data.
	HomeRegion string `json:"home_region,omitempty"`
	// Index is the offending event's position in the request.
	Index *int `json:"index,omitempty"`
}

// WriteError writes {"error": body} with status.
func WriteError(w http.ResponseWriter, body *ErrorBody, status int) {
	writeJSON(w, status, struct {
		Error *ErrorBody `json:"error"`
	}{body})
}

// WriteWriterError maps a *writer.Error to its status and body; any other
// error is a 500.
func WriteWriterError(w http.ResponseWriter, err error) {
	var we *writer.Error
	if !errors.As(err, &we) {
		WriteError(w, &ErrorBody{Code: "internal", Message: err.Error()}, http.StatusInternalServerError)
		return
	}
	body := &ErrorBody{Code: we.Code, Field: we.Field, Message: we.Message, HomeRegion: we.HomeRegion}
	if we.Index >= 0 {
		i := we.Index
		body.Index = &i
	}
	if we.Status == http.StatusServiceUnavailable { // unavailable, claims_unavailable
		w.Header().Set("Retry-After", "1")
	}
	WriteError(w, body, we.Status)
}
