package projector

import (
	"maps"
	"slices"
	"time"
)

// Status is the projector's state for operators (GET /v1/status).
type Status struct {
	Region string `json:"region"`
	Zone   string `json:"zone"`
	Stream string `json:"stream"`
	// InboxSeq is the last inbox sequence whose effects are in the model.
	InboxSeq uint64 `json:"inbox_seq"`
	// InboxLastSeq is the inbox stream's last sequence at the last poll,
	// and InboxBacklog the difference; nil when unknown.
	InboxLastSeq *uint64 `json:"inbox_last_seq"`
	InboxBacklog *uint64 `json:"inbox_backlog"`
	Quarantined  uint64  `json:"quarantined"`
	// Gaps counts inbox messages removed from the stream (limits) before
	// this projector applied them; non-zero means the model misses events.
	Gaps uint64 `json:"gaps,omitempty"`
	// Running is true while a consumer is attached to the inbox.
	Running     bool           `json:"running"`
	LastError   string         `json:"last_error,omitempty"`
	LastErrorAt int64          `json:"last_error_at_unix_ms,omitempty"`
	Origins     []OriginStatus `json:"origins"`
}

// OriginStatus is how far this region has applied one origin region.
type OriginStatus struct {
	Region string `json:"region"`
	// Applied lists the highest origin log sequence applied per origin
	// node and subject zone (what consistency tokens are checked against).
	Applied []AppliedSeq `json:"applied"`
	// SourceSeq is, per subject zone, the origin stream sequence of the
	// last message applied; OriginLastSeq the origin stream's last
	// sequence on that zone's filter at the last poll.
	SourceSeq     map[string]uint64 `json:"source_seq"`
	OriginLastSeq map[string]uint64 `json:"origin_last_seq,omitempty"`
	// LagEvents and LagSeconds are nil when unknown (origin unreachable,
	// no heartbeat yet), never a reassuring zero.
	LagEvents  *uint64    `json:"lag_events"`
	LagSeconds *float64   `json:"lag_seconds"`
	Heartbeat  *Heartbeat `json:"heartbeat,omitempty"`
	PolledAt   int64      `json:"polled_at_unix_ms,omitempty"`
	PollError  string     `json:"poll_error,omitempty"`
}

// AppliedSeq is one entry of OriginStatus.Applied.
type AppliedSeq struct {
	Node string `json:"node"`
	Zone string `json:"zone"`
	Seq  uint64 `json:"seq"`
}

// Status returns a snapshot.
func (p *Projector) Status() Status {
	pos, inboxSeq, quarantined, _ := p.eng.snapshot()
	polls, inboxLast := p.lag.snapshot()
	st := Status{
		Region: p.cfg.Region, Zone: p.cfg.Zone, Stream: p.cfg.Stream,
		InboxSeq: inboxSeq, Quarantined: quarantined, Running: p.running.Load(),
		InboxLastSeq: inboxLast, Gaps: p.gaps.Load(),
	}
	if inboxLast != nil {
		b := *inboxLast - min(*inboxLast, inboxSeq)
		st.InboxBacklog = &b
	}
	if e := p.lastErr.Load(); e != nil {
		st.LastError, st.LastErrorAt = e.err, e.at
	}
	origins := map[string]bool{}
	for k := range pos.applied {
		origins[k.origin] = true
	}
	for k := range pos.heartbeats {
		origins[k] = true
	}
	for k := range polls {
		origins[k] = true
	}
	now := p.cfg.Now()
	for _, origin := range slices.Sorted(maps.Keys(origins)) {
		os := OriginStatus{Region: origin, SourceSeq: map[string]uint64{}}
		for k, v := range pos.applied {
			if k.origin == origin {
				os.Applied = append(os.Applied, AppliedSeq{Node: k.node, Zone: k.zone, Seq: v})
			}
		}
		slices.SortFunc(os.Applied, func(a, b AppliedSeq) int {
			if a.Node != b.Node {
				return cmpStr(a.Node, b.Node)
			}
			return cmpStr(a.Zone, b.Zone)
		})
		for k, v := range pos.source {
			if k.origin == origin {
				os.SourceSeq[k.zone] = v
			}
		}
		if hb, ok := pos.heartbeats[origin]; ok {
			os.Heartbeat = &hb
			secs := float64(max(0, now-hb.SentAtUnixMs)) / float64(time.Second/time.Millisecond)
			os.LagSeconds = &secs
		}
		if poll, ok := polls[origin]; ok {
			os.PolledAt, os.PollError = poll.at, poll.err
			if poll.err == "" && poll.last != nil {
				os.OriginLastSeq = poll.last
				var n uint64
				for zone, last := range poll.last {
					n += last - min(last, os.SourceSeq[zone])
				}
				os.LagEvents = &n
			}
		}
		st.Origins = append(st.Origins, os)
	}
	return st
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Metrics is a snapshot of the projector's counters.
type Metrics struct {
	Messages       uint64 // inbox messages applied (all kinds)
	IdentityParts  uint64 // GLOBAL and RESIDENT parts merged
	Keys           uint64 // data keys stored from key records
	Heartbeats     uint64
	Ignored        uint64 // parts and keys of erased identities
	Quarantined    uint64
	Erasures       uint64
	ResidentLost   uint64 // stored resident states found unreadable
	Batches        uint64
	Skipped        uint64 // redelivered messages below the stored position
	CommitSeconds  float64
	ConsumerStarts uint64
	Gets           uint64
	Waiting        int64 // reads waiting for a consistency token now
	InboxSeq       uint64
}

// Metrics returns a snapshot of the counters.
func (p *Projector) Metrics() Metrics {
	m := p.eng.metrics()
	m.ConsumerStarts = p.consumerStarts.Load()
	m.Gets = p.gets.Load()
	m.Waiting = p.waiting.Load()
	return m
}

func (e *engine) metrics() Metrics {
	c := &e.c
	return Metrics{
		Messages: c.messages.Load(), IdentityParts: c.identity.Load(), Keys: c.keys.Load(),
		Heartbeats: c.heartbeats.Load(), Ignored: c.ignored.Load(), Quarantined: c.quarantined.Load(),
		Erasures: c.erased.Load(), ResidentLost: c.lost.Load(), Batches: c.batches.Load(),
		Skipped: c.skipped.Load(), CommitSeconds: time.Duration(c.commitNanos.Load()).Seconds(),
		InboxSeq: e.inboxSeqSnapshot(),
	}
}
