package eventlog

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConcurrentAppends: 64 goroutines, single- and multi-record appends.
// Sequences are dense and unique, nothing is lost or duplicated, each
// append's records are contiguous, and Stamp sees sequences in order.
func TestConcurrentAppends(t *testing.T) {
	const (
		writers = 64
		appends = 40
	)
	var stamped []uint64 // only the committer goroutine appends to it
	l := openLog(t, Options{Stamp: func(seq uint64, rec []byte) []byte {
		stamped = append(stamped, seq)
		return fmt.Appendf(rec[:len(rec):len(rec)], "@%d", seq)
	}})
	ctx := ctxT(t)
	type span struct {
		first uint64
		recs  []string
	}
	spans := make([][]span, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				var recs [][]byte
				var names []string
				for j := range i%4 + 1 { // 1..4 records
					names = append(names, fmt.Sprintf("w%d-a%d-r%d", w, i, j))
					recs = append(recs, []byte(names[j]))
				}
				first, err := l.Append(ctx, recs...)
				if err != nil {
					t.Errorf("writer %d append %d: %v", w, i, err)
					return
				}
				spans[w] = append(spans[w], span{first, names})
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	total := 0
	bySeq := map[uint64]string{}
	for _, ss := range spans {
		for _, s := range ss {
			for j, name := range s.recs {
				seq := s.first + uint64(j)
				if prev, dup := bySeq[seq]; dup {
					t.Fatalf("seq %d given to %q and %q", seq, prev, name)
				}
				bySeq[seq] = name
				total++
			}
		}
	}
	if l.FirstSeq() != 1 || l.LastSeq() != uint64(total) {
		t.Fatalf("first=%d last=%d, want 1..%d", l.FirstSeq(), l.LastSeq(), total)
	}
	recs, err := l.Read(1, total+1)
	if err != nil || len(recs) != total {
		t.Fatalf("Read: %d records, %v; want %d", len(recs), err, total)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d: not dense", i, r.Seq)
		}
		if want := fmt.Sprintf("%s@%d", bySeq[r.Seq], r.Seq); string(r.Data) != want {
			t.Fatalf("seq %d holds %q, want %q", r.Seq, r.Data, want)
		}
	}
	if !slices.IsSorted(stamped) || len(stamped) != total || stamped[0] != 1 {
		t.Errorf("Stamp saw %d sequences, sorted=%v; want 1..%d in order", len(stamped), slices.IsSorted(stamped), total)
	}
	m := l.Metrics()
	if m.Appends != writers*appends || m.Records != uint64(total) || m.RecordBatches == 0 || m.RecordBatches > m.Appends {
		t.Errorf("Metrics = %+v", m)
	}
}

// TestGroupCommitCoalesces holds the committer inside one batch while more
// appends queue up, then checks how they are batched: together, within
// MaxBatchRecords, and never splitting one Append.
func TestGroupCommitCoalesces(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxRecords  int
		sizes       []int  // records per queued append
		wantBatches uint64 // including the gate's, which takes what fits
	}{
		{"all in one batch", 0, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 1},           // gate+10
		{"bounded by MaxBatchRecords", 4, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 3}, // gate+3, 4, 3
		{"appends are not split", 4, []int{3, 3, 3}, 3},                           // gate+3, 3, 3
		{"multi-record fill", 4, []int{2, 2, 2, 2}, 3},                            // gate+2, 2+2, 2
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate()
			l := openLog(t, Options{Stamp: g.stamp, MaxBatchRecords: tc.maxRecords})
			ctx := ctxT(t)
			errs := make(chan error, len(tc.sizes)+1)
			go func() { _, err := l.Append(ctx, []byte("gate")); errs <- err }()
			within(t, "committer to hold the gate", g.entered)
			for i, n := range tc.sizes {
				go func() {
					var recs [][]byte
					for j := range n {
						recs = append(recs, fmt.Appendf(nil, "a%d-%d", i, j))
					}
					first, err := l.Append(ctx, recs...)
					if err == nil {
						// The records of one append are contiguous.
						got, rerr := l.Read(first, n)
						for j, r := range got {
							if want := fmt.Sprintf("a%d-%d", i, j); string(r.Data) != want {
								err = fmt.Errorf("seq %d holds %q, want %q", r.Seq, r.Data, want)
							}
						}
						if rerr != nil || len(got) != n {
							err = fmt.Errorf("read back %d of %d records: %v", len(got), n, rerr)
						}
					}
					errs <- err
				}()
			}
			// Wait (deadline-bounded poll) until every append is queued.
			waitFor(t, "appends to queue", func() bool { return l.enqueued.Load() == uint64(len(tc.sizes)+1) })
			close(g.release)
			for range len(tc.sizes) + 1 {
				if err := within(t, "appends", errs); err != nil {
					t.Fatal(err)
				}
			}
			if m := l.Metrics(); m.RecordBatches != tc.wantBatches {
				t.Errorf("%d record batches, want %d; metrics %+v", m.RecordBatches, tc.wantBatches, m)
			}
		})
	}
}

// TestCheckpointsShareBatches: checkpoint writes go through the group
// commit in order with appends.
func TestCheckpointsShareBatches(t *testing.T) {
	g := newGate()
	l := openLog(t, Options{Stamp: g.stamp})
	ctx := ctxT(t)
	errs := make(chan error, 3)
	go func() { _, err := l.Append(ctx, []byte("gate")); errs <- err }()
	within(t, "gate", g.entered)
	go func() { errs <- l.SetCheckpoint("a", 1) }() // LastSeq is 0: rejected
	if err := within(t, "checkpoint beyond LastSeq", errs); err == nil || !strings.Contains(err.Error(), "beyond LastSeq") {
		t.Fatalf("SetCheckpoint beyond LastSeq = %v", err)
	}
	go func() { errs <- l.SetCheckpoint("a", 0) }()
	go func() { _, err := l.Append(ctx, []byte("x")); errs <- err }()
	waitFor(t, "append to queue", func() bool { return l.enqueued.Load() == 2 })
	waitFor(t, "checkpoint to queue", func() bool {
		l.queue.Lock()
		defer l.queue.Unlock()
		return len(l.queue.reqs) == 2
	})
	close(g.release)
	for range 3 {
		if err := within(t, "writes", errs); err != nil {
			t.Fatal(err)
		}
	}
	if m := l.Metrics(); m.Batches != 1 {
		t.Errorf("%d batches, want 1 (gate, checkpoint and append together); %+v", m.Batches, m)
	}
	if cp, err := l.Checkpoint("a"); err != nil || cp != 0 {
		t.Errorf("Checkpoint(a) = %d, %v", cp, err)
	}
}

// The commit delay grows with the callers expected back, within bounds.
func TestCommitDelayFor(t *testing.T) {
	d := 100 * time.Microsecond
	for _, tc := range []struct {
		woke uint64
		want time.Duration
	}{
		{0, d}, {1, d}, {2, d}, {8, d}, {9, 2 * d}, {64, 8 * d}, {80, 10 * d}, {1000, 10 * d},
	} {
		if got := commitDelayFor(d, tc.woke); got != tc.want {
			t.Errorf("commitDelayFor(%s, %d) = %s, want %s", d, tc.woke, got, tc.want)
		}
	}
}
