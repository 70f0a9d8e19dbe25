package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/region"
)

// Defaults for zero-valued Config fields.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultSourceStallAfter  = 10 * time.Second
	DefaultHTTPAddr          = "127.0.0.1:0"
	// DefaultPebbleCacheBytes is Config.PebbleCacheBytes' default.
	DefaultPebbleCacheBytes = 64 << 20
	// minPebbleCacheBytes is the least PebbleCacheBytes accepted.
	minPebbleCacheBytes = 1 << 20
)

// ErrInvalidConfig is wrapped by every Config validation error.
var ErrInvalidConfig = errors.New("node: invalid config")

// Config configures a regional node. File formats (policy JSON, key files,
// credentials) are parsed by cmd/meridian; this package takes their values.
type Config struct {
	// Region is the region this node serves. Required; must be in Policy.
	Region string
	// Policy is the residency policy of the deployment. Required.
	Policy *region.Policy
	// Dir is the node's data directory: log/, keys/ and model/ live under
	// it, and the node id is remembered in it. Required.
	Dir string
	// NodeID names this node in every record it writes (origin_node). When
	// empty, the id remembered in Dir is used, or a new one
	// "<region>-<8 hex>" is made and remembered.
	NodeID string
	// NATSURL is the region's NATS server(s); default: the policy's
	// nats_url for Region.
	NATSURL string
	// NATSOptions are extra connection options (credentials, TLS).
	NATSOptions []nats.Option
	// HTTPAddr is where the HTTP API listens (default 127.0.0.1:0).
	HTTPAddr string
	// ZoneKeys by zone name; must hold the key of the region's zone.
	ZoneKeys map[string]keystore.ZoneKey
	// HashKey is the HMAC key for email/username hashes, the same in every
	// region (at least 16 bytes).
	HashKey []byte
	// HeartbeatInterval is how often the node appends a Heartbeat (default
	// 1 s; negative disables heartbeats).
	HeartbeatInterval time.Duration
	// SourceStallAfter is how old the newest heartbeat applied from an
	// origin may get, while that origin's JetStream domain answers, before
	// the node re-establishes the origin's inbox sources (watchdog.go).
	// Default 10 s, or 3 × HeartbeatInterval if that is longer; negative
	// disables the watchdog. It must exceed HeartbeatInterval, since
	// heartbeats are what it waits for.
	SourceStallAfter time.Duration
	// Logger receives the node's log lines (default: discarded).
	Logger *slog.Logger
	// Now is the node's physical clock in unix ms (default: wall clock).
	Now func() int64
	// Claims tunes the uniqueness claims (claims.go).
	Claims ClaimsConfig
	// KeyCacheEntries bounds the key store's in-memory cache of data keys,
	// in identities (keystore.Options.CacheEntries): 0 takes
	// keystore.DefaultCacheEntries, negative disables the cache. Each entry
	// costs a few hundred bytes; a sealed write or read of an identity not
	// cached reads its key from Pebble.
	KeyCacheEntries int
	// PebbleCacheBytes is the room for cached blocks in the one Pebble
	// block cache the node's databases share: the log, the read model (and
	// a model being swapped in) and the key store (default
	// DefaultPebbleCacheBytes; at least 1 MiB). Pebble counts the
	// databases' memtables against the cache they use, so the node makes
	// the cache PebbleCacheBytes plus their memtables' budget
	// (Node.PebbleBudget), which bounds blocks and memtables together.
	// Pebble allocates both outside the Go heap: a Go memory limit
	// (--memory-limit) does not cover them.
	PebbleCacheBytes int64
}

var nodeIDRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`)

func (c *Config) validate() error {
	var errs []error
	bad := func(field, rule string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(rule, args...)))
	}
	switch {
	case c.Policy == nil:
		bad("Policy", "required")
	case c.Region == "":
		bad("Region", "required")
	default:
		zone, ok := c.Policy.ZoneOf(c.Region)
		if !ok {
			bad("Region", "%q is not a region of the policy (regions: %s)", c.Region, strings.Join(c.Policy.Regions(), ", "))
		} else if zk, ok := c.ZoneKeys[zone]; !ok || zk.ID == "" {
			bad("ZoneKeys", "needs the key of zone %q, the zone of region %q", zone, c.Region)
		}
		if c.NATSURL == "" {
			if r, ok := c.Policy.Region(c.Region); ok {
				c.NATSURL = r.NATSURL
			}
		}
	}
	if c.Dir == "" {
		bad("Dir", "required")
	}
	if c.NodeID != "" && !nodeIDRe.MatchString(c.NodeID) {
		bad("NodeID", "must match %s, got %q", nodeIDRe, c.NodeID)
	}
	if len(c.HashKey) < 16 {
		bad("HashKey", "required, at least 16 bytes (got %d)", len(c.HashKey))
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.PebbleCacheBytes == 0 {
		c.PebbleCacheBytes = DefaultPebbleCacheBytes
	} else if c.PebbleCacheBytes < minPebbleCacheBytes {
		bad("PebbleCacheBytes", "must be 0 (default %d) or at least %d (1 MiB), got %d", DefaultPebbleCacheBytes, minPebbleCacheBytes, c.PebbleCacheBytes)
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.SourceStallAfter == 0 {
		c.SourceStallAfter = max(DefaultSourceStallAfter, 3*c.HeartbeatInterval)
	}
	if c.SourceStallAfter > 0 && c.HeartbeatInterval > 0 && c.SourceStallAfter <= c.HeartbeatInterval {
		bad("SourceStallAfter", "must exceed HeartbeatInterval (%s), got %s: a source is stalled only when heartbeats are overdue", c.HeartbeatInterval, c.SourceStallAfter)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = func() int64 { return time.Now().UnixMilli() }
	}
	c.Claims.validate(bad)
	return errors.Join(errs...)
}

// nodeID returns the configured node id, or the one remembered in dir, or
// makes and remembers a new one. A node keeps its id across restarts so that
// its per-node sequences stay one series.
func nodeID(dir, configured, regionName string) (string, error) {
	path := filepath.Join(dir, "node-id")
	if configured != "" {
		return configured, nil
	}
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if !nodeIDRe.MatchString(id) {
			return "", fmt.Errorf("node: %s holds %q, not a valid node id", path, id)
		}
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("node: read node id: %w", err)
	}
	var b [4]byte
	rand.Read(b[:])
	id := regionName + "-" + hex.EncodeToString(b[:])
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("node: write node id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("node: write node id: %w", err)
	}
	return id, nil
}
