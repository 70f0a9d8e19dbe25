// Package httpapi is a region's HTTP API: POST /v1/events (the writer) and
// GET /healthz, on a Go 1.22+ ServeMux to which the query side (projector)
// adds its routes with Handle or Config.Routes.
//
// One request's loop: limit the body (http.MaxBytesReader), decode it by
// Content-Type (writer.DecodeRequest), append (writer.Append, which returns
// only once the records are synced), answer {"event_ids","token"} with the
// token also in the Meridian-Token header. Every error is JSON
// {"error":{"code","field","message","home_region"?,"index"?}} with the
// status the writer chose: 400, 413, 415, 421 or 503.
package httpapi
