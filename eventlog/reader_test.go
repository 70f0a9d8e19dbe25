package eventlog

import (
	"errors"
	"fmt"
	"testing"
)

// TestReader: scans across chunk boundaries, follows the log as it grows,
// and reports trims instead of skipping.
func TestReader(t *testing.T) {
	l := openLog(t, Options{Retention: Retention{Off: true}})
	ctx := ctxT(t)
	const n = readerChunkRecords*2 + 17
	for i := 1; i <= n; i += 10 {
		var recs [][]byte
		for j := i; j < i+10 && j <= n; j++ {
			recs = append(recs, fmt.Appendf(nil, "rec-%d", j))
		}
		if _, err := l.Append(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	r := l.NewReader(0)
	defer r.Close()
	check := func(from, to uint64) {
		t.Helper()
		for seq := from; seq <= to; seq++ {
			if !r.Next() {
				t.Fatalf("Next false at %d: %v", seq, r.Err())
			}
			if rec := r.Record(); rec.Seq != seq || string(rec.Data) != fmt.Sprintf("rec-%d", seq) {
				t.Fatalf("record {%d %q}, want seq %d", rec.Seq, rec.Data, seq)
			}
		}
	}
	check(1, n)
	if r.Next() || r.Err() != nil || r.Pos() != n+1 {
		t.Fatalf("at the end: Next true or Err %v, Pos %d", r.Err(), r.Pos())
	}

	// Follow: wait for more, continue.
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx, r.Pos()-1) }()
	if _, err := l.Append(ctx, fmt.Appendf(nil, "rec-%d", n+1), fmt.Appendf(nil, "rec-%d", n+2)); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "Wait", done); err != nil {
		t.Fatal(err)
	}
	check(n+1, n+2)

	// A trim overtaking the reader is reported, not skipped.
	lag := l.NewReader(5)
	defer lag.Close()
	if !lag.Next() || lag.Record().Seq != 5 {
		t.Fatalf("lagging reader: %v", lag.Err())
	}
	if err := l.Trim(readerChunkRecords + 100); err != nil {
		t.Fatal(err)
	}
	for lag.Next() { // the buffered chunk may still be delivered
	}
	if !errors.Is(lag.Err(), ErrTrimmed) {
		t.Fatalf("lagging reader after trim: Err = %v, want ErrTrimmed", lag.Err())
	}
	var te *TrimmedError
	if _, err := l.Read(3, 1); !errors.As(err, &te) || te.From != 3 || te.First != readerChunkRecords+100 {
		t.Fatalf("Read(3) after trim = %v", err)
	}
}

// BenchmarkReader measures a sequential scan (replay speed).
func BenchmarkReader(b *testing.B) {
	l := openLog(b, Options{})
	ctx := ctxT(b)
	data := benchPayload(benchPayloadBytes)
	const n = 100_000
	batch := make([][]byte, 1000)
	for i := range batch {
		batch[i] = data
	}
	for range n / len(batch) {
		if _, err := l.Append(ctx, batch...); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(n * benchPayloadBytes)
	b.ResetTimer()
	for range b.N {
		r := l.NewReader(1)
		c := 0
		for r.Next() {
			c++
		}
		if err := r.Err(); err != nil || c != n {
			b.Fatalf("read %d: %v", c, err)
		}
		r.Close()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}
