package eventlog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const benchPayloadBytes = 256

// BenchmarkAppend measures acknowledged (fsynced) single-record appends of
// 256 random bytes with 1 and 64 concurrent writers; compare appends/s with
// BenchmarkRawPebbleSync64 from the same run. "nodelay" turns the commit
// delay off, to show what it buys.
//
//	go test -run '^$' -bench '^Benchmark(Append|RawPebbleSync64)$' -benchtime=2s ./eventlog/
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		name    string
		writers int
		opts    Options
	}{
		{"writers=1", 1, Options{}},
		{"writers=64", 64, Options{}},
		{"writers=64/nodelay", 64, Options{CommitDelay: -1}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tc.opts.Dir = b.TempDir()
			l := openLog(b, tc.opts)
			b.SetBytes(benchPayloadBytes)
			b.ResetTimer()
			res, err := runAppendBench(l, tc.writers, b.N, benchPayloadBytes)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(res.PerSec, "appends/s")
			b.ReportMetric(float64(res.P50.Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(res.P99.Nanoseconds())/1e3, "p99-µs")
			b.ReportMetric(res.MeanBatchRecords, "recs/batch")
			if res.Fsyncs > 0 {
				b.ReportMetric(float64(res.Appends)/float64(res.Fsyncs), "recs/fsync")
			}
		})
	}
}

// BenchmarkRawPebbleSync64 is the ceiling: one-Set synced Pebble commits
// from 64 goroutines, same engine settings and payload as the log.
func BenchmarkRawPebbleSync64(b *testing.B) {
	db, err := openRawPebble(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.SetBytes(benchPayloadBytes)
	b.ResetTimer()
	d, err := runRawPebbleSync(db, 64, b.N, benchPayloadBytes)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/d.Seconds(), "commits/s")
}

// TestBenchHelpers runs the exported helpers `meridian bench` uses, tiny.
func TestBenchHelpers(t *testing.T) {
	res, err := BenchAppend(t.TempDir(), 4, 40, 64)
	if err != nil || res.Appends != 40 || res.PerSec <= 0 || res.P99 < res.P50 {
		t.Fatalf("BenchAppend = %+v, %v", res, err)
	}
	if ps, err := BenchRawPebbleSync(t.TempDir(), 4, 40, 64); err != nil || ps <= 0 {
		t.Fatalf("BenchRawPebbleSync = %v, %v", ps, err)
	}
	dir := filepath.Join(t.TempDir(), "never")
	if _, err := BenchAppend(dir, 0, 1, 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("BenchAppend with 0 writers = %v, want ErrInvalid", err)
	}
	if _, err := BenchRawPebbleSync(dir, 1, -1, 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("BenchRawPebbleSync with n=-1 = %v, want ErrInvalid", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("rejected benchmark created %s", dir)
	}
}

// BenchmarkShipperLatency measures one record at a time, paced at about
// 1,000 appends/s, from the acknowledged append to the record being
// readable by an ordered consumer of the origin stream (the shipper's hop
// of the end-to-end latency, alone on a local server). It reports the
// percentiles; there is nothing to assert.
//
//	go test -run '^$' -bench '^BenchmarkShipperLatency$' -benchtime=2000x ./eventlog/
func BenchmarkShipperLatency(b *testing.B) {
	e := newShipEnv(b)
	l := openShipLog(b, filepath.Join(b.TempDir(), "log"))
	s, err := NewShipper(e.shipperConfig(l))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	base := time.Now()
	seen := make(chan int64, 1)
	cons, err := e.js.OrderedConsumer(ctx, shipTestStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(jetstream.Msg) { seen <- int64(time.Since(base)) })
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	lat := make([]time.Duration, 0, b.N)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		if _, err := l.Append(ctx, shipRec(i)); err != nil {
			b.Fatal(err)
		}
		acked := int64(time.Since(base))
		select {
		case at := <-seen:
			lat = append(lat, time.Duration(at-acked))
		case <-time.After(10 * time.Second):
			b.Fatalf("record %d not readable within 10s", i)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*9/10].Nanoseconds())/1e3, "p90-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}
