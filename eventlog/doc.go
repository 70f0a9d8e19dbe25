// Package eventlog is meridian's durable local log: an append-only sequence
// of records on Pebble, with group commit, tailing, named checkpoints and
// retention.
//
// The loop: Append puts a request in a queue and waits. One committer
// goroutine claims queued requests, assigns each record the next sequence,
// stamps it (Options.Stamp), frames it with a CRC-32C over sequence and
// data, and hands the lot to Pebble as one synced batch without waiting for
// the fsync (ApplyNoSyncWait), so it builds the next batch while the
// previous one syncs. When a batch completes, the committer holds the next
// one for at most Options.CommitDelay so that the callers just acknowledged
// can join it (concurrent writers then share one fsync instead of
// alternating between two). A syncer goroutine waits for each batch's fsync
// in commit order, publishes LastSeq, wakes the Append calls and the
// Wait-ers (a channel closed and replaced per batch). Checkpoints, the
// sequence floor and trims travel through the same queue, so every write is
// ordered and shares fsyncs; retention is decided by the committer as it
// builds each batch.
//
// Readers (Read, Reader) see only durable records, verify every checksum,
// report a damaged record as *CorruptError and a trimmed range as
// *TrimmedError, and never skip either silently.
//
// Key layout: 'r'+seq (8 bytes, big-endian) for records, 'c'+name for
// checkpoints, 'm'+name for meta (format version, sequence floor, trim
// marker).
package eventlog
