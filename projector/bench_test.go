package projector

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/nats-io/nats.go/jetstream"
)

// benchIdentities is the workload size (PROJECTOR_BENCH_IDS overrides):
// each identity makes 10 inbox messages (created: GLOBAL + RESIDENT + key
// record; a traits update: 2; a session: 2; a role; two failed logins).
func benchIdentities() int {
	if n, err := strconv.Atoi(os.Getenv("PROJECTOR_BENCH_IDS")); err == nil && n > 0 {
		return n
	}
	return 3000
}

// benchWorld fills an inbox through the real writer.
func benchWorld(b *testing.B, n int) (*world, []string) {
	b.Helper()
	w := newWorld(b)
	ids := make([]string, n)
	var evs []*meridianv1.Event
	flush := func() {
		if len(evs) > 0 {
			if _, err := w.origin.w.Append(context.Background(), evs...); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	for i := range ids {
		id := newID()
		ids[i] = id
		evs = append(evs, created(id, fmt.Sprintf("user%d@example.org", i), fmt.Sprintf("User Number %d", i)),
			withBody(id, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Phone: ptr("+49 30 1234567"), Locale: ptr("en-GB")}}),
			session(id, "sess-"+id, testNow+3_600_000), grant(id, "member"), loginFailed(id), loginFailed(id))
		if len(evs) >= 600 {
			flush()
		}
	}
	flush()
	w.ship(w.origin)
	return w, ids
}

// BenchmarkProject reports, on one stream in one run, the raw ordered
// consume rate (the ceiling), the live projector's rate into a fresh read
// model with the region's key store already holding the keys (replay), the
// same with an empty key store (every key record stored, synced), and
// Rebuild's rate. Each iteration consumes the whole stream.
func BenchmarkProject(b *testing.B) {
	w, _ := benchWorld(b, benchIdentities())
	last := w.lastSeq()
	// Warm the key store (as a region's is, before a replay).
	warm := w.start(func(c *Config) { c.Dir = b.TempDir() })
	waitInbox(b, warm, last)
	warm.Close()

	b.Run("raw_consume", func(b *testing.B) {
		var rate float64
		cpu0 := cpuTime()
		for b.Loop() {
			r, err := BenchRawConsume(testCtx(b), w.js, w.stream)
			if err != nil {
				b.Fatal(err)
			}
			rate = r
		}
		b.ReportMetric(rate, "msgs/s")
		reportCPU(b, cpuTime()-cpu0, last)
	})
	live := func(b *testing.B, freshKeys bool) {
		var rate, perBatch float64
		var cpu time.Duration
		for b.Loop() {
			keys := w.keys
			if freshKeys {
				b.StopTimer()
				ks, err := keystore.Open(keystore.Options{Dir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				keys = ks
				b.StartTimer()
			}
			start, cpu0 := time.Now(), cpuTime()
			p := w.start(func(c *Config) { c.Dir, c.Keys, c.BatchSize = b.TempDir(), keys, DefaultBatchSize })
			waitInbox(b, p, last)
			rate = float64(last) / time.Since(start).Seconds()
			cpu += cpuTime() - cpu0
			b.StopTimer()
			m := p.Metrics()
			if m.Quarantined != 0 {
				b.Fatalf("quarantined %d", m.Quarantined)
			}
			perBatch = float64(m.Messages) / float64(m.Batches)
			p.Close()
			if freshKeys {
				keys.Close()
			}
			b.StartTimer()
		}
		b.ReportMetric(rate, "msgs/s")
		b.ReportMetric(perBatch, "msgs/batch")
		reportCPU(b, cpu, last)
	}
	b.Run("project", func(b *testing.B) { live(b, false) })
	b.Run("project_new_keys", func(b *testing.B) { live(b, true) })
	b.Run("rebuild", func(b *testing.B) {
		var rate float64
		cpu0 := cpuTime()
		for b.Loop() {
			st, err := Rebuild(testCtx(b), RebuildConfig{
				JS: w.js, Stream: w.stream, Dir: filepath.Join(b.TempDir(), "m"), Zone: testZone,
				Keys: w.keys, ZoneKeys: w.zones, Now: w.now.Load,
			})
			if err != nil {
				b.Fatal(err)
			}
			rate = st.PerSec
		}
		b.ReportMetric(rate, "msgs/s")
		reportCPU(b, cpuTime()-cpu0, last)
	})
}

// BenchmarkProjectUpdates is BenchmarkProject's raw consume and rebuild
// on benchWorldUpdates' stream (meridian bench's replay workload: each
// batch touches each identity about once).
func BenchmarkProjectUpdates(b *testing.B) {
	w := benchWorldUpdates(b, 1500, 20)
	last := w.lastSeq()
	b.Run("raw_consume", func(b *testing.B) {
		var rate float64
		cpu0 := cpuTime()
		for b.Loop() {
			r, err := BenchRawConsume(testCtx(b), w.js, w.stream)
			if err != nil {
				b.Fatal(err)
			}
			rate = r
		}
		b.ReportMetric(rate, "msgs/s")
		reportCPU(b, cpuTime()-cpu0, last)
	})
	b.Run("rebuild", func(b *testing.B) {
		var rate float64
		cpu0 := cpuTime()
		for b.Loop() {
			st, err := Rebuild(testCtx(b), RebuildConfig{
				JS: w.js, Stream: w.stream, Dir: filepath.Join(b.TempDir(), "m"), Zone: testZone,
				Keys: w.keys, ZoneKeys: w.zones, Now: w.now.Load,
			})
			if err != nil {
				b.Fatal(err)
			}
			rate = st.PerSec
		}
		b.ReportMetric(rate, "msgs/s")
		reportCPU(b, cpuTime()-cpu0, last)
	})
}

// BenchmarkRawConsume compares ways of reading the whole stream, to pick
// the projector's: an ordered consumer with a Consume callback (what pump
// and BenchRawConsume use), the same with the Messages iterator, ordered
// Fetch in batches, and a durable pull consumer acking every message.
func BenchmarkRawConsume(b *testing.B) {
	w, _ := benchWorld(b, benchIdentities())
	last := w.lastSeq()
	run := func(name string, read func(ctx context.Context) error) {
		b.Run(name, func(b *testing.B) {
			var rate float64
			for b.Loop() {
				start := time.Now()
				if err := read(testCtx(b)); err != nil {
					b.Fatal(err)
				}
				rate = float64(last) / time.Since(start).Seconds()
			}
			b.ReportMetric(rate, "msgs/s")
		})
	}
	run("ordered_consume", func(ctx context.Context) error {
		_, err := BenchRawConsume(ctx, w.js, w.stream)
		return err
	})
	run("ordered_messages", func(ctx context.Context) error {
		cons, err := w.js.OrderedConsumer(ctx, w.stream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return err
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(2 * DefaultBatchSize))
		if err != nil {
			return err
		}
		defer it.Stop()
		for n := uint64(0); n < last; n++ {
			if _, err := it.Next(jetstream.NextContext(ctx)); err != nil {
				return err
			}
		}
		return nil
	})
	run("ordered_fetch", func(ctx context.Context) error {
		cons, err := w.js.OrderedConsumer(ctx, w.stream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return err
		}
		for n := uint64(0); n < last; {
			batch, err := cons.Fetch(int(min(DefaultBatchSize, last-n)), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				return err
			}
			for range batch.Messages() {
				n++
			}
			if err := batch.Error(); err != nil {
				return err
			}
		}
		return nil
	})
	run("pull_ack_each", func(ctx context.Context) error {
		cons, err := w.js.CreateConsumer(ctx, w.stream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1})
		if err != nil {
			return err
		}
		defer w.js.DeleteConsumer(ctx, w.stream, cons.CachedInfo().Name)
		done := make(chan struct{})
		var n atomic.Uint64
		cc, err := cons.Consume(func(m jetstream.Msg) {
			m.Ack()
			if n.Add(1) == last {
				close(done)
			}
		}, jetstream.PullMaxMessages(2*DefaultBatchSize))
		if err != nil {
			return err
		}
		defer cc.Stop()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// BenchmarkGet reads random identities (GLOBAL + sealed RESIDENT state,
// unsealed and merged) and reports p50/p99 latency.
func BenchmarkGet(b *testing.B) {
	w, ids := benchWorld(b, benchIdentities())
	p := w.start()
	waitInbox(b, p, w.lastSeq())
	ctx := context.Background()
	lat := make([]time.Duration, 0, 1<<16)
	i := 0
	for b.Loop() {
		id := ids[(i*7919)%len(ids)]
		i++
		t0 := time.Now()
		if _, err := p.Get(ctx, id); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(t0))
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_us")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_us")
	}
}

// benchWorldUpdates fills an inbox as meridian bench does: n identities
// created, then rounds of TraitsUpdated (a RESIDENT and a GLOBAL trait, so
// a sealed RESIDENT part and a GLOBAL part each) over them in turn, so
// that a batch touches each identity about once.
func benchWorldUpdates(b *testing.B, n, rounds int) *world {
	b.Helper()
	w := newWorld(b)
	ids := make([]string, n)
	var evs []*meridianv1.Event
	flush := func() {
		if len(evs) > 0 {
			if _, err := w.origin.w.Append(context.Background(), evs...); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	for i := range ids {
		ids[i] = newID()
		evs = append(evs, created(ids[i], fmt.Sprintf("user%d@example.org", i), "Bench Person"))
		if len(evs) >= 200 {
			flush()
		}
	}
	flush()
	for r := range rounds {
		for i, id := range ids {
			evs = append(evs, withBody(id, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{
				Name: ptr(fmt.Sprintf("Bench Person %d/%d", r, i)), Locale: ptr("de-DE"),
			}}))
			if len(evs) >= 500 {
				flush()
			}
		}
	}
	flush()
	w.ship(w.origin)
	return w
}

// BenchmarkApplyPath runs the apply path alone (engine.process over
// messages already in memory, into a fresh read model, with the default
// state cache as Rebuild and the projector have it): the CPU cost per
// message without NATS. workload=identities is benchWorld's (an identity's
// messages together), workload=updates benchWorldUpdates' (1500
// identities, 10 rounds of updates).
func BenchmarkApplyPath(b *testing.B) {
	b.Run("workload=identities", func(b *testing.B) {
		w, _ := benchWorld(b, benchIdentities())
		benchApplyPath(b, w)
	})
	b.Run("workload=updates", func(b *testing.B) {
		benchApplyPath(b, benchWorldUpdates(b, 1500, 10))
	})
}

func benchApplyPath(b *testing.B, w *world) {
	msgs := fetchAll(b, w)
	warm := w.start(func(c *Config) { c.Dir = b.TempDir() })
	waitInbox(b, warm, w.lastSeq())
	warm.Close()
	cfg := w.config()
	if err := cfg.validate(); err != nil {
		b.Fatal(err)
	}
	var rate, cpu float64
	for b.Loop() {
		b.StopTimer()
		eng, err := openEngine(engineConfig{dir: b.TempDir(), keys: w.keys, merger: cfg.Merger, zone: testZone, zoneKeys: w.zones, now: cfg.Now, log: cfg.Logger, shards: cfg.ApplyWorkers, cache: cfg.CacheEntries})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime()
		for i := 0; i < len(msgs); i += DefaultBatchSize {
			if err := eng.process(msgs[i:min(i+DefaultBatchSize, len(msgs))]); err != nil {
				b.Fatal(err)
			}
		}
		rate = float64(len(msgs)) / time.Since(start).Seconds()
		cpu = float64((cpuTime() - cpu0).Microseconds()) / float64(len(msgs))
		b.StopTimer()
		eng.close()
		b.StartTimer()
	}
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(cpu, "cpu_us/msg")
}

// reportCPU reports process CPU time (the embedded server's share
// included) per message, over b.N passes of msgs messages.
func reportCPU(b *testing.B, cpu time.Duration, msgs uint64) {
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(uint64(b.N)*msgs), "cpu_us/msg")
}

// cpuTime is the process's user+system CPU time: on a shared machine it
// shows cost where wall-clock rates show contention.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
