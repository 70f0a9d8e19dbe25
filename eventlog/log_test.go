package eventlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// testDeadline bounds every wait in these tests.
const testDeadline = 30 * time.Second

func openLog(t testing.TB, opts Options) *Log {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	t.Cleanup(cancel)
	return ctx
}

// within fails the test if ch does not deliver before the deadline.
func within[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testDeadline):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestOpenValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  Options
		field string
	}{
		{"no dir", Options{}, "Options.Dir"},
		{"negative batch records", Options{MaxBatchRecords: -1}, "Options.MaxBatchRecords"},
		{"negative batch bytes", Options{MaxBatchBytes: -1}, "Options.MaxBatchBytes"},
		{"negative record bytes", Options{MaxRecordBytes: -1}, "Options.MaxRecordBytes"},
		{"record above batch", Options{MaxBatchBytes: 1000, MaxRecordBytes: 1001}, "Options.MaxRecordBytes"},
		{"pipeline too deep", Options{Pipeline: 17}, "Options.Pipeline"},
		{"negative pipeline", Options{Pipeline: -1}, "Options.Pipeline"},
		{"tiny memtable", Options{MemTableSize: 1000}, "Options.MemTableSize"},
		{"batch above memtable/4", Options{MemTableSize: 8 << 20, MaxBatchBytes: 3 << 20, MaxRecordBytes: 1 << 20}, "Options.MaxBatchBytes"},
		{"commit delay too long", Options{CommitDelay: time.Second}, "Options.CommitDelay"},
		{"negative cache", Options{BlockCacheSize: -1}, "Options.BlockCacheSize"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "log")
			if tc.field != "Options.Dir" {
				tc.opts.Dir = dir
			}
			_, err := Open(tc.opts)
			var ae *ArgError
			if !errors.As(err, &ae) || ae.Field != tc.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Open(%+v) = %v, want *ArgError for %s", tc.opts, err, tc.field)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("rejected Open created %s (stat: %v)", dir, err)
			}
		})
	}
}

func TestOpenRefusesOtherDatabases(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(db *pebble.DB) error
		want  string
	}{
		{"foreign pebble db", func(db *pebble.DB) error { return db.Set([]byte("identity/1"), []byte("x"), pebble.Sync) }, "not an event log"},
		{"newer format", func(db *pebble.DB) error { return db.Set(metaVersion, putUint64(formatVersion+1), pebble.Sync) }, "unsupported format version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(db); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestAppendRejectsBadInput(t *testing.T) {
	l := openLog(t, Options{MaxBatchRecords: 3, MaxBatchBytes: 100, MaxRecordBytes: 40})
	ctx := ctxT(t)
	big := make([]byte, 41)
	rec := make([]byte, 40)
	for _, tc := range []struct {
		name  string
		recs  [][]byte
		field string
	}{
		{"no records", nil, "recs"},
		{"too many records", [][]byte{{1}, {2}, {3}, {4}}, "recs"},
		{"record too large", [][]byte{{1}, big}, "recs[1]"},
		{"batch too large", [][]byte{rec, rec, rec}, "recs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Append(ctx, tc.recs...)
			var ae *ArgError
			if !errors.As(err, &ae) || ae.Field != tc.field {
				t.Fatalf("Append = %v, want *ArgError for %s", err, tc.field)
			}
			if l.LastSeq() != 0 {
				t.Fatalf("rejected append changed LastSeq to %d", l.LastSeq())
			}
		})
	}
	if _, err := l.Read(1, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("Read(max=0) = %v, want ErrInvalid", err)
	}
	if err := l.SetCheckpoint("", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetCheckpoint(\"\") = %v, want ErrInvalid", err)
	}
	if err := l.SetCheckpoint(strings.Repeat("x", maxCheckpointName+1), 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetCheckpoint(long name) = %v, want ErrInvalid", err)
	}
	if err := l.SetCheckpoint("bad\xff", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetCheckpoint(non-UTF-8) = %v, want ErrInvalid", err)
	}
	if err := l.SetSequenceFloor(1 << 63); !errors.Is(err, ErrInvalid) || l.Metrics().SequenceFloor != 0 {
		t.Errorf("SetSequenceFloor(2^63) = %v, floor %d; want ErrInvalid, 0", err, l.Metrics().SequenceFloor)
	}
	if err := l.Trim(2); !errors.Is(err, ErrInvalid) {
		t.Errorf("Trim beyond LastSeq+1 = %v, want ErrInvalid", err)
	}
}

func TestAppendAndRead(t *testing.T) {
	l := openLog(t, Options{})
	ctx := ctxT(t)
	if l.FirstSeq() != 1 || l.LastSeq() != 0 {
		t.Fatalf("new log: first=%d last=%d, want 1, 0", l.FirstSeq(), l.LastSeq())
	}
	for i, recs := range [][]string{{"a"}, {"b", "c", "d"}, {""}, {"e"}} {
		var bs [][]byte
		for _, r := range recs {
			bs = append(bs, []byte(r))
		}
		first, err := l.Append(ctx, bs...)
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if want := l.LastSeq() - uint64(len(recs)) + 1; first != want {
			t.Fatalf("append %d: first=%d, want %d", i, first, want)
		}
	}
	got, err := l.Read(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "b", "c", "d", "", "e"}
	if len(got) != len(want) {
		t.Fatalf("Read returned %d records, want %d", len(got), len(want))
	}
	for i, r := range got {
		if r.Seq != uint64(i+1) || string(r.Data) != want[i] {
			t.Errorf("record %d = {%d %q}, want {%d %q}", i, r.Seq, r.Data, i+1, want[i])
		}
	}
	for _, tc := range []struct {
		from      uint64
		max       int
		wantFirst uint64
		wantN     int
	}{{1, 2, 1, 2}, {3, 100, 3, 4}, {6, 1, 6, 1}, {7, 10, 0, 0}, {1000, 10, 0, 0}} {
		got, err := l.Read(tc.from, tc.max)
		if err != nil || len(got) != tc.wantN || (tc.wantN > 0 && got[0].Seq != tc.wantFirst) {
			t.Errorf("Read(%d, %d) = %d records from %v, %v; want %d from %d", tc.from, tc.max, len(got), got, err, tc.wantN, tc.wantFirst)
		}
	}
	m := l.Metrics()
	if m.Appends != 4 || m.Records != 6 || m.Bytes != 5 || m.FirstSeq != 1 || m.LastSeq != 6 || m.Fsyncs == 0 {
		t.Errorf("Metrics = %+v", m)
	}
}

func TestStamp(t *testing.T) {
	var mu sync.Mutex
	var seen []uint64
	l := openLog(t, Options{Stamp: func(seq uint64, rec []byte) []byte {
		if string(rec) == "boom" {
			panic("stamp refused")
		}
		mu.Lock()
		seen = append(seen, seq)
		mu.Unlock()
		return fmt.Appendf(rec[:len(rec):len(rec)], "@%d", seq)
	}})
	ctx := ctxT(t)
	if _, err := l.Append(ctx, []byte("a"), []byte("b")); err != nil {
		t.Fatal(err)
	}
	// A panic fails the whole append, writes none of it and uses no sequence.
	_, err := l.Append(ctx, []byte("c"), []byte("boom"))
	var se *StampError
	if !errors.As(err, &se) || se.Seq != 4 {
		t.Fatalf("Append with panicking Stamp = %v, want *StampError at seq 4", err)
	}
	if first, err := l.Append(ctx, []byte("d")); err != nil || first != 3 {
		t.Fatalf("Append after panic = %d, %v; want 3", first, err)
	}
	got, err := l.Read(1, 10)
	if err != nil {
		t.Fatal(err)
	}
	var data []string
	for _, r := range got {
		data = append(data, string(r.Data))
	}
	if strings.Join(data, " ") != "a@1 b@2 d@3" {
		t.Errorf("stored %q, want a@1 b@2 d@3", data)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != "[1 2 3 3]" {
		t.Errorf("Stamp saw sequences %v, want [1 2 3 3]", seen)
	}
}

func TestWait(t *testing.T) {
	l := openLog(t, Options{})
	ctx := ctxT(t)
	if _, err := l.Append(ctx, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(ctx, 0); err != nil {
		t.Fatalf("Wait(0) with LastSeq 1 = %v", err)
	}

	// Wakes on an append.
	res := make(chan error, 1)
	go func() { res <- l.Wait(ctx, 2) }()
	for i := range 2 {
		if _, err := l.Append(ctx, fmt.Appendf(nil, "x%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := within(t, "Wait to wake", res); err != nil || l.LastSeq() <= 2 {
		t.Fatalf("Wait(2) = %v with LastSeq %d", err, l.LastSeq())
	}

	// Honours ctx.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(short, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with expiring ctx = %v, want DeadlineExceeded", err)
	}

	// Many waiters, one append.
	const waiters = 20
	all := make(chan error, waiters)
	for range waiters {
		go func() { all <- l.Wait(ctx, 3) }()
	}
	if _, err := l.Append(ctx, []byte("y")); err != nil {
		t.Fatal(err)
	}
	for range waiters {
		if err := within(t, "waiters", all); err != nil {
			t.Fatal(err)
		}
	}

	// Close wakes a waiter with ErrClosed.
	go func() { res <- l.Wait(ctx, 100) }()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "Wait to end on Close", res); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait across Close = %v, want ErrClosed", err)
	}
	if err := l.Wait(ctx, 0); err != nil {
		t.Fatalf("Wait(0) on closed log with LastSeq 4 = %v, want nil (already satisfied)", err)
	}
}

func TestCloseSemantics(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir})
	ctx := ctxT(t)
	if _, err := l.Append(ctx, []byte("a")); err != nil {
		t.Fatal(err)
	}
	r := l.NewReader(1)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, err := range map[string]error{
		"Close again":      l.Close(),
		"Append":           second(l.Append(ctx, []byte("b"))),
		"Read":             second(l.Read(1, 1)),
		"SetCheckpoint":    l.SetCheckpoint("s", 1),
		"DeleteCheckpoint": l.DeleteCheckpoint("s"),
		"Checkpoint":       second(l.Checkpoint("s")),
		"Checkpoints":      second(l.Checkpoints()),
		"Trim":             l.Trim(1),
		"SetSequenceFloor": l.SetSequenceFloor(10),
		"Wait":             l.Wait(ctx, 5),
		"open Reader":      readerErr(r),
		"new Reader":       readerErr(l.NewReader(1)),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Errorf("Reader.Close after Log.Close: %v", err)
	}
}

func second[T any](_ T, err error) error { return err }

func readerErr(r *Reader) error {
	if r.Next() {
		return errors.New("Next returned a record")
	}
	return r.Err()
}

// TestCloseDuringAppends: Close waits for in-flight appends; each either
// commits (and is on disk) or fails with ErrClosed; none hangs.
func TestCloseDuringAppends(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir})
	ctx := ctxT(t)
	const writers = 16
	type ack struct {
		seq  uint64
		data string
	}
	acks := make(chan ack, 1<<16)
	ended := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := 0; ; i++ {
				d := fmt.Sprintf("w%d-%d", w, i)
				seq, err := l.Append(ctx, []byte(d))
				if err != nil {
					ended <- err
					return
				}
				acks <- ack{seq, d}
			}
		}()
	}
	for range 200 {
		within(t, "acks before Close", acks)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close during appends: %v", err)
	}
	for range writers {
		if err := within(t, "writers to stop", ended); !errors.Is(err, ErrClosed) {
			t.Errorf("writer ended with %v, want ErrClosed", err)
		}
	}
	close(acks)
	l2 := openLog(t, Options{Dir: dir})
	n := 0
	for a := range acks {
		got, err := l2.Read(a.seq, 1)
		if err != nil || len(got) != 1 || got[0].Seq != a.seq || string(got[0].Data) != a.data {
			t.Fatalf("acknowledged %d %q: read %v, %v", a.seq, a.data, got, err)
		}
		n++
	}
	if uint64(n) > l2.LastSeq() {
		t.Fatalf("%d acks but LastSeq %d", n, l2.LastSeq())
	}
}

// gate blocks the committer inside Stamp for records named "gate", so tests
// can hold requests in the queue deterministically.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 16), release: make(chan struct{})} }

func (g *gate) stamp(_ uint64, rec []byte) []byte {
	if strings.HasPrefix(string(rec), "gate") {
		g.entered <- struct{}{}
		<-g.release
	}
	return rec
}

func TestAppendContext(t *testing.T) {
	g := newGate()
	l := openLog(t, Options{Stamp: g.stamp})
	ctx := ctxT(t)

	// A ctx already done: nothing is queued.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Append(done, []byte("never")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with cancelled ctx = %v", err)
	}

	// Hold the committer inside a batch (gate-1 is claimed), queue another
	// append and cancel it while it waits: it is withdrawn.
	claimedCtx, cancelClaimed := context.WithCancel(ctx)
	first := make(chan error, 1)
	go func() { _, err := l.Append(claimedCtx, []byte("gate-1")); first <- err }()
	within(t, "committer to claim gate-1", g.entered)
	queuedCtx, cancelQueued := context.WithCancel(ctx)
	queued := make(chan error, 1)
	go func() { _, err := l.Append(queuedCtx, []byte("withdrawn")); queued <- err }()
	cancelQueued()
	if err := within(t, "queued append to return", queued); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled queued Append = %v, want context.Canceled", err)
	}
	// Cancelling a claimed append does not stop it: it commits and says so.
	cancelClaimed()
	close(g.release)
	if err := within(t, "claimed append", first); err != nil {
		t.Fatalf("claimed Append after its ctx was cancelled = %v, want nil (it committed)", err)
	}
	if _, err := l.Append(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	got, err := l.Read(1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0].Data) != "gate-1" || string(got[1].Data) != "after" || got[1].Seq != 2 {
		t.Fatalf("log holds %v, want gate-1@1 after@2", got)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}
