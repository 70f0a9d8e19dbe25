package node

import (
	"encoding/json"
	"net/http"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/projector"
)

// Status is the node's state for operators: the projector's view of every
// origin (applied positions, lag in events and seconds, quarantine) and the
// node's own write side (log head, shipper position and backlog).
type Status struct {
	projector.Status
	Node       string          `json:"node"`
	Ready      bool            `json:"replication_ready"`
	BootError  string          `json:"bootstrap_error,omitempty"`
	Log        LogStatus       `json:"log"`
	Shipper    *ShipperStatus  `json:"shipper"`
	Heartbeats HeartbeatStatus `json:"heartbeats"`
	// SourceReestablished counts, per origin, how often the watchdog
	// re-established the inbox's sources of it (watchdog.go).
	SourceReestablished map[string]uint64 `json:"source_reestablished"`
}

// LogStatus is the local event log's range.
type LogStatus struct {
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

// ShipperStatus is where the shipper is in the log; nil before it started.
type ShipperStatus struct {
	Shipped     uint64 `json:"shipped_seq"`
	Backlog     uint64 `json:"backlog"`
	PublishErrs uint64 `json:"publish_errors"`
	Running     bool   `json:"running"`
	LastError   string `json:"last_error,omitempty"`
}

// HeartbeatStatus counts the heartbeats this node appended.
type HeartbeatStatus struct {
	Sent   uint64 `json:"sent"`
	Errors uint64 `json:"errors"`
}

// Status returns a snapshot of the node.
func (n *Node) Status() Status {
	st := Status{
		Status: n.proj.Status(),
		Node:   n.id,
		Log:    LogStatus{FirstSeq: n.log.FirstSeq(), LastSeq: n.log.LastSeq()},

		SourceReestablished: n.watchdog.counts(),
	}
	n.mu.Lock()
	st.Ready = n.mu.ready
	if n.mu.bootErr != nil {
		st.BootError = n.mu.bootErr.Error()
	}
	st.Heartbeats = HeartbeatStatus{Sent: n.mu.heartbeat.sent, Errors: n.mu.heartbeat.errors}
	sh := n.mu.shipper
	n.mu.Unlock()
	if sh != nil {
		st.Shipper = shipperStatus(sh.Metrics())
	}
	return st
}

func shipperStatus(m eventlog.ShipperMetrics) *ShipperStatus {
	st := &ShipperStatus{Shipped: m.Shipped, Backlog: m.Backlog, PublishErrs: m.PublishErrs, Running: m.Running}
	if m.LastError != nil {
		st.LastError = m.LastError.Error()
	}
	return st
}

func (n *Node) serveStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(n.Status())
}
