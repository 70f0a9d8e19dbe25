package projector

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/meridian-id/meridian/conflict"
	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/region"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for zero-valued Config fields.
const (
	DefaultBatchSize    = 2048
	DefaultLagInterval  = 2 * time.Second
	DefaultRetryBackoff = 200 * time.Millisecond
	DefaultCacheEntries = 1 << 16
	maxRetryBackoff     = 10 * time.Second

	// DefaultMemTableSize is the read model's Pebble memtable size. A live
	// batch (2048 messages) is far below half of it, the size from which
	// Pebble turns a batch into a flushable of its own; 64 MiB applied no
	// faster (BENCHMARKS.md, "Memory budget") and cost up to 128 MiB
	// outside the Go heap per model.
	DefaultMemTableSize = 16 << 20
	// DefaultBlockCacheSize is the read model's block cache when it has
	// one of its own (Config.BlockCache not set).
	DefaultBlockCacheSize = 32 << 20
	// MemTableStopWritesThreshold is how many memtables Pebble keeps at
	// most (the one written and those queued for flushing) before it
	// stalls writes.
	MemTableStopWritesThreshold = 2
)

// KeyStore is what the projector needs of the region's key store;
// *keystore.Store implements it.
type KeyStore interface {
	// Get returns one data key; keystore.ErrNotFound when it is not here.
	Get(identityID, keyID string) (keystore.Key, error)
	// Put stores (durably, idempotently) a key that arrived wrapped.
	Put(identityID, keyID string, material []byte) error
	// Current returns the key the resident state is sealed under (ok is
	// false when the identity has no key here). The projector never
	// creates keys: a resident state whose keys are gone stays gone.
	Current(identityID string) (keystore.Key, bool, error)
	// Destroy deletes every key of the identity (crypto-shredding).
	Destroy(identityID string) (int, error)
}

var _ KeyStore = (*keystore.Store)(nil)

// Config configures a Projector.
type Config struct {
	// Region is the region whose inbox this projector consumes. Required.
	Region string
	// Zone is the residency zone of Region: RESIDENT parts and key records
	// of this zone are applied, those of any other zone are quarantined
	// (they should never arrive; the inbox's filters keep them out).
	// Required.
	Zone string
	// JS is a JetStream context of the region's own domain. Required.
	JS jetstream.JetStream
	// Stream is the inbox stream (default region.InboxStream(Region)).
	Stream string
	// Dir is the read model's Pebble directory, owned by the projector.
	// Required.
	Dir string
	// Keys is the region's key store (*keystore.Store). Required.
	Keys KeyStore
	// ZoneKeys unwrap the data-key records of Zone (any map key; matched by
	// ZoneKey.ID, so rotated keys can sit side by side). Required.
	ZoneKeys map[string]keystore.ZoneKey
	// Merger applies events (default conflict.NewMerger()).
	Merger *conflict.Merger
	// Now is the clock in unix ms for session expiry, lag and quarantine
	// times (default: the wall clock).
	Now func() int64
	// Logger (default: discarded).
	Logger *slog.Logger
	// BatchSize is the most inbox messages applied in one Pebble batch
	// (default 2048). A batch closes early when no message is waiting, so
	// it bounds latency only under load.
	BatchSize int
	// ApplyWorkers is how many goroutines apply a large batch, split by
	// identity (default GOMAXPROCS). Now must then be safe for concurrent
	// use.
	ApplyWorkers int
	// CacheEntries bounds the cache of decoded states of recently applied
	// identities kept between batches (default 65536; negative disables).
	CacheEntries int
	// HashEmail is the writer's keyed email hash (writer.EmailHash with the
	// deployment's hash key); GET /v1/identities?email= needs it.
	HashEmail func(email string) []byte
	// Origins maps every origin region to its JetStream domain, for the
	// events part of the lag (origin streams are asked for their last
	// sequences every LagInterval). Without it events lag is unknown.
	Origins map[string]string
	// LagInterval is how often origin streams are asked (default 2 s).
	LagInterval time.Duration
	// RetryBackoff is the first wait after a failed batch or a lost
	// consumer; it doubles up to 10 s (default 200 ms).
	RetryBackoff time.Duration

	// MemTableSize is the read model's Pebble memtable size (default
	// DefaultMemTableSize; at least 1 MiB, below 4 GiB). Pebble allocates
	// memtables outside the Go heap and keeps up to
	// MemTableStopWritesThreshold of them.
	MemTableSize uint64
	// BlockCache, if set, is a Pebble block cache shared with other
	// databases (a node's log, read model and key store share one; Pebble
	// counts every database's memtables against it, so its owner sizes it
	// as the room for blocks plus their memtables budget, see
	// PebbleBudget). Each model opened takes its own reference; the caller
	// keeps and releases (Unref) its own. BlockCacheSize must then be 0.
	BlockCache *pebble.Cache
	// BlockCacheSize is the room for blocks in the model's own block cache
	// when BlockCache is not set (default DefaultBlockCacheSize); the cache
	// made is BlockCacheSize plus the memtables' budget.
	BlockCacheSize int64
}

// validatePebble checks the Pebble sizes of a Config or RebuildConfig.
func validatePebble(memTable uint64, shared *pebble.Cache, cacheSize int64, bad func(field, rule string, args ...any)) {
	if memTable != 0 && memTable < 1<<20 {
		bad("MemTableSize", "must be 0 (default %d) or at least 1 MiB, got %d", DefaultMemTableSize, memTable)
	} else if memTable >= 4<<30 {
		bad("MemTableSize", "must be below 4 GiB, got %d", memTable)
	}
	if cacheSize < 0 {
		bad("BlockCacheSize", "must not be negative, got %d", cacheSize)
	} else if shared != nil && cacheSize != 0 {
		bad("BlockCacheSize", "must be 0 when BlockCache (a shared cache) is set, got %d", cacheSize)
	}
}

func (c *Config) storeOptions() storeOptions {
	return storeOptions{memTableSize: c.MemTableSize, cache: c.BlockCache, cacheSize: c.BlockCacheSize}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(field, rule string, args ...any) {
		errs = append(errs, invalidf("Config."+field, rule, args...))
	}
	if c.Region == "" {
		bad("Region", "required")
	}
	if c.Zone == "" {
		bad("Zone", "required: the residency zone of the region")
	} else if c.Zone == region.GlobalZone {
		bad("Zone", "%q is the zone of GLOBAL parts, not a residency zone", c.Zone)
	}
	if c.JS == nil {
		bad("JS", "required: a JetStream context of the region's domain")
	}
	if c.Dir == "" {
		bad("Dir", "required")
	}
	if c.Keys == nil {
		bad("Keys", "required")
	}
	if len(c.ZoneKeys) == 0 {
		bad("ZoneKeys", "required: the key(s) of zone %q unwrap its data-key records", c.Zone)
	}
	if c.BatchSize < 0 {
		bad("BatchSize", "must not be negative, got %d", c.BatchSize)
	}
	if c.ApplyWorkers < 0 {
		bad("ApplyWorkers", "must not be negative, got %d", c.ApplyWorkers)
	}
	if c.LagInterval < 0 || c.RetryBackoff < 0 {
		bad("LagInterval/RetryBackoff", "must not be negative")
	}
	validatePebble(c.MemTableSize, c.BlockCache, c.BlockCacheSize, bad)
	for origin, domain := range c.Origins {
		if origin == "" || domain == "" {
			bad("Origins", "region and domain must both be named, got %q: %q", origin, domain)
		}
	}
	if c.Stream == "" && c.Region != "" {
		c.Stream = region.InboxStream(c.Region)
	}
	if c.Merger == nil && len(errs) == 0 {
		m, err := conflict.NewMerger()
		if err != nil {
			errs = append(errs, fmt.Errorf("projector: merger: %w", err))
		}
		c.Merger = m
	}
	c.setDefaults()
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.Now == nil {
		c.Now = func() int64 { return time.Now().UnixMilli() }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.CacheEntries == 0 {
		c.CacheEntries = DefaultCacheEntries
	}
	if c.ApplyWorkers == 0 {
		c.ApplyWorkers = runtime.GOMAXPROCS(0)
	}
	if c.LagInterval == 0 {
		c.LagInterval = DefaultLagInterval
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
}
