package eventlog

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Defaults applied by Open to zero-valued Options fields.
const (
	// DefaultMaxBatchRecords bounds the records of one group commit. It is
	// far above what 64 concurrent writers produce per fsync, so it only
	// matters for bulk callers.
	DefaultMaxBatchRecords = 8192
	// DefaultMaxBatchBytes bounds the record bytes of one group commit; it
	// keeps a batch well under Pebble's large-batch threshold (half the
	// memtable), so batches go through the ordinary commit path.
	DefaultMaxBatchBytes = 4 << 20
	// DefaultMaxRecordBytes bounds one record. The writer's own limit
	// (64 KiB per event) is far below it.
	DefaultMaxRecordBytes = 1 << 20
	// DefaultPipeline is the number of batches that may be waiting for their
	// fsync at once. With 1 the next batch is still built (sequences
	// assigned, records stamped and encoded) while the previous one syncs,
	// and is handed to Pebble when that sync returns. More than 1 lets
	// Pebble queue batches behind a running fsync, which measured slower
	// here: it splits concurrent writers over more, smaller fsyncs and
	// defeats the commit delay.
	DefaultPipeline = 1
	// DefaultCommitDelay bounds the commit delay per commitDelayGroup callers
	// expected back (see Options.CommitDelay); well under one fsync
	// (about 250 µs on the reference machines).
	DefaultCommitDelay = 100 * time.Microsecond
	// DefaultMemTableSize is Pebble's memtable size for the log: the
	// least that keeps DefaultMaxBatchBytes an ordinary memtable insert
	// (a quarter of it). Larger than Pebble's 4 MiB default so that bursts
	// of appends rarely stall on flushes; 64 MiB appended no faster here
	// (BENCHMARKS.md, "Memory budget") and cost up to 128 MiB of memory
	// outside the Go heap per log.
	DefaultMemTableSize = 16 << 20
	// DefaultBlockCacheSize is the block cache for reads of flushed records,
	// when the log has a cache of its own (Options.BlockCache not set).
	DefaultBlockCacheSize = 16 << 20
	// MemTableStopWritesThreshold is how many memtables Pebble keeps at
	// most (the one written and those queued for flushing) before it stalls
	// writes: the log's memtables take at most this many MemTableSize.
	MemTableStopWritesThreshold = 2
	// DefaultRetentionKeep is the number of newest records retention keeps
	// even when every checkpoint has passed them (about 25 MB of 256-byte
	// records): a margin for re-shipping and for investigations.
	DefaultRetentionKeep = 100_000
	// DefaultRetentionStep is the least number of records retention removes
	// at once, so that it writes one range tombstone per step rather than one
	// per batch.
	DefaultRetentionStep = 10_000
	// maxCheckpointName bounds checkpoint names (they are Pebble keys).
	maxCheckpointName = 256
)

// Options configures a Log. Only Dir is required.
type Options struct {
	// Dir is the Pebble directory of the log; created if missing.
	Dir string

	// Stamp, if set, is called by the committer for each appended record with
	// the sequence it was assigned, in sequence order, and its result is what
	// the log stores (the writer uses it to put the sequence into the event
	// bytes). It runs on the committer goroutine: it must be fast, must not
	// call back into the Log, and must not keep rec. A panic in Stamp fails
	// that Append (with a *StampError) and nothing of it is written.
	Stamp func(seq uint64, rec []byte) []byte

	// MaxBatchRecords bounds the records in one group commit (default
	// DefaultMaxBatchRecords). One Append may not exceed it.
	MaxBatchRecords int
	// MaxBatchBytes bounds the record bytes in one group commit, measured on
	// the caller's records before Stamp (default DefaultMaxBatchBytes). One
	// Append may not exceed it.
	MaxBatchBytes int
	// MaxRecordBytes bounds one record (default DefaultMaxRecordBytes).
	MaxRecordBytes int
	// Pipeline is the number of batches that may await their fsync at once
	// (default DefaultPipeline, at most 16).
	Pipeline int

	// CommitDelay is the longest the committer, with the disk idle, holds a
	// ready batch to let the callers just acknowledged append again, so that
	// concurrent writers share one fsync instead of alternating between two
	// (see gather in groupcommit.go). It only applies after a batch that
	// answered at least two appends, and ends as soon as that many appends
	// have arrived. The bound is CommitDelay per commitDelayGroup (8) callers
	// expected, at most commitDelayMaxFactor (10) times CommitDelay: callers
	// that each spend CPU on their next append (the writer) take longer to
	// come back the more of them there are, and cutting the wait short
	// splits them over two fsyncs. Default DefaultCommitDelay; negative
	// disables it.
	CommitDelay time.Duration

	// Retention trims records every consumer has checkpointed past.
	Retention Retention

	// MemTableSize is Pebble's memtable size (default DefaultMemTableSize;
	// at least 1 MiB and 4 × MaxBatchBytes). Pebble allocates memtables
	// outside the Go heap and keeps up to MemTableStopWritesThreshold of
	// them.
	MemTableSize uint64
	// BlockCache, if set, is a Pebble block cache shared with other databases
	// (a node's log, read model and key store share one). Pebble counts
	// the memtables of every database against the cache it is opened
	// with, evicting blocks to make room for them, so the owner sizes it
	// as the room for blocks plus every database's memtables budget (see
	// PebbleBudget). The log takes its own reference; the caller keeps and
	// releases (Unref) its own. BlockCacheSize must then be 0.
	BlockCache *pebble.Cache
	// BlockCacheSize is the room for blocks in the log's own block cache when
	// BlockCache is not set (default DefaultBlockCacheSize). The cache made is
	// BlockCacheSize plus the memtables' budget, since Pebble counts memtables
	// against it.
	BlockCacheSize int64
}

// PebbleBudget is the memory, outside the Go heap, the log's Pebble may
// take with these options (defaults applied): cache is the room for blocks
// of its own block cache (0 when Options.BlockCache is shared: its owner counts
// it), memTables MemTableStopWritesThreshold memtables. The log's own cache
// is made of cache + memTables, which bounds both together.
func (o Options) PebbleBudget() (cache, memTables int64) {
	o.setDefaults()
	memTables = MemTableStopWritesThreshold * int64(o.MemTableSize)
	if o.BlockCache != nil {
		return 0, memTables
	}
	return o.BlockCacheSize, memTables
}

// Retention configures automatic trimming. The committer evaluates it with
// every batch it builds and adds the range deletion to that batch, so a
// SetCheckpoint that allows a trim returns after the trim is durable.
//
// Records below the lowest checkpoint are removed, except that the newest
// Keep records always stay. With no checkpoint at all nothing is trimmed
// (a log nobody consumes is kept whole).
type Retention struct {
	// Off disables automatic trimming; Trim still works.
	Off bool
	// Keep is the least number of newest records kept (default
	// DefaultRetentionKeep; at least 1).
	Keep uint64
	// Step is the least number of records removed at once (default
	// DefaultRetentionStep).
	Step uint64
}

func (o *Options) setDefaults() {
	if o.MaxBatchRecords == 0 {
		o.MaxBatchRecords = DefaultMaxBatchRecords
	}
	if o.MaxBatchBytes == 0 {
		o.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if o.MaxRecordBytes == 0 {
		o.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if o.Pipeline == 0 {
		o.Pipeline = DefaultPipeline
	}
	if o.CommitDelay == 0 {
		o.CommitDelay = DefaultCommitDelay
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.BlockCacheSize == 0 && o.BlockCache == nil {
		o.BlockCacheSize = DefaultBlockCacheSize
	}
	if o.Retention.Keep == 0 {
		o.Retention.Keep = DefaultRetentionKeep
	}
	if o.Retention.Step == 0 {
		o.Retention.Step = DefaultRetentionStep
	}
}

// validate checks defaulted options.
func (o *Options) validate() error {
	switch {
	case o.Dir == "":
		return argErr("Options.Dir", "must not be empty")
	case o.MaxBatchRecords < 1:
		return argErr("Options.MaxBatchRecords", fmt.Sprintf("must be >= 1, got %d", o.MaxBatchRecords))
	case o.MaxBatchBytes < 1:
		return argErr("Options.MaxBatchBytes", fmt.Sprintf("must be >= 1, got %d", o.MaxBatchBytes))
	case o.MaxRecordBytes < 1:
		return argErr("Options.MaxRecordBytes", fmt.Sprintf("must be >= 1, got %d", o.MaxRecordBytes))
	case o.MaxRecordBytes > o.MaxBatchBytes:
		return argErr("Options.MaxRecordBytes", fmt.Sprintf("must be <= Options.MaxBatchBytes (%d), got %d", o.MaxBatchBytes, o.MaxRecordBytes))
	case o.Pipeline < 1 || o.Pipeline > 16:
		return argErr("Options.Pipeline", fmt.Sprintf("must be in [1, 16], got %d", o.Pipeline))
	case o.CommitDelay > 10*time.Millisecond:
		return argErr("Options.CommitDelay", fmt.Sprintf("must be <= 10ms, got %s", o.CommitDelay))
	case o.MemTableSize < 1<<20:
		return argErr("Options.MemTableSize", fmt.Sprintf("must be >= 1 MiB, got %d", o.MemTableSize))
	case uint64(o.MaxBatchBytes)*4 > o.MemTableSize:
		// Keeps every batch an ordinary memtable insert rather than a
		// "large batch" that Pebble turns into its own flushable.
		return argErr("Options.MaxBatchBytes", fmt.Sprintf("must be <= Options.MemTableSize/4 (%d), got %d", o.MemTableSize/4, o.MaxBatchBytes))
	case o.MemTableSize >= 4<<30:
		return argErr("Options.MemTableSize", fmt.Sprintf("must be < 4 GiB, got %d", o.MemTableSize))
	case o.BlockCacheSize < 0:
		return argErr("Options.BlockCacheSize", fmt.Sprintf("must be >= 0, got %d", o.BlockCacheSize))
	case o.BlockCache != nil && o.BlockCacheSize != 0:
		return argErr("Options.BlockCacheSize", fmt.Sprintf("must be 0 when Options.BlockCache (a shared cache) is set, got %d", o.BlockCacheSize))
	}
	return nil
}

// pebbleOptions are the Pebble settings of the log (o defaulted), shared
// with the raw Pebble benchmark so that both are measured on the same
// engine settings. The WAL stays on and every commit is synced: the WAL
// fsync is the durability of an acknowledged append.
func pebbleOptions(o Options, fs vfs.FS) *pebble.Options {
	return &pebble.Options{
		FS:                          fs,
		MemTableSize:                o.MemTableSize,
		MemTableStopWritesThreshold: MemTableStopWritesThreshold,
		Cache:                       o.BlockCache, // nil: Pebble makes one of CacheSize
		CacheSize:                   o.BlockCacheSize + MemTableStopWritesThreshold*int64(o.MemTableSize),
		FormatMajorVersion:          pebble.FormatNewest,
		Logger:                      quietLogger{},
	}
}

// PebbleMemory is what a database's Pebble holds outside the Go heap now
// (from pebble.DB.Metrics).
type PebbleMemory struct {
	// MemTables is the bytes allocated for memtables: the ones in use
	// (and large batches), plus zombies (flushed, still read by an
	// iterator, or one kept for reuse).
	MemTables uint64
	// BlockCache is the bytes of blocks in the block cache; for a shared
	// cache, that of every database using it.
	BlockCache int64
}

func pebbleMemory(db *pebble.DB) PebbleMemory {
	m := db.Metrics()
	return PebbleMemory{MemTables: m.MemTable.Size + m.MemTable.ZombieSize, BlockCache: m.BlockCache.Size}
}

// PebbleMemory reports the memory the log's Pebble holds now (zero after
// Close).
func (l *Log) PebbleMemory() PebbleMemory {
	l.open.RLock()
	defer l.open.RUnlock()
	if l.open.closed {
		return PebbleMemory{}
	}
	return pebbleMemory(l.db)
}

// quietLogger drops Pebble's informational lines (one per WAL replayed at
// open, for instance) and keeps its errors and fatal errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}

func (quietLogger) Errorf(format string, args ...any) { pebble.DefaultLogger.Errorf(format, args...) }

func (quietLogger) Fatalf(format string, args ...any) { pebble.DefaultLogger.Fatalf(format, args...) }
