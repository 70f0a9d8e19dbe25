package writer_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/eventlog"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// BenchmarkWriterAppend measures synced appends through the whole write path
// (validate, stamp, split, seal, one group-committed log append) with 1 and
// 64 concurrent callers, each waiting for its acknowledgement, next to raw
// Pebble synced one-Set commits from 64 goroutines in the same run.
//
//	go test ./writer -run '^$' -bench BenchmarkWriterAppend -benchtime 20000x
//
// event=sealed is a TraitsUpdated with resident traits (a GLOBAL and a
// sealed RESIDENT record, key already present); event=global a RoleGranted
// (one record); event=bench the event of `meridian bench`'s append step (a
// TraitsUpdated of name and locale, padded so that both records are about
// 256 bytes). cpu-us/op is the process's CPU time per append (user + system,
// the log's committer and the GC included), what `meridian bench` reports
// as cpu_us_per_op.append.
func BenchmarkWriterAppend(b *testing.B) {
	for _, kind := range []string{"sealed", "global", "bench"} {
		for _, writers := range []int{1, 64} {
			b.Run(fmt.Sprintf("event=%s/writers=%d", kind, writers), func(b *testing.B) {
				benchWriter(b, kind, writers)
			})
		}
	}
	b.Run("raw-pebble-sync/goroutines=64", func(b *testing.B) {
		cpu0 := cpuTime()
		perSec, err := eventlog.BenchRawPebbleSync(b.TempDir(), 64, b.N, 256)
		cpu := cpuTime() - cpu0
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(perSec, "commits/s")
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
	})
}

func benchWriter(b *testing.B, kind string, writers int) {
	e := newEnv(b, "eu-west")
	ctx := context.Background()
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = newIdentity()
		// Create the identity's data key outside the measurement.
		if _, err := e.w.Append(ctx, traitsUpdated(ids[i], "eu-west", &meridianv1.Traits{Name: ptr("warm")})); err != nil {
			b.Fatal(err)
		}
	}
	event := func(i int) *meridianv1.Event {
		id := ids[i%len(ids)]
		switch kind {
		case "global":
			return roleGranted(id, "eu-west", "member")
		case "bench":
			return traitsUpdated(id, "eu-west", &meridianv1.Traits{Name: &benchName, Locale: &benchLocale})
		}
		return traitsUpdated(id, "eu-west", &meridianv1.Traits{Name: ptr("Benchmark Person"), Phone: ptr("+49 30 1234567"), Locale: ptr("de-DE")})
	}
	lat := make([][]time.Duration, writers)
	b.ReportAllocs()
	b.ResetTimer()
	m0 := e.log.Metrics()
	start, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	for w := range writers {
		n := b.N / writers
		if w < b.N%writers {
			n++
		}
		wg.Go(func() {
			ls := make([]time.Duration, 0, n)
			for i := range n {
				ev := event(w*7919 + i)
				t0 := time.Now()
				if _, err := e.w.Append(ctx, ev); err != nil {
					b.Error(err)
					return
				}
				ls = append(ls, time.Since(t0))
			}
			lat[w] = ls
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "appends/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(all)), "cpu-us/op")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	if m := e.log.Metrics(); m.Fsyncs > m0.Fsyncs {
		b.ReportMetric(float64(m.Appends-m0.Appends)/float64(m.Fsyncs-m0.Fsyncs), "appends/fsync")
	}
}

// benchName and benchLocale pad event=bench's records to about 256 bytes
// (as `meridian bench` calibrates them for --payload 256).
var (
	benchName   = strings.Repeat("n", 175)
	benchLocale = strings.Repeat("l", 118)
)

// BenchmarkWriterAppendBatch is one caller appending 500 sealed events per
// Append: the writer's own CPU cost per event, with the fsync amortised.
//
//	go test ./writer -run '^$' -bench BenchmarkWriterAppendBatch -benchtime 50x
func BenchmarkWriterAppendBatch(b *testing.B) {
	const size = 500
	e := newEnv(b, "eu-west")
	ctx := context.Background()
	ids := make([]string, size)
	evs := make([]*meridianv1.Event, size)
	for i := range ids {
		ids[i] = newIdentity()
		evs[i] = traitsUpdated(ids[i], "eu-west", &meridianv1.Traits{Name: ptr("Benchmark Person"), Phone: ptr("+49 30 1234567"), Locale: ptr("de-DE")})
	}
	if _, err := e.w.Append(ctx, evs...); err != nil { // creates the keys
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := e.w.Append(ctx, evs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "events/s")
}
