package writer

import (
	"errors"
	"fmt"
	"time"

	"github.com/meridian-id/meridian/conflict"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
)

// Defaults for zero-valued Config fields.
const (
	DefaultMaxEventBytes   = 64 << 10
	DefaultMaxDrift        = 2 * time.Second
	DefaultMaxEvents       = 1000
	DefaultMaxRequestBytes = 2 << 20
)

// Topology is what the writer needs of the residency policy
// (*region.Policy implements it).
type Topology interface {
	// ZoneOf returns the residency zone of a region; ok is false for a
	// region the policy does not know.
	ZoneOf(region string) (zone string, ok bool)
}

// Config configures a Writer.
type Config struct {
	// Region and Node are this writer's region and node id; both are stamped
	// into every record (origin_region, origin_node). Required.
	Region, Node string
	// Topology resolves home regions to zones. Required; must know Region.
	Topology Topology
	// Log is the region's event log, opened with Options.Stamp =
	// StampSequence so that each record carries its sequence. Required.
	Log *eventlog.Log
	// Keys holds the identities' data keys. Required.
	Keys *keystore.Store
	// ZoneKeys by zone name; the key of this region's zone is required (it
	// wraps the data keys this region creates).
	ZoneKeys map[string]keystore.ZoneKey
	// HashKey is the HMAC-SHA256 key of the email and username hashes; the
	// same in every region (hashes are compared across regions). Required,
	// at least 16 bytes.
	HashKey []byte
	// MaxEventBytes bounds one event's encoded size (default 64 KiB).
	MaxEventBytes int
	// MaxEvents bounds the events of one Append (default 1000).
	MaxEvents int
	// MaxRequestBytes bounds an encoded request body in DecodeRequest and
	// the sum of event sizes in Append (default 2 MiB, which keeps one
	// request's records within the log's default batch limit of 4 MiB).
	MaxRequestBytes int
	// MaxDrift is how far ahead of Now a client-proposed HLC may be
	// (default 2 s).
	MaxDrift time.Duration
	// Now returns the node's clock in unix milliseconds, for the drift check
	// and heartbeats (default: the wall clock).
	Now func() int64
	// Tombstones, if set, refuses events of identities this region knows
	// to be erased (410 identity_erased); see tombstone.go.
	Tombstones Tombstones
	// Clock stamps HLCs (default: conflict.NewClock(Now)). Share it with
	// whatever else on the node stamps events.
	Clock *conflict.Clock
	// Claimer, if set, makes emails and usernames globally unique
	// (claims.go); nil when the policy has no claims region.
	Claimer Claimer
	// ClaimWindow bounds the time from claiming to handing the records to
	// the log (default DefaultClaimWindow); the claims reaper must be
	// configured with the same value.
	ClaimWindow time.Duration
	// Observed, if set, returns the region's causal context: per origin
	// node, the HLC of the newest event of that node the region has applied
	// (projector.Projector.Observed). It is stamped into every event that
	// removes set elements (Event.observed), so that the remove cuts only
	// the adds it observed (observed.go). Nil, or a nil result: removes go
	// without a context and cut every add stamped below them.
	Observed func() map[string]uint64
}

func (c *Config) validate() error {
	var errs []error
	bad := func(field, rule string, args ...any) {
		errs = append(errs, fmt.Errorf("writer: Config.%s: %s", field, fmt.Sprintf(rule, args...)))
	}
	if c.Region == "" {
		bad("Region", "required")
	}
	if c.Node == "" {
		bad("Node", "required")
	}
	if c.Log == nil {
		bad("Log", "required")
	}
	if c.Keys == nil {
		bad("Keys", "required")
	}
	if len(c.HashKey) < 16 {
		bad("HashKey", "required, at least 16 bytes (got %d)", len(c.HashKey))
	}
	if c.Topology == nil {
		bad("Topology", "required")
	} else if zone, ok := c.Topology.ZoneOf(c.Region); !ok {
		bad("Region", "%q is not a region of the topology", c.Region)
	} else if zk, ok := c.ZoneKeys[zone]; !ok || zk.ID == "" {
		bad("ZoneKeys", "needs the key of this region's zone %q (with an ID)", zone)
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = DefaultMaxEventBytes
	}
	if c.MaxEvents == 0 {
		c.MaxEvents = DefaultMaxEvents
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxDrift == 0 {
		c.MaxDrift = DefaultMaxDrift
	}
	if c.ClaimWindow == 0 {
		c.ClaimWindow = DefaultClaimWindow
	}
	if c.MaxEventBytes < 0 || c.MaxEvents < 0 || c.MaxRequestBytes < 0 || c.MaxDrift < 0 || c.ClaimWindow < 0 {
		bad("Max*", "limits must not be negative")
	}
	if c.MaxRequestBytes < c.MaxEventBytes {
		bad("MaxRequestBytes", "must be at least MaxEventBytes (%d), got %d", c.MaxEventBytes, c.MaxRequestBytes)
	}
	if c.Now == nil {
		c.Now = func() int64 { return time.Now().UnixMilli() }
	}
	if c.Clock == nil {
		c.Clock = conflict.NewClock(c.Now)
	}
	return errors.Join(errs...)
}
