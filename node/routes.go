package node

import (
	"net/http"

	"github.com/meridian-id/meridian/httpapi"
)

// routes builds the node's HTTP API: the write API and health from httpapi,
// the read side from the projector, and whatever the binary adds (metrics).
func (n *Node) routes() (*http.ServeMux, error) {
	api, err := httpapi.New(httpapi.Config{
		Writer: n.writer,
		Health: n.health,
	})
	if err != nil {
		return nil, err
	}
	reads := http.NewServeMux()
	n.proj.Routes(reads)
	mux := http.NewServeMux()
	for _, p := range []string{"GET /v1/identities/{id}", "GET /v1/identities", "GET /v1/sessions/{id}"} {
		mux.Handle(p, n.duringSwitch(reads))
	}
	mux.HandleFunc("GET /v1/status", n.serveStatus)
	n.AdminRoutes(mux)
	mux.Handle("/", api)
	return mux, nil
}

// health is healthy while the node is open; replication trouble shows in
// /v1/status and lag, not here, because a region must keep taking writes.
func (n *Node) health() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.closed {
		return ErrClosed
	}
	return nil
}

// Handle mounts an extra handler on the node's HTTP server (the binary
// mounts /metrics here, since Prometheus wiring lives in cmd/).
func (n *Node) Handle(pattern string, h http.Handler) { n.mux.Handle(pattern, h) }
