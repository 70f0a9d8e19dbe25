package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/node"
	"github.com/meridian-id/meridian/projector"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

// The two regions end to end runs between: both in zone eu, so both parts
// of every event replicate.
const (
	originRegion = region.DevEUWest
	remoteRegion = region.DevEUCentral
)

// Run runs the whole benchmark once: it starts the three-region
// deployment in a fresh temporary directory, measures, stops it and
// removes the directory.
func Run(ctx context.Context, cfg Config) (_ *Result, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	dir, err := os.MkdirTemp(cfg.TempDir, "meridian-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: temp dir: %w", err)
	}
	r := &runner{cfg: cfg, dir: dir, start: time.Now()}
	r.res = &Result{
		Date: r.start.UTC().Format(time.RFC3339), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Events: cfg.Events, Payload: cfg.Payload,
		Reps: cfg.Reps, Callers: cfg.Callers, Rate: cfg.Rate, LatencySamples: cfg.LatencySamples,
		Identities: cfg.Identities, Quick: cfg.Quick, LoadAvgStart: loadAvg(),
		DuplicateWindowS: benchDuplicateWindow.Seconds(),
		ShipRoute:        shipRouteName,
		MemoryLimitMB:    memoryLimitMB(),
	}
	defer func() {
		// Close everything even after a failure; the directory goes last.
		err = errors.Join(err, r.close(), os.RemoveAll(dir))
	}()
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	return r.res, nil
}

type runner struct {
	cfg   Config
	dir   string
	start time.Time
	res   *Result

	c        *cluster.Cluster
	jsO, jsR jetstream.JetStream            // origin (eu-west) and remote (eu-central) domains
	jsAll    map[string]jetstream.JetStream // every region's domain
	plan     *region.Plan
	wl       *workload
	e2eIDs   []string
	closers  []func() error // run in reverse order by close
}

func (r *runner) run(ctx context.Context) error {
	var step atomic.Value // the step running, for the live-heap profile
	step.Store("")
	var onLivePeak func(live uint64)
	var peakStep atomic.Value // the step of the last live-peak.heap.pprof
	if r.cfg.ProfileDir != "" {
		// A heap profile whenever the live heap passes its last profiled
		// peak by 10%: inuse is the live heap of the GC that set the peak.
		onLivePeak = func(uint64) {
			f, err := os.Create(filepath.Join(r.cfg.ProfileDir, "live-peak.heap.pprof"))
			if err == nil {
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
				peakStep.Store(step.Load())
			}
		}
	}
	mem := startGoMemorySampler(goMemorySampleEvery, onLivePeak)
	defer mem.stop()
	var peb *pebbleSampler // the nodes' Pebble memory, once they run
	defer func() {
		if peb != nil {
			peb.stop()
		}
	}()
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"start", r.setup},
		{"append", r.measureAppend},
		{"ship", r.measureShip},
		{"e2e", r.measureE2E},
		{"replay", r.measureReplay},
	}
	for _, s := range steps {
		step.Store(s.name)
		stop, err := r.startProfile(s.name)
		if err != nil {
			return err
		}
		err = s.fn(ctx)
		if err := errors.Join(err, stop()); err != nil {
			return fmt.Errorf("bench: %s: %w", s.name, err)
		}
		if peb == nil && r.c != nil {
			peb = startPebbleSampler(r.c, pebbleSampleEvery)
		}
		rss, _ := rssMB()
		peak, _ := peakRSSMB()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		var pebNow string
		if peb != nil {
			mt, bc := peb.now()
			pebNow = fmt.Sprintf(", nodes' pebble memtables %.0f MB + cache %.0f MB", mib(mt), mib(bc))
		}
		r.progress("%s done: rss %.0f MB, peak %.0f MB, go heap %.0f MB (sys %.0f MB)%s", s.name, rss, peak, float64(ms.HeapAlloc)/(1<<20), float64(ms.Sys)/(1<<20), pebNow)
	}
	rss, err := peakRSSMB()
	if err != nil {
		return err
	}
	r.res.PeakRSSMB = rss
	mem.stop()
	r.res.GoMemoryPeakMB, r.res.GoLiveHeapPeakMB = mem.peaks()
	if peb != nil {
		peb.stop()
		r.res.PebbleNodesPeakMB, r.res.PebbleMemTablesPeakMB, r.res.PebbleBlockCachePeakMB = peb.peaks()
		r.res.PebbleBudgetMB = mib(pebbleBudget(r.c))
	}
	r.res.GCCycles, r.res.GCCPUSeconds = gcTotals()
	if s, ok := peakStep.Load().(string); ok {
		r.progress("live heap peak %.0f MB, during %s: live-peak.heap.pprof", r.res.GoLiveHeapPeakMB, s)
	}
	r.res.LoadAvgEnd = loadAvg()
	r.res.DurationSeconds = time.Since(r.start).Seconds()
	r.res.computeRatios()
	return nil
}

// memoryLimitMB is the Go runtime's soft memory limit in MiB, 0 if none.
func memoryLimitMB() float64 {
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		return float64(l) / (1 << 20)
	}
	return 0
}

// goMemorySampleEvery is how often the Go memory peaks are sampled.
const goMemorySampleEvery = 50 * time.Millisecond

// goMemorySampler records, from runtime/metrics (no stop-the-world), the
// peaks of the Go runtime's memory that its soft limit governs (mapped
// minus released to the OS) and of the live heap marked by the last GC.
type goMemorySampler struct {
	total, live uint64 // peaks, bytes; written by the sampler until stopped
	quit, done  chan struct{}
	once        sync.Once
}

var goMemoryMetrics = []string{"/memory/classes/total:bytes", "/memory/classes/heap/released:bytes", "/gc/heap/live:bytes"}

// onLivePeak, if set, is called (on the sampler's goroutine) each time the
// live heap exceeds 1.1 times what it was at the last call.
func startGoMemorySampler(every time.Duration, onLivePeak func(live uint64)) *goMemorySampler {
	s := &goMemorySampler{quit: make(chan struct{}), done: make(chan struct{})}
	samples := make([]metrics.Sample, len(goMemoryMetrics))
	for i, name := range goMemoryMetrics {
		samples[i].Name = name
	}
	var reported uint64
	read := func() {
		metrics.Read(samples)
		if samples[0].Value.Kind() != metrics.KindUint64 || samples[2].Value.Kind() != metrics.KindUint64 {
			return // not supported by this runtime
		}
		s.total = max(s.total, samples[0].Value.Uint64()-samples[1].Value.Uint64())
		s.live = max(s.live, samples[2].Value.Uint64())
		if onLivePeak != nil && s.live > reported+reported/10 {
			reported = s.live
			onLivePeak(s.live)
		}
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			read()
			select {
			case <-s.quit:
				read()
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling (idempotent).
func (s *goMemorySampler) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}

// peaks returns the peaks in MiB; call after stop.
func (s *goMemorySampler) peaks() (totalMB, liveMB float64) {
	return float64(s.total) / (1 << 20), float64(s.live) / (1 << 20)
}

// gcTotals returns the GC cycles and the CPU seconds the GC took (mark
// assists and background workers) since the process started.
func gcTotals() (cycles uint64, cpuSeconds float64) {
	samples := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(samples)
	if samples[0].Value.Kind() == metrics.KindUint64 {
		cycles = samples[0].Value.Uint64()
	}
	if samples[1].Value.Kind() == metrics.KindFloat64 {
		cpuSeconds = samples[1].Value.Float64()
	}
	return cycles, cpuSeconds
}

// startProfile starts a CPU profile of one step in Config.ProfileDir;
// stop ends it and writes a heap profile beside it.
func (r *runner) startProfile(step string) (stop func() error, err error) {
	if r.cfg.ProfileDir == "" {
		return func() error { return nil }, nil
	}
	cpu, err := os.Create(filepath.Join(r.cfg.ProfileDir, step+".cpu.pprof"))
	if err != nil {
		return nil, fmt.Errorf("bench: profile: %w", err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return nil, errors.Join(fmt.Errorf("bench: profile: %w", err), cpu.Close())
	}
	return func() error {
		pprof.StopCPUProfile()
		heap, err := os.Create(filepath.Join(r.cfg.ProfileDir, step+".heap.pprof"))
		if err != nil {
			return errors.Join(fmt.Errorf("bench: profile: %w", err), cpu.Close())
		}
		return errors.Join(pprof.Lookup("heap").WriteTo(heap, 0), heap.Close(), cpu.Close())
	}, nil
}

func (r *runner) onClose(f func() error) { r.closers = append(r.closers, f) }

func (r *runner) close() error {
	var errs []error
	for _, f := range slices.Backward(r.closers) {
		errs = append(errs, f())
	}
	r.closers = nil
	return errors.Join(errs...)
}

func (r *runner) progress(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "bench %6.1fs  %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
	}
}

func (r *runner) setup(ctx context.Context) error {
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, err := cluster.Start(startCtx, cluster.Config{Dir: filepath.Join(r.dir, "cluster")})
	if err != nil {
		return err
	}
	r.c = c
	r.onClose(c.Close)
	if r.plan, err = region.Compile(c.Policy); err != nil {
		return err
	}
	connect := func(reg string) (jetstream.JetStream, error) {
		nc, err := nats.Connect(c.Embedded.ClientURL(reg), nats.Name("meridian bench "+reg))
		if err != nil {
			return nil, fmt.Errorf("connect %s: %w", reg, err)
		}
		r.onClose(func() error { nc.Close(); return nil })
		return jetstream.New(nc)
	}
	if r.jsO, err = connect(originRegion); err != nil {
		return err
	}
	if r.jsR, err = connect(remoteRegion); err != nil {
		return err
	}
	for _, reg := range c.Policy.Regions() {
		js := r.jsO
		switch reg {
		case originRegion:
		case remoteRegion:
			js = r.jsR
		default:
			if js, err = connect(reg); err != nil {
				return err
			}
		}
		if r.jsAll == nil {
			r.jsAll = map[string]jetstream.JetStream{}
		}
		r.jsAll[reg] = js
		for _, name := range []string{region.OriginStream(reg), region.InboxStream(reg)} {
			if err := boundDuplicates(startCtx, js, name); err != nil {
				return err
			}
		}
	}
	r.progress("three regions running in %s", r.dir)
	return nil
}

// side is one measurement of an interleaved set: run returns its figures (labelled by
// labels) for one repetition; repetition 0 is the warm-up.
type side struct {
	name   string
	labels []string
	run    func(ctx context.Context, rep int) ([]float64, error)
	// ops, if set, is the number of operations a repetition did (given its
	// figures); the process's CPU time per operation is then recorded in
	// Result.CPUPerOpUs under name. Unlike rates, it hardly moves when
	// other processes share the cores.
	ops func(figs []float64) float64
}

// fixed is side.ops for a repetition of n operations.
func fixed(n int) func([]float64) float64 { return func([]float64) float64 { return float64(n) } }

// interleave runs a warm-up and cfg.Reps repetitions of each side, interleaved
// (alternating which goes first), and returns the median of each figure,
// by side.
func (r *runner) interleave(ctx context.Context, sides ...side) ([][]float64, error) {
	figs := make([][][]float64, len(sides))
	for rep := 0; rep <= r.cfg.Reps; rep++ {
		for j := range sides {
			k := j
			if rep%2 == 1 {
				k = len(sides) - 1 - j
			}
			s := sides[k]
			cpu0 := cpuTime()
			v, err := s.run(ctx, rep)
			if err != nil {
				return nil, fmt.Errorf("%s (repetition %d): %w", s.name, rep, err)
			}
			if s.ops != nil {
				v = append(v, usOf(cpuTime()-cpu0)/max(s.ops(v), 1))
			}
			var b strings.Builder
			for i, x := range v {
				label := "cpu_us_per_op"
				if i < len(s.labels) {
					label = s.labels[i]
				}
				fmt.Fprintf(&b, " %s=%.4g", label, x)
			}
			what := fmt.Sprintf("rep %d/%d", rep, r.cfg.Reps)
			if rep == 0 {
				what = "warm-up"
				figs[k] = nil
			} else {
				figs[k] = append(figs[k], v)
			}
			r.progress("%-20s %-8s%s", s.name, what, b.String())
		}
	}
	out := make([][]float64, len(sides))
	for k, s := range sides {
		n := len(s.labels)
		if s.ops != nil {
			n++
		}
		out[k] = make([]float64, n)
		for i := range out[k] {
			col := make([]float64, 0, len(figs[k]))
			for _, v := range figs[k] {
				col = append(col, v[i])
			}
			out[k][i] = median(col)
		}
		if s.ops != nil {
			if r.res.CPUPerOpUs == nil {
				r.res.CPUPerOpUs = map[string]float64{}
			}
			r.res.CPUPerOpUs[s.name] = out[k][n-1]
		}
	}
	return out, nil
}

// measureAppend: the writer's synced appends against raw Pebble synced
// one-Set commits, same callers, same record size.
func (r *runner) measureAppend(ctx context.Context) (err error) {
	s, err := openScratch(filepath.Join(r.dir, "append"), r.c, originRegion)
	if err != nil {
		return err
	}
	// Released at once, so that later steps' memory is the deployment's.
	defer func() { err = errors.Join(err, s.Close()) }()
	if r.wl, err = calibrate(ctx, s, originRegion, r.cfg.Payload); err != nil {
		return err
	}
	r.res.GlobalRecord, r.res.ResidentRecord = r.wl.globalBytes, r.wl.residentBytes
	r.res.E2ERecordsPerEvent = float64(r.wl.recordsPerEvent)
	ids, _, err := r.wl.createIdentities(ctx, s.w, r.cfg.Identities)
	if err != nil {
		return err
	}
	r.progress("events padded to records of %d (GLOBAL) and %d (RESIDENT) bytes; %d identities", r.wl.globalBytes, r.wl.residentBytes, len(ids))
	n := r.cfg.Events
	m, err := r.interleave(ctx,
		side{"append", []string{"per_s", "p50_ms", "p99_ms"}, func(ctx context.Context, _ int) ([]float64, error) {
			run, err := runAppends(ctx, s.w, r.cfg.Callers, n, func(i int) *meridianv1.Event { return r.wl.update(ids[i%len(ids)]) }, nil)
			return []float64{run.perSec, msOf(run.p50), msOf(run.p99)}, err
		}, fixed(n)},
		side{"raw_pebble_sync", []string{"per_s"}, func(ctx context.Context, rep int) ([]float64, error) {
			d := filepath.Join(r.dir, fmt.Sprintf("pebble-%d", rep))
			v, err := eventlog.BenchRawPebbleSync(d, r.cfg.Callers, n, r.cfg.Payload)
			return []float64{v}, errors.Join(err, os.RemoveAll(d))
		}, fixed(n)},
		// The log alone (one record per append, no writer), to split the
		// gap between the two.
		side{"log_append", []string{"per_s", "p50_ms", "p99_ms", "records_per_fsync"}, func(ctx context.Context, rep int) ([]float64, error) {
			d := filepath.Join(r.dir, fmt.Sprintf("log-%d", rep))
			res, err := eventlog.BenchAppend(d, r.cfg.Callers, n, r.cfg.Payload)
			return []float64{res.PerSec, msOf(res.P50), msOf(res.P99), res.MeanBatchRecords}, errors.Join(err, os.RemoveAll(d))
		}, fixed(n)},
	)
	if err != nil {
		return err
	}
	r.res.AppendPerS, r.res.AppendP50Ms, r.res.AppendP99Ms = m[0][0], m[0][1], m[0][2]
	r.res.RawPebbleSyncPerS = m[1][0]
	r.res.LogAppendPerS, r.res.LogAppendP50Ms, r.res.LogAppendP99Ms = m[2][0], m[2][1], m[2][2]
	return nil
}

// measureShip: a shipper moving a prefilled log into a stream of the
// origin region's server, against raw async publishes with a message id
// into another stream of the same server, same record size.
func (r *runner) measureShip(ctx context.Context) (err error) {
	s, err := openScratch(filepath.Join(r.dir, "ship"), r.c, originRegion)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	ids, _, err := r.wl.createIdentities(ctx, s.w, r.cfg.Identities)
	if err != nil {
		return err
	}
	for _, sc := range []struct{ name, subjects string }{
		{shipStream, region.OriginSubjects(shipRegion)},
		{publishStream, publishSubject},
	} {
		cfg, err := streamLike(r.plan, originRegion, sc.name, sc.subjects)
		if err != nil {
			return err
		}
		if _, err := createStream(ctx, r.jsO, cfg); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, deleteStream(r.jsO, cfg.Name)) }()
	}
	n := r.cfg.Events
	records := n * r.wl.recordsPerEvent
	m, err := r.interleave(ctx,
		side{"ship", []string{"per_s"}, func(ctx context.Context, _ int) ([]float64, error) {
			// The prefill is not timed: BenchShip times only shipping.
			if _, err := appendBatched(ctx, s.w, n, r.wl.batchEvents(), func(i int) *meridianv1.Event { return r.wl.update(ids[i%len(ids)]) }); err != nil {
				return nil, err
			}
			res, err := eventlog.BenchShip(ctx, eventlog.ShipperConfig{
				Log: s.log, JS: r.jsO, Stream: shipStream, Route: node.Route(shipRegion),
			})
			return []float64{res.PerSec}, err
		}, fixed(records)},
		side{"raw_js_publish_msgid", []string{"per_s"}, func(ctx context.Context, _ int) ([]float64, error) {
			v, err := eventlog.BenchRawJSPublishMsgID(ctx, r.jsO, publishSubject, records, r.cfg.Payload)
			return []float64{v}, err
		}, fixed(records)},
	)
	if err != nil {
		return err
	}
	r.res.ShipPerS, r.res.RawJSPublishMsgIDPerS = m[0][0], m[1][0]
	return nil
}

// measureE2E: eu-west → eu-central through the deployment (writer, log,
// shipper, origin stream, sourcing into the inbox, projector) against raw
// cross-domain sourcing between two streams of the same servers; in
// throughput, then at a paced rate for latency.
func (r *runner) measureE2E(ctx context.Context) (err error) {
	nO, nR := r.c.Node(originRegion), r.c.Node(remoteRegion)
	e := &e2e{w: nO.Writer(), origin: originRegion, node: nO.ID(), wl: r.wl, remote: nR.Projector(),
		originJS: r.jsO, remoteJS: r.jsR, originStream: region.OriginStream(originRegion), inboxStream: region.InboxStream(remoteRegion)}
	r.res.E2EDefinition = "applied"
	ids, last, err := r.wl.createIdentities(ctx, e.w, r.cfg.Identities)
	if err != nil {
		return err
	}
	e.ids, r.e2eIDs = ids, ids
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := e.remote.WaitApplied(wctx, e.token(last)); err != nil {
		return fmt.Errorf("identities did not replicate: %w", err)
	}
	r.progress("%d identities created in %s and applied in %s", len(ids), originRegion, remoteRegion)

	src, err := r.setupSourcing(ctx)
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, deleteStream(r.jsR, sourceInbox), deleteStream(r.jsO, sourceOrigin))
	}()
	fan, err := setupFanout(ctx, r.plan, r.c.Policy, r.c.Embedded.Domain, r.jsAll, originRegion, remoteRegion, r.cfg.Payload)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, fan.delete()) }()
	n := r.cfg.Events
	m, err := r.interleave(ctx,
		side{"e2e", []string{"per_s", "appended_ms", "shipped_ms", "arrived_ms", "applied_ms"}, func(ctx context.Context, _ int) ([]float64, error) {
			v, st, err := e.throughput(ctx, r.cfg.Callers, n)
			return []float64{v, msOf(st.appended), msOf(st.shipped), msOf(st.arrived), msOf(st.applied)}, err
		}, fixed(n)},
		side{"raw_sourcing", []string{"per_s"}, func(ctx context.Context, _ int) ([]float64, error) {
			v, err := src.throughput(ctx, n*r.wl.recordsPerEvent)
			return []float64{v}, err
		}, fixed(n * r.wl.recordsPerEvent)},
		side{"raw_fanout", []string{"per_s"}, func(ctx context.Context, _ int) ([]float64, error) {
			v, err := fan.throughput(ctx, n*r.wl.recordsPerEvent)
			return []float64{v}, err
		}, fixed(n * r.wl.recordsPerEvent)},
	)
	if err != nil {
		return err
	}
	r.res.E2EPerS, r.res.RawSourcingPerS, r.res.RawFanoutPerS = m[0][0], m[1][0], m[2][0]
	r.res.E2EStagesMs = E2EStages{Appended: m[0][1], Shipped: m[0][2], Arrived: m[0][3], Applied: m[0][4]}
	r.res.E2ERecordsPerS = r.res.E2EPerS * float64(r.wl.recordsPerEvent)

	k, rate := r.cfg.LatencySamples, r.cfg.Rate
	pct := func(lat []time.Duration, err error) ([]float64, error) {
		return []float64{msOf(percentile(lat, 0.50)), msOf(percentile(lat, 0.99))}, err
	}
	p5099 := func(lat []time.Duration) []float64 {
		return []float64{msOf(percentile(lat, 0.50)), msOf(percentile(lat, 0.99))}
	}
	m, err = r.interleave(ctx,
		side{"e2e_latency", []string{"p50_ms", "p99_ms", "shipped_p50", "shipped_p99", "arrived_p50", "arrived_p99"}, func(ctx context.Context, _ int) ([]float64, error) {
			run, err := e.latency(ctx, k, rate)
			return slices.Concat(p5099(run.applied), p5099(run.shipped), p5099(run.arrived)), err
		}, nil},
		side{"raw_sourcing_latency", []string{"p50_ms", "p99_ms"}, func(ctx context.Context, _ int) ([]float64, error) {
			return pct(src.latency(ctx, k, rate))
		}, nil},
		side{"raw_sourcing_loaded_latency", []string{"p50_ms", "p99_ms"}, func(ctx context.Context, _ int) ([]float64, error) {
			return pct(e.loadedSourcingLatency(ctx, src, k, rate))
		}, nil},
	)
	if err != nil {
		return err
	}
	r.res.E2EP50Ms, r.res.E2EP99Ms = m[0][0], m[0][1]
	r.res.E2ELatencyStagesMs = E2ELatencyStages{ShippedP50: m[0][2], ShippedP99: m[0][3], ArrivedP50: m[0][4], ArrivedP99: m[0][5]}
	r.res.RawSourcingP50Ms, r.res.RawSourcingP99Ms = m[1][0], m[1][1]
	r.res.RawSourcingLoadedP50Ms, r.res.RawSourcingLoadedP99Ms = m[2][0], m[2][1]
	return nil
}

// setupSourcing creates a stream in the origin's domain and one in the
// remote's domain that sources it as an inbox sources an origin (one
// filtered source naming the origin's domain), and waits until a message
// crosses.
func (r *runner) setupSourcing(ctx context.Context) (*sourcing, error) {
	ocfg, err := streamLike(r.plan, originRegion, sourceOrigin, sourceSubjects)
	if err != nil {
		return nil, err
	}
	if _, err := createStream(ctx, r.jsO, ocfg); err != nil {
		return nil, err
	}
	// On success the caller deletes both streams after measuring.
	icfg, err := streamLike(r.plan, remoteRegion, sourceInbox)
	if err != nil {
		return nil, err
	}
	icfg.Sources = []*jetstream.StreamSource{{
		Name:          sourceOrigin,
		FilterSubject: sourceSubjects,
		External:      &jetstream.ExternalStream{APIPrefix: region.DomainAPIPrefix(r.c.Embedded.Domain(originRegion))},
	}}
	if _, err := createStream(ctx, r.jsR, icfg); err != nil {
		return nil, errors.Join(err, deleteStream(r.jsO, sourceOrigin))
	}
	src := &sourcing{pub: r.jsO, remote: r.jsR, data: benchData(r.cfg.Payload)}
	if _, err := src.throughput(ctx, 1); err != nil {
		return nil, errors.Join(fmt.Errorf("sourcing did not start: %w", err), deleteStream(r.jsR, sourceInbox), deleteStream(r.jsO, sourceOrigin))
	}
	return src, nil
}

// measureReplay: rebuilding eu-central's read model from its inbox into a
// fresh directory against a raw ordered consumption of the same stream;
// then identity reads over the model.
func (r *runner) measureReplay(ctx context.Context) error {
	nR := r.c.Node(remoteRegion)
	zone, _ := r.c.Policy.ZoneOf(remoteRegion)
	inbox := region.InboxStream(remoteRegion)
	m, err := r.interleave(ctx,
		side{"replay", []string{"per_s", "messages"}, func(ctx context.Context, rep int) ([]float64, error) {
			d := filepath.Join(r.dir, fmt.Sprintf("replay-%d", rep))
			st, err := projector.Rebuild(ctx, projector.RebuildConfig{
				JS: r.jsR, Stream: inbox, Dir: d, Zone: zone,
				Keys: nR.Keys(), ZoneKeys: r.c.ZoneKeys(remoteRegion),
			})
			if err != nil {
				return nil, err
			}
			return []float64{st.PerSec, float64(st.Messages)}, os.RemoveAll(d)
		}, func(v []float64) float64 { return v[1] }},
		side{"raw_consume", []string{"per_s", "messages"}, func(ctx context.Context, _ int) ([]float64, error) {
			s, err := r.jsR.Stream(ctx, inbox)
			if err != nil {
				return nil, err
			}
			v, err := projector.BenchRawConsume(ctx, r.jsR, inbox)
			return []float64{v, float64(s.CachedInfo().State.Msgs)}, err
		}, func(v []float64) float64 { return v[1] }},
	)
	if err != nil {
		return err
	}
	r.res.ReplayPerS, r.res.ReplayMessages, r.res.RawConsumePerS = m[0][0], uint64(m[0][1]), m[1][0]
	r.res.ReplayDefinition = fmt.Sprintf("projector.Rebuild of %s from its first sequence into a fresh directory (messages/s)", inbox)

	g := nR.Projector()
	r.res.GetDefinition = "projector.Get, in process, on " + remoteRegion + "'s live read model"
	m, err = r.interleave(ctx, side{"get", []string{"p50_us", "p99_us"}, func(ctx context.Context, rep int) ([]float64, error) {
		lat, err := measureGets(ctx, g, r.e2eIDs, r.cfg.Gets, uint64(rep))
		return []float64{usOf(percentile(lat, 0.50)), usOf(percentile(lat, 0.99))}, err
	}, nil})
	if err != nil {
		return err
	}
	r.res.GetP50Us, r.res.GetP99Us = m[0][0], m[0][1]
	return nil
}
