package eventlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// Redaction is the one exception to "records never change": erasure must
// remove key material (a wrapped data key) from every store, and an
// immutable log would otherwise keep a usable copy of it for as long as it
// keeps the record. Redact rewrites such records in place, keeping their
// sequences, and then pushes the old bytes out of Pebble's files.

// RedactStats reports a Redact.
type RedactStats struct {
	Records int // records rewritten
	// ScrubRounds is how many times a WAL file still held a secret and was
	// overwritten (0 when no secret was found after compaction).
	ScrubRounds int
}

// ErrNotRedacted is returned when a secret is still found in a WAL file
// after Redact's bounded scrubbing.
var ErrNotRedacted = errors.New("eventlog: secret still in a WAL file after redaction")

// maxScrubRounds bounds the WAL overwrite loop: Pebble keeps at most a few
// WAL files for recycling, so a handful of rotations reaches every one.
const maxScrubRounds = 12

// Redact replaces the data of existing records (Record.Seq names the
// record, Record.Data is its new content) in one synced batch, then
// flushes the memtable and compacts the records' key range so that no live
// SSTable holds an old version. Pebble recycles obsolete WAL files by
// overwriting them from the start, which can leave old bytes in their
// tails: for every byte string in secrets, Redact then overwrites WAL space
// (with a throw-away meta key) and rotates, until no WAL file in the log
// directory contains it (any 16-byte fragment of it, since the WAL splits
// records into blocks). Obsolete SSTables are deleted by Pebble in the
// background shortly after.
//
// Redact is not part of the group commit; a concurrent trim of a redacted
// record wins (the record is deleted again). It refuses records that do not
// exist, were trimmed or are not yet durable.
func (l *Log) Redact(ctx context.Context, recs []Record, secrets [][]byte) (RedactStats, error) {
	var st RedactStats
	if len(recs) == 0 {
		return st, argErr("recs", "must hold at least one record")
	}
	l.open.RLock()
	defer l.open.RUnlock()
	if l.open.closed {
		return st, ErrClosed
	}
	last := l.seq.last.Load()
	wb := l.db.NewBatch()
	defer wb.Close()
	lo, hi := recs[0].Seq, recs[0].Seq
	for i, r := range recs {
		field := fmt.Sprintf("recs[%d]", i)
		switch {
		case r.Seq == 0 || r.Seq > last:
			return st, argErr(field, fmt.Sprintf("seq %d is not a durable record (LastSeq %d)", r.Seq, last))
		case r.Seq < l.trimmed.Load():
			return st, &TrimmedError{From: r.Seq, First: l.seq.first.Load()}
		case len(r.Data) > l.opts.MaxRecordBytes:
			return st, argErr(field, fmt.Sprintf("%d bytes exceed Options.MaxRecordBytes (%d)", len(r.Data), l.opts.MaxRecordBytes))
		}
		v, closer, err := l.db.Get(recordKey(r.Seq))
		if errors.Is(err, pebble.ErrNotFound) {
			return st, argErr(field, fmt.Sprintf("no record at seq %d", r.Seq))
		}
		if err != nil {
			return st, fmt.Errorf("eventlog: redact: %w", err)
		}
		_, _, derr := decodeRecord(recordKey(r.Seq), v, r.Seq)
		closer.Close()
		if derr != nil {
			return st, derr
		}
		val := make([]byte, valueHeaderLen+len(r.Data))
		putRecordValue(val, r.Seq, r.Data)
		if err := wb.Set(recordKey(r.Seq), val, nil); err != nil {
			return st, fmt.Errorf("eventlog: redact: %w", err)
		}
		lo, hi = min(lo, r.Seq), max(hi, r.Seq)
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		return st, fmt.Errorf("eventlog: redact: %w", err)
	}
	st.Records = len(recs)
	// A trim that committed before our batch would be undone by it; the
	// marker is published before a trim commits, so checking it now sees
	// every such trim.
	if t := l.trimmed.Load(); lo < t {
		if err := l.db.DeleteRange(recordKey(lo), recordKey(min(t, hi+1)), pebble.Sync); err != nil {
			return st, fmt.Errorf("eventlog: redact: undo over trimmed range: %w", err)
		}
	}
	if err := l.db.Flush(); err != nil {
		return st, fmt.Errorf("eventlog: redact: flush: %w", err)
	}
	if err := l.db.Compact(ctx, recordKey(lo), recordKey(hi+1), false); err != nil {
		return st, fmt.Errorf("eventlog: redact: compact: %w", err)
	}
	frags := fragments(secrets)
	for len(frags) > 0 {
		dirty, size, err := walFilesHolding(l.opts.Dir, frags)
		if err != nil {
			return st, err
		}
		if len(dirty) == 0 {
			break
		}
		if st.ScrubRounds == maxScrubRounds {
			return st, fmt.Errorf("%w: %s", ErrNotRedacted, strings.Join(dirty, ", "))
		}
		st.ScrubRounds++
		if err := l.overwriteWAL(ctx, size); err != nil {
			return st, err
		}
	}
	return st, nil
}

// scrubKey is a meta key no reader looks at; it only carries filler.
var scrubKey = []byte("mscrub")

// overwriteWAL writes at least size bytes of zeros through the current
// WAL, deletes them again and rotates to the next WAL.
func (l *Log) overwriteWAL(ctx context.Context, size int64) error {
	chunk := make([]byte, 1<<20)
	for written := int64(0); written <= size+int64(len(chunk)); written += int64(len(chunk)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := l.db.Set(scrubKey, chunk, pebble.NoSync); err != nil {
			return fmt.Errorf("eventlog: redact: scrub: %w", err)
		}
	}
	if err := l.db.Delete(scrubKey, pebble.Sync); err != nil {
		return fmt.Errorf("eventlog: redact: scrub: %w", err)
	}
	if err := l.db.Flush(); err != nil {
		return fmt.Errorf("eventlog: redact: scrub flush: %w", err)
	}
	return nil
}

// fragments splits secrets into overlapping 16-byte pieces (whole secrets
// when shorter): a WAL block boundary breaks at most one piece.
func fragments(secrets [][]byte) [][]byte {
	const n = 16
	var out [][]byte
	for _, s := range secrets {
		if len(s) <= n {
			if len(s) > 0 {
				out = append(out, s)
			}
			continue
		}
		for off := 0; off < len(s); off += n / 2 {
			end := min(off+n, len(s))
			out = append(out, s[end-n:end])
			if end == len(s) {
				break
			}
		}
	}
	return out
}

// walFilesHolding returns the WAL files of dir that contain any fragment,
// and the size of the largest of them.
func walFilesHolding(dir string, frags [][]byte) ([]string, int64, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		return nil, 0, fmt.Errorf("eventlog: redact: %w", err)
	}
	slices.Sort(names)
	var dirty []string
	var size int64
	for _, name := range names {
		found, n, err := fileHolds(name, frags)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, 0, fmt.Errorf("eventlog: redact: %w", err)
		}
		if found {
			dirty = append(dirty, filepath.Base(name))
			size = max(size, n)
		}
	}
	return dirty, size, nil
}

// fileHolds searches a file for any fragment in bounded memory (chunks
// overlapping by the longest fragment) and returns its size.
func fileHolds(name string, frags [][]byte) (bool, int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return false, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, 0, err
	}
	overlap := 0
	for _, fr := range frags {
		overlap = max(overlap, len(fr)-1)
	}
	buf := make([]byte, 0, 1<<20+overlap)
	chunk := make([]byte, 1<<20)
	for {
		n, rerr := f.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for _, fr := range frags {
			if bytes.Contains(buf, fr) {
				return true, fi.Size(), nil
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return false, fi.Size(), nil
			}
			return false, 0, rerr
		}
		keep := min(overlap, len(buf))
		buf = append(buf[:0], buf[len(buf)-keep:]...)
	}
}
