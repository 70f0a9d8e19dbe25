package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/meridian-id/meridian/conflict"
	"github.com/meridian-id/meridian/keystore"
	"github.com/nats-io/nats.go/jetstream"
)

// RebuildConfig configures Rebuild.
type RebuildConfig struct {
	// JS is a JetStream context of the stream's domain. Required.
	JS jetstream.JetStream
	// Stream to replay (normally the region's inbox). Required.
	Stream string
	// Dir is the directory to build the read model in: empty (or missing),
	// or holding an interrupted rebuild of the same stream, which resumes
	// from where it stopped. Required; must not be a running projector's.
	Dir string
	// FromSeq is the first stream sequence applied into a fresh Dir
	// (default: the stream's first). Ignored when resuming.
	FromSeq uint64
	// Until, when set, builds the model as of that time: messages the
	// stream stored after it are not applied.
	Until time.Time
	// ToSeq, when set, is the last stream sequence applied (default: the
	// stream's last sequence at the start). A swap catches a rebuilt
	// model up to exactly the live model's position with it.
	ToSeq uint64
	// Zone, Keys, ZoneKeys, Merger: as in Config (Zone and Keys required).
	Zone     string
	Keys     KeyStore
	ZoneKeys map[string]keystore.ZoneKey
	Merger   *conflict.Merger
	// Now, Logger, BatchSize, ApplyWorkers, CacheEntries: as in Config.
	Now          func() int64
	Logger       *slog.Logger
	BatchSize    int
	ApplyWorkers int
	CacheEntries int
	// MemTableSize, BlockCache, BlockCacheSize: the rebuilt model's Pebble
	// sizes, as in Config (a node rebuilding beside its live model passes
	// its shared cache). Without BlockCache the rebuild has a block cache
	// of its own of BlockCacheSize (default DefaultBlockCacheSize).
	MemTableSize   uint64
	BlockCache     *pebble.Cache
	BlockCacheSize int64
	// Progress, if set, is called after each applied batch.
	Progress func(RebuildProgress)
}

// RebuildProgress reports a rebuild's position.
type RebuildProgress struct {
	Seq, LastSeq uint64 // applied, and the last sequence it runs to
	// Committed is the last sequence committed (a rebuild commits every
	// so many messages, see rebuildCommitMessages; what is applied beyond
	// it is committed when the rebuild ends or is interrupted, and applied
	// again after a crash).
	Committed uint64
	Messages  uint64 // applied so far by this call
	Elapsed   time.Duration
}

// RebuildStats summarises a finished (or interrupted) rebuild.
type RebuildStats struct {
	// FirstSeq is the first sequence this call applied from; LastSeq the
	// stream's last sequence when it started (the target); Reached the
	// last sequence now in the model.
	FirstSeq, LastSeq, Reached uint64
	Messages                   uint64 // applied by this call
	Quarantined                uint64 // quarantined by this call
	Resumed                    bool   // Dir held an earlier, interrupted rebuild
	StoppedAtUntil             bool   // Until cut the replay short
	Duration                   time.Duration
	PerSec                     float64
}

func (c *RebuildConfig) validate() error {
	var errs []error
	bad := func(field, rule string, args ...any) {
		errs = append(errs, invalidf("RebuildConfig."+field, rule, args...))
	}
	if c.JS == nil {
		bad("JS", "required")
	}
	if c.Stream == "" {
		bad("Stream", "required")
	}
	if c.Dir == "" {
		bad("Dir", "required")
	}
	if c.Zone == "" {
		bad("Zone", "required")
	}
	if c.Keys == nil {
		bad("Keys", "required")
	}
	if len(c.ZoneKeys) == 0 {
		bad("ZoneKeys", "required: the key(s) of zone %q unwrap its data-key records", c.Zone)
	}
	if c.BatchSize < 0 {
		bad("BatchSize", "must not be negative")
	}
	if c.Merger == nil && len(errs) == 0 {
		m, err := conflict.NewMerger()
		if err != nil {
			errs = append(errs, fmt.Errorf("projector: merger: %w", err))
		}
		c.Merger = m
	}
	if c.ApplyWorkers < 0 {
		bad("ApplyWorkers", "must not be negative")
	}
	validatePebble(c.MemTableSize, c.BlockCache, c.BlockCacheSize, bad)
	if c.BatchSize == 0 {
		c.BatchSize = DefaultRebuildBatchSize
	}
	cfg := Config{Now: c.Now, Logger: c.Logger, BatchSize: c.BatchSize, ApplyWorkers: c.ApplyWorkers, CacheEntries: c.CacheEntries}
	cfg.setDefaults()
	c.Now, c.Logger, c.BatchSize, c.ApplyWorkers, c.CacheEntries = cfg.Now, cfg.Logger, cfg.BatchSize, cfg.ApplyWorkers, cfg.CacheEntries
	return errors.Join(errs...)
}

// DefaultRebuildBatchSize is RebuildConfig.BatchSize's default: larger
// than the live projector's, since a rebuild has no latency to keep and
// larger pulls and runs cost less per message (about 1.3-1.6x the rate of
// 2048 in BenchmarkReplay on 2 cores).
const DefaultRebuildBatchSize = 8192

// rebuildCommitMessages is how many messages a rebuild applies per
// commit, at most: nobody reads the model while it is rebuilt, so it
// encodes, seals and writes each identity's states once per commit, not
// once per batch, resuming from the last commit after a crash (an
// interrupted rebuild commits what it applied on the way out). A commit
// comes earlier when the identities applied since the last one reach the
// state cache's size (RebuildConfig.CacheEntries), which bounds the
// memory the deferred states take beyond the cache. With identities
// updated round-robin (BenchmarkReplay: 100 000 identities, 2.1M
// messages), a commit every 131 072 messages encoded and sealed each
// identity's states about once per 1.3 messages applied to it.
const rebuildCommitMessages = 1 << 20

// rebuildCommitBatches is how many batches Swap's catch-up of a rebuilt
// model applies per commit.
const rebuildCommitBatches = 16

// Rebuild replays a stream into a read model in a fresh directory through
// the same apply path as the live projector (so a rebuilt model equals the
// live one that applied the same messages), up to the stream's last
// sequence at the start or to Until. It is resumable: a Dir left by an
// interrupted call continues where it stopped. Data keys arriving in the
// stream are stored in Keys (idempotently), and erasures in the stream
// destroy keys again, so a replay never revives an erased identity.
// Swapping the result in for a running projector is the caller's job.
func Rebuild(ctx context.Context, cfg RebuildConfig) (RebuildStats, error) {
	if err := cfg.validate(); err != nil {
		return RebuildStats{}, err
	}
	start := time.Now()
	eng, err := openEngine(engineConfig{
		dir: cfg.Dir, keys: cfg.Keys, merger: cfg.Merger, zone: cfg.Zone,
		zoneKeys: cfg.ZoneKeys, now: cfg.Now, log: cfg.Logger, shards: cfg.ApplyWorkers, cache: cfg.CacheEntries,
		commitEvery: rebuildCommitMessages, commitIdentities: commitIdentities(cfg.CacheEntries),
		store: cfg.storeOptions(),
	})
	if err != nil {
		return RebuildStats{}, err
	}
	st, err := rebuild(ctx, cfg, eng, start)
	if cerr := eng.close(); err == nil {
		err = cerr
	}
	st.Duration = time.Since(start)
	if st.Duration > 0 {
		st.PerSec = float64(st.Messages) / st.Duration.Seconds()
	}
	return st, err
}

func (c *RebuildConfig) storeOptions() storeOptions {
	return storeOptions{memTableSize: c.MemTableSize, cache: c.BlockCache, cacheSize: c.BlockCacheSize}
}

// commitIdentities bounds the identities a rebuild's deferred batches
// hold: the state cache's size, or its default when the cache is off.
func commitIdentities(cacheEntries int) int {
	if cacheEntries > 0 {
		return cacheEntries
	}
	return DefaultCacheEntries
}

func rebuild(ctx context.Context, cfg RebuildConfig, eng *engine, start time.Time) (RebuildStats, error) {
	var st RebuildStats
	stream, err := cfg.JS.Stream(ctx, cfg.Stream)
	if err != nil {
		return st, fmt.Errorf("projector: rebuild: stream %s: %w", cfg.Stream, err)
	}
	info := stream.CachedInfo()
	st.LastSeq, st.Reached = info.State.LastSeq, eng.inboxSeq
	if cfg.ToSeq > 0 {
		if cfg.ToSeq > st.LastSeq {
			return st, fmt.Errorf("projector: rebuild: %s ends at sequence %d, before ToSeq %d", cfg.Stream, st.LastSeq, cfg.ToSeq)
		}
		st.LastSeq = cfg.ToSeq
	}
	from := max(cfg.FromSeq, 1)
	if eng.inboxSeq > 0 {
		st.Resumed, from = true, eng.inboxSeq+1
	}
	st.FirstSeq = from
	if from > st.LastSeq || info.State.Msgs == 0 {
		return st, nil
	}
	cons, err := cfg.JS.OrderedConsumer(ctx, cfg.Stream, orderedFrom(from))
	if err != nil {
		return st, fmt.Errorf("projector: rebuild: consumer on %s: %w", cfg.Stream, err)
	}
	untilNs := int64(0)
	if !cfg.Until.IsZero() {
		untilNs = cfg.Until.UnixNano()
	}
	quarBefore := eng.c.quarantined.Load()
	err = pump(ctx, cons, cfg.BatchSize, cfg.Logger, func(msgs []inMsg) (bool, error) {
		n, done := len(msgs), false
		for i := range msgs {
			if untilNs != 0 && msgs[i].TimeNs > untilNs {
				n, done, st.StoppedAtUntil = i, true, true
				break
			}
			if msgs[i].Seq >= st.LastSeq || msgs[i].Pending == 0 {
				n, done = i+1, true
				break
			}
		}
		if err := eng.process(msgs[:n]); err != nil {
			return true, err
		}
		if done {
			if err := eng.flush(); err != nil {
				return true, err
			}
		}
		st.Messages += uint64(n)
		if cfg.Progress != nil {
			applied := eng.inboxSeq
			if n > 0 {
				applied = max(applied, msgs[n-1].Seq)
			}
			cfg.Progress(RebuildProgress{Seq: applied, Committed: eng.inboxSeq, LastSeq: st.LastSeq, Messages: st.Messages, Elapsed: time.Since(start)})
		}
		return done, nil
	})
	// Whatever else stopped it, what was applied is consistent: commit it.
	if ferr := eng.flush(); err == nil {
		err = ferr
	}
	st.Reached = eng.inboxSeq
	st.Quarantined = eng.c.quarantined.Load() - quarBefore
	if err != nil {
		return st, fmt.Errorf("projector: rebuild: %w", err)
	}
	// Batches commit without fsync; make the finished model durable.
	if err := eng.store.db.LogData(nil, pebble.Sync); err != nil {
		return st, fmt.Errorf("projector: rebuild: sync: %w", err)
	}
	return st, nil
}
