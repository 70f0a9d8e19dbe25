package eventlog

import (
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Metrics is a snapshot of the log's counters since Open.
type Metrics struct {
	Appends          uint64  // Append calls committed
	Batches          uint64  // synced Pebble batches (group commits), including checkpoint-only ones
	RecordBatches    uint64  // batches that carried records
	Records          uint64  // records committed
	Bytes            uint64  // record bytes committed (after Stamp, without framing)
	Fsyncs           uint64  // WAL fsyncs Pebble issued (one can cover several batches)
	MeanBatchRecords float64 // Records / RecordBatches
	FirstSeq         uint64
	LastSeq          uint64
	SequenceFloor    uint64
	TrimmedBelow     uint64 // every sequence below it has been trimmed
	Trims            uint64 // trims committed (automatic and explicit)
	Checkpoints      int    // named checkpoints held
	CorruptReads     uint64 // reads that met a record failing verification
}

// Metrics returns a snapshot of the log's counters.
func (l *Log) Metrics() Metrics {
	m := Metrics{
		Appends:       l.stats.appends.Load(),
		Batches:       l.stats.batches.Load(),
		RecordBatches: l.stats.recordBatches.Load(),
		Records:       l.stats.records.Load(),
		Bytes:         l.stats.bytes.Load(),
		Fsyncs:        l.fsyncs.Load(),
		SequenceFloor: l.floor.Load(),
		TrimmedBelow:  l.trimmed.Load(),
		Trims:         l.stats.trims.Load(),
		CorruptReads:  l.stats.corrupt.Load(),
	}
	if m.RecordBatches > 0 {
		m.MeanBatchRecords = float64(m.Records) / float64(m.RecordBatches)
	}
	l.seq.Lock()
	m.FirstSeq, m.LastSeq = l.seq.first.Load(), l.seq.last.Load()
	l.seq.Unlock()
	l.cps.Lock()
	m.Checkpoints = len(l.cps.m)
	l.cps.Unlock()
	return m
}

// countingFS counts fsyncs of WAL files, which Pebble does not expose other
// than as a Prometheus histogram.
type countingFS struct {
	vfs.FS
	n *atomic.Uint64
}

const walCategory vfs.DiskWriteCategory = "pebble-wal"

func (fs countingFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, cat)
	return fs.wrap(f, cat), err
}

func (fs countingFS) ReuseForWrite(oldname, newname string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, cat)
	return fs.wrap(f, cat), err
}

func (fs countingFS) Unwrap() vfs.FS { return fs.FS }

func (fs countingFS) wrap(f vfs.File, cat vfs.DiskWriteCategory) vfs.File {
	if f == nil || cat != walCategory {
		return f
	}
	return countingFile{File: f, n: fs.n}
}

type countingFile struct {
	vfs.File
	n *atomic.Uint64
}

func (f countingFile) Sync() error {
	f.n.Add(1)
	return f.File.Sync()
}

func (f countingFile) SyncData() error {
	f.n.Add(1)
	return f.File.SyncData()
}
