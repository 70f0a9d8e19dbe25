package ops

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/meridian-id/meridian/node"
)

// Status gathers every region's GET /v1/status into one view of the
// deployment and checks it against thresholds. Lag comes from meridian's
// own measurement (heartbeats and origin stream positions), never from
// NATS source info, which can look healthy while a source is stalled.

// Thresholds say when the deployment is not healthy; a negative value
// disables a check.
type Thresholds struct {
	// MaxLagSeconds per origin (default 30): now minus the newest
	// heartbeat applied from it.
	MaxLagSeconds float64 `json:"max_lag_seconds"`
	// MaxLagEvents per origin (default 100000).
	MaxLagEvents int64 `json:"max_lag_events"`
	// MaxBacklog bounds the shipper's and the projector's backlogs
	// (default 100000).
	MaxBacklog int64 `json:"max_backlog"`
	// MaxQuarantined bounds each region's quarantined messages (default
	// -1: reported, not a failure).
	MaxQuarantined int64 `json:"max_quarantined"`
}

// DefaultThresholds: 30 s or 100000 events of lag, 100000 records of
// backlog, quarantined messages reported but not a failure.
func DefaultThresholds() Thresholds {
	return Thresholds{MaxLagSeconds: 30, MaxLagEvents: 100_000, MaxBacklog: 100_000, MaxQuarantined: -1}
}

// SourceHealth is one origin as a region sees it.
type SourceHealth struct {
	Origin     string   `json:"origin"`
	LagEvents  *uint64  `json:"lag_events"`
	LagSeconds *float64 `json:"lag_seconds"`
	// Health is "ok", "lagging" (a threshold crossed) or "unknown" (no
	// heartbeat yet, or the origin stream did not answer).
	Health string `json:"health"`
	Detail string `json:"detail,omitempty"`
}

// RegionStatus is one region.
type RegionStatus struct {
	Region string       `json:"region"`
	Zone   string       `json:"zone"`
	URL    string       `json:"url"`
	Health string       `json:"health"` // "ok", "degraded", "down"
	Error  string       `json:"error,omitempty"`
	Node   *node.Status `json:"node,omitempty"`
	// Sources is per origin region.
	Sources  []SourceHealth `json:"sources"`
	Findings []string       `json:"findings"`
}

// DeploymentStatus is the whole deployment.
type DeploymentStatus struct {
	At         time.Time      `json:"at"`
	Thresholds Thresholds     `json:"thresholds"`
	Regions    []RegionStatus `json:"regions"`
	OK         bool           `json:"ok"`
}

// Findings lists every region's findings, prefixed with the region.
func (s *DeploymentStatus) Findings() []string {
	var out []string
	for _, r := range s.Regions {
		for _, f := range r.Findings {
			out = append(out, r.Region+": "+f)
		}
	}
	return out
}

// StatusConfig configures Status.
type StatusConfig struct {
	Deployment *Deployment
	// Thresholds (default DefaultThresholds).
	Thresholds *Thresholds
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Status asks every node at once.
func Status(ctx context.Context, cfg StatusConfig) (*DeploymentStatus, error) {
	if cfg.Deployment == nil {
		return nil, invalidf("Deployment", "required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	th := DefaultThresholds()
	if cfg.Thresholds != nil {
		th = *cfg.Thresholds
	}
	out := &DeploymentStatus{At: cfg.Now(), Thresholds: th, Regions: make([]RegionStatus, len(cfg.Deployment.Regions)), OK: true}
	var wg sync.WaitGroup
	for i, r := range cfg.Deployment.Regions {
		wg.Go(func() { out.Regions[i] = regionStatus(ctx, r, th) })
	}
	wg.Wait()
	for _, r := range out.Regions {
		if len(r.Findings) > 0 {
			out.OK = false
		}
	}
	return out, nil
}

func regionStatus(ctx context.Context, r Region, t Thresholds) RegionStatus {
	rs := RegionStatus{Region: r.Name, Zone: r.Zone, URL: r.HTTP, Health: "ok", Sources: []SourceHealth{}, Findings: []string{}}
	find := func(format string, args ...any) { rs.Findings = append(rs.Findings, fmt.Sprintf(format, args...)) }
	cl, err := NewNodeClient(r)
	if err == nil {
		rs.Node, err = cl.Status(ctx)
	}
	if err != nil {
		rs.Health, rs.Error = "down", err.Error()
		find("node unreachable: %v", err)
		return rs
	}
	st := rs.Node
	if !st.Ready {
		find("replication not running (bootstrap: %s)", orNone(st.BootError))
	}
	switch sh := st.Shipper; {
	case sh == nil:
		find("shipper not started")
	case !sh.Running:
		find("shipper stopped (last error: %s)", orNone(sh.LastError))
	case t.MaxBacklog >= 0 && sh.Backlog > uint64(t.MaxBacklog):
		find("shipper backlog %d > %d", sh.Backlog, t.MaxBacklog)
	}
	if !st.Running {
		find("projector not consuming the inbox (last error: %s)", orNone(st.LastError))
	}
	if b := st.InboxBacklog; b != nil && t.MaxBacklog >= 0 && *b > uint64(t.MaxBacklog) {
		find("projector backlog %d > %d", *b, t.MaxBacklog)
	}
	if st.Gaps > 0 {
		find("%d inbox messages were removed before being applied", st.Gaps)
	}
	if t.MaxQuarantined >= 0 && st.Quarantined > uint64(t.MaxQuarantined) {
		find("%d quarantined messages > %d", st.Quarantined, t.MaxQuarantined)
	}
	for _, o := range st.Origins {
		sh := SourceHealth{Origin: o.Region, LagEvents: o.LagEvents, LagSeconds: o.LagSeconds, Health: "ok"}
		switch {
		case o.LagSeconds == nil:
			sh.Health, sh.Detail = "unknown", "no heartbeat applied yet"
		case o.PollError != "":
			sh.Health, sh.Detail = "unknown", "origin stream: "+o.PollError
		}
		if o.LagSeconds != nil && t.MaxLagSeconds >= 0 && *o.LagSeconds > t.MaxLagSeconds {
			sh.Health, sh.Detail = "lagging", fmt.Sprintf("%.1fs behind", *o.LagSeconds)
		}
		if o.LagEvents != nil && t.MaxLagEvents >= 0 && *o.LagEvents > uint64(t.MaxLagEvents) {
			sh.Health, sh.Detail = "lagging", fmt.Sprintf("%d events behind", *o.LagEvents)
		}
		if sh.Health != "ok" {
			find("source %s: %s (%s)", o.Region, sh.Health, sh.Detail)
		}
		rs.Sources = append(rs.Sources, sh)
	}
	if len(rs.Findings) > 0 {
		rs.Health = "degraded"
	}
	return rs
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
