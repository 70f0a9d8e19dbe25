package projector

import "maps"

// Positions say how far this region has applied each origin: per origin
// node and subject zone the highest origin log sequence (what consistency
// tokens name), per origin and subject zone the origin stream sequence of
// the last message applied (for lag in events), and per origin the newest
// heartbeat (for lag in seconds). They are written in the same Pebble batch
// as the states they describe.

type nodeZone struct{ origin, node, zone string }

type originZone struct{ origin, zone string }

// Heartbeat is the newest heartbeat applied from an origin.
type Heartbeat struct {
	Node            string `json:"node"`
	SentAtUnixMs    int64  `json:"sent_at_unix_ms"`
	OriginSeq       uint64 `json:"origin_seq"`
	AppliedAtUnixMs int64  `json:"applied_at_unix_ms"`
}

type positions struct {
	applied    map[nodeZone]uint64
	source     map[originZone]uint64
	heartbeats map[string]Heartbeat
	observed   map[string]uint64 // per origin node, the newest HLC applied (observed.go)
}

func newPositions() *positions {
	return &positions{
		applied:    map[nodeZone]uint64{},
		source:     map[originZone]uint64{},
		heartbeats: map[string]Heartbeat{},
		observed:   map[string]uint64{},
	}
}

func (p *positions) clone() *positions {
	return &positions{
		applied:    maps.Clone(p.applied),
		source:     maps.Clone(p.source),
		heartbeats: maps.Clone(p.heartbeats),
		observed:   maps.Clone(p.observed),
	}
}

// merge folds the changes of a committed batch in.
func (p *positions) merge(d *positions) {
	maps.Copy(p.applied, d.applied)
	maps.Copy(p.source, d.source)
	maps.Copy(p.heartbeats, d.heartbeats)
	maps.Copy(p.observed, d.observed)
}
