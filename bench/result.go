package bench

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one run. The first fifteen fields are the contract, in
// its order; ratios, checks and metadata follow.
type Result struct {
	AppendPerS            float64 `json:"append_per_s"`
	RawPebbleSyncPerS     float64 `json:"raw_pebble_sync_per_s"`
	ShipPerS              float64 `json:"ship_per_s"`
	RawJSPublishMsgIDPerS float64 `json:"raw_js_publish_msgid_per_s"`
	E2EPerS               float64 `json:"e2e_per_s"`
	RawSourcingPerS       float64 `json:"raw_sourcing_per_s"`
	E2EP50Ms              float64 `json:"e2e_p50_ms"`
	E2EP99Ms              float64 `json:"e2e_p99_ms"`
	RawSourcingP50Ms      float64 `json:"raw_sourcing_p50_ms"`
	RawSourcingP99Ms      float64 `json:"raw_sourcing_p99_ms"`
	ReplayPerS            float64 `json:"replay_per_s"`
	RawConsumePerS        float64 `json:"raw_consume_per_s"`
	GetP50Us              float64 `json:"get_p50_us"`
	GetP99Us              float64 `json:"get_p99_us"`
	PeakRSSMB             float64 `json:"peak_rss_mb"`

	// Ratios against the targets.
	AppendRatio     float64 `json:"append_ratio"`      // append / raw_pebble_sync, target >= 1.0
	ShipRatio       float64 `json:"ship_ratio"`        // ship / raw_js_publish_msgid, target >= 0.9
	E2ERatio        float64 `json:"e2e_ratio"`         // e2e / raw_sourcing, target >= 0.8
	E2EP99ExcessMs  float64 `json:"e2e_p99_excess_ms"` // e2e_p99 - raw_sourcing_p99, target <= 2
	ReplayRatio     float64 `json:"replay_ratio"`      // replay / raw_consume, target >= 0.5
	E2ERecordsPerS  float64 `json:"e2e_records_per_s"` // records (inbox messages) of e2e_per_s
	E2ERecordsRatio float64 `json:"e2e_records_ratio"` // e2e_records_per_s / raw_sourcing_per_s
	// RawFanoutPerS is the like-for-like ceiling of e2e_records_per_s: the
	// same publishes fanned out by raw sourcing into every region's stream
	// (five copies per two-record event) and consumed in each, counted in
	// messages/s arriving in eu-central (see fanout.go).
	RawFanoutPerS  float64 `json:"raw_fanout_per_s"`
	E2EFanoutRatio float64 `json:"e2e_fanout_ratio"` // e2e_records_per_s / raw_fanout_per_s
	// RawSourcingLoadedP50Ms and P99Ms are raw_sourcing_p50/p99_ms measured
	// again while the backbone carries the latency run's rate beside them:
	// what NATS alone achieves with the machine as busy as e2e_p99_ms
	// finds it (on two cores, the fan-out to every inbox and the three
	// projectors take most of a core at 1,000 events/s).
	RawSourcingLoadedP50Ms float64 `json:"raw_sourcing_loaded_p50_ms"`
	RawSourcingLoadedP99Ms float64 `json:"raw_sourcing_loaded_p99_ms"`
	// E2EP99LoadedExcessMs is e2e_p99_ms - raw_sourcing_loaded_p99_ms.
	E2EP99LoadedExcessMs float64 `json:"e2e_p99_loaded_excess_ms"`
	Checks               []Check `json:"checks"`

	// CPUPerOpUs is the process's CPU time (all goroutines: the NATS
	// servers, every node and the load generator) per operation of each
	// throughput measurement, in µs: per append, commit, record, message or
	// event. Less sensitive than rates to other processes on the machine.
	CPUPerOpUs map[string]float64 `json:"cpu_us_per_op"`

	// Secondary figures.
	AppendP50Ms float64 `json:"append_p50_ms"`
	AppendP99Ms float64 `json:"append_p99_ms"`
	// The event log alone (eventlog.BenchAppend: one payload-sized record
	// per append, same callers), between the writer and raw Pebble.
	LogAppendPerS      float64 `json:"log_append_per_s"`
	LogAppendP50Ms     float64 `json:"log_append_p50_ms"`
	LogAppendP99Ms     float64 `json:"log_append_p99_ms"`
	ReplayMessages     uint64  `json:"replay_messages"`
	ReplayDefinition   string  `json:"replay_definition"`
	E2EDefinition      string  `json:"e2e_definition"` // "applied": in eu-central's read model
	E2ERecordsPerEvent float64 `json:"e2e_records_per_event"`
	// E2EStagesMs splits e2e_per_s's run: when (ms after the first append)
	// the last event was acknowledged, in the origin stream, in the remote
	// inbox, and applied (each the median over the repetitions).
	E2EStagesMs E2EStages `json:"e2e_stages_ms"`
	// E2ELatencyStagesMs splits e2e_p50/p99_ms: from the append's
	// acknowledgement to both records being readable in the origin stream
	// (shipped) and in the remote inbox (arrived); applied is e2e_p50/p99.
	E2ELatencyStagesMs E2ELatencyStages `json:"e2e_latency_stages_ms"`
	ShipRoute          string           `json:"ship_route"`
	GetDefinition      string           `json:"get_definition"`
	// MemoryLimitMB is the Go runtime's soft memory limit during the run
	// (runtime/debug.SetMemoryLimit, which meridian bench --memory-limit
	// or GOMEMLIMIT set), in MiB; 0: none. It bounds the garbage the Go
	// heap keeps, not the live heap nor memory outside Go.
	MemoryLimitMB float64 `json:"memory_limit_mb"`
	// GoMemoryPeakMB is the peak of the Go runtime's memory that the limit
	// governs (mapped minus released to the OS; sampled every 50 ms), and
	// GoLiveHeapPeakMB the peak live heap marked by a GC: peak_rss_mb
	// minus GoMemoryPeakMB is roughly memory outside Go (Pebble's caches
	// and memtables). GCCycles and GCCPUSeconds are the whole process's
	// (what a tighter limit costs).
	GoMemoryPeakMB   float64 `json:"go_memory_peak_mb"`
	GoLiveHeapPeakMB float64 `json:"go_live_heap_peak_mb"`
	GCCycles         uint64  `json:"gc_cycles"`
	GCCPUSeconds     float64 `json:"gc_cpu_s"`
	// PebbleBudgetMB bounds the memory Pebble may take outside the Go
	// heap, from the configurations the run opened its databases with
	// (MiB): every node's Node.PebbleBudget (its shared block cache plus
	// two memtables each of its log, read model and key store) plus the
	// largest set of the bench's own databases open at once (the append
	// step's scratch log and key store beside a raw Pebble or bare log; the
	// replay's rebuilt model). peak_rss_mb stays below memory_limit_mb +
	// pebble_budget_mb + what neither counts (code, thread stacks, C
	// allocator slack), whatever --events.
	PebbleBudgetMB float64 `json:"pebble_budget_mb"`
	// PebbleNodesPeakMB is the peak of the nodes' Pebble memory as their
	// metrics report it (memtables allocated plus blocks in the block
	// caches, summed over the three nodes; sampled every 250 ms), and
	// PebbleMemTablesPeakMB and PebbleBlockCachePeakMB the peaks of the two
	// parts (each at its own moment).
	PebbleNodesPeakMB      float64 `json:"pebble_nodes_peak_mb"`
	PebbleMemTablesPeakMB  float64 `json:"pebble_memtables_peak_mb"`
	PebbleBlockCachePeakMB float64 `json:"pebble_block_cache_peak_mb"`

	// Metadata.
	Date           string `json:"date"`
	GoVersion      string `json:"go_version"`
	OS             string `json:"os"`
	Arch           string `json:"arch"`
	Cores          int    `json:"cores"`
	GOMAXPROCS     int    `json:"gomaxprocs"`
	Events         int    `json:"events"`
	Payload        int    `json:"payload"`
	GlobalRecord   int    `json:"global_record_bytes"`   // the events' GLOBAL part as stored
	ResidentRecord int    `json:"resident_record_bytes"` // the events' sealed RESIDENT part as stored
	Reps           int    `json:"reps"`
	Callers        int    `json:"callers"`
	Rate           int    `json:"rate_per_s"`
	LatencySamples int    `json:"latency_samples"`
	Identities     int    `json:"identities"`
	// DuplicateWindowS is the duplicate window of every stream in the
	// run (benchDuplicateWindow), in seconds.
	DuplicateWindowS float64 `json:"duplicate_window_s"`
	Quick            bool    `json:"quick"`
	LoadAvgStart     float64 `json:"loadavg_start"`
	LoadAvgEnd       float64 `json:"loadavg_end"`
	DurationSeconds  float64 `json:"duration_s"`
}

// E2EStages is Result.E2EStagesMs.
type E2EStages struct {
	Appended float64 `json:"appended"`
	Shipped  float64 `json:"shipped"`
	Arrived  float64 `json:"arrived"`
	Applied  float64 `json:"applied"`
}

// E2ELatencyStages is Result.E2ELatencyStagesMs.
type E2ELatencyStages struct {
	ShippedP50 float64 `json:"shipped_p50"`
	ShippedP99 float64 `json:"shipped_p99"`
	ArrivedP50 float64 `json:"arrived_p50"`
	ArrivedP99 float64 `json:"arrived_p99"`
}

// Check is one target of the issue, evaluated on this run.
type Check struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Op     string  `json:"op"` // ">=" or "<="
	Target float64 `json:"target"`
	Met    bool    `json:"met"`
}

func ratioOf(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (r *Result) computeRatios() {
	ratio := ratioOf
	r.AppendRatio = ratio(r.AppendPerS, r.RawPebbleSyncPerS)
	r.ShipRatio = ratio(r.ShipPerS, r.RawJSPublishMsgIDPerS)
	r.E2ERatio = ratio(r.E2EPerS, r.RawSourcingPerS)
	r.E2ERecordsRatio = ratio(r.E2ERecordsPerS, r.RawSourcingPerS)
	r.E2EFanoutRatio = ratio(r.E2ERecordsPerS, r.RawFanoutPerS)
	r.E2EP99ExcessMs = r.E2EP99Ms - r.RawSourcingP99Ms
	r.E2EP99LoadedExcessMs = r.E2EP99Ms - r.RawSourcingLoadedP99Ms
	r.ReplayRatio = ratio(r.ReplayPerS, r.RawConsumePerS)
	atLeast := func(name string, v, t float64) Check { return Check{name, v, ">=", t, v >= t} }
	r.Checks = []Check{
		atLeast("append_ratio", r.AppendRatio, 1.0),
		atLeast("ship_ratio", r.ShipRatio, 0.9),
		atLeast("e2e_ratio", r.E2ERatio, 0.8),
		{"e2e_p99_excess_ms", r.E2EP99ExcessMs, "<=", 2, r.E2EP99ExcessMs <= 2},
		atLeast("replay_ratio", r.ReplayRatio, 0.5),
	}
}

// Field is one named figure.
type Field struct {
	Name  string
	Value float64
}

// Numbers returns the fifteen contract fields by JSON name, in
// order (what CI checks for presence and non-zero values).
func (r *Result) Numbers() []Field {
	return []Field{
		{"append_per_s", r.AppendPerS}, {"raw_pebble_sync_per_s", r.RawPebbleSyncPerS},
		{"ship_per_s", r.ShipPerS}, {"raw_js_publish_msgid_per_s", r.RawJSPublishMsgIDPerS},
		{"e2e_per_s", r.E2EPerS}, {"raw_sourcing_per_s", r.RawSourcingPerS},
		{"e2e_p50_ms", r.E2EP50Ms}, {"e2e_p99_ms", r.E2EP99Ms},
		{"raw_sourcing_p50_ms", r.RawSourcingP50Ms}, {"raw_sourcing_p99_ms", r.RawSourcingP99Ms},
		{"replay_per_s", r.ReplayPerS}, {"raw_consume_per_s", r.RawConsumePerS},
		{"get_p50_us", r.GetP50Us}, {"get_p99_us", r.GetP99Us},
		{"peak_rss_mb", r.PeakRSSMB},
	}
}

// WriteTable prints the result as a table: each backbone figure beside its
// raw ceiling and the ratio against the target.
func (r *Result) WriteTable(w io.Writer) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	row := func(cols ...string) { fmt.Fprintln(tw, joinTab(cols)) }
	check := func(name string) string {
		for _, c := range r.Checks {
			if c.Name == name {
				mark := "MISS"
				if c.Met {
					mark = "ok"
				}
				return fmt.Sprintf("%s %.3g (target %s %g)", mark, c.Value, c.Op, c.Target)
			}
		}
		return ""
	}
	row("measurement", "meridian", "raw ceiling", "", "ratio vs target")
	row(fmt.Sprintf("append /s (%d callers, synced)", r.Callers), rate(r.AppendPerS), rate(r.RawPebbleSyncPerS), "pebble sync", check("append_ratio"))
	row("  log alone /s (1 record per append)", rate(r.LogAppendPerS), rate(r.RawPebbleSyncPerS), "pebble sync", fmt.Sprintf("%.3g", ratioOf(r.LogAppendPerS, r.RawPebbleSyncPerS)))
	row("ship /s (log → origin stream)", rate(r.ShipPerS), rate(r.RawJSPublishMsgIDPerS), "js publish+msgid", check("ship_ratio"))
	row("e2e /s (eu-west → eu-central, "+r.E2EDefinition+")", rate(r.E2EPerS), rate(r.RawSourcingPerS), "sourcing", check("e2e_ratio"))
	row("  e2e records /s", rate(r.E2ERecordsPerS), rate(r.RawSourcingPerS), "sourcing", fmt.Sprintf("%.3g", r.E2ERecordsRatio))
	row("  e2e records /s", rate(r.E2ERecordsPerS), rate(r.RawFanoutPerS), "fan-out", fmt.Sprintf("%.3g", r.E2EFanoutRatio))
	st := r.E2EStagesMs
	row("  last event: acked/shipped/arrived/applied ms", fmt.Sprintf("%.0f/%.0f/%.0f/%.0f", st.Appended, st.Shipped, st.Arrived, st.Applied), "", "", "")
	row(fmt.Sprintf("e2e p50 ms @%d/s", r.Rate), ms(r.E2EP50Ms), ms(r.RawSourcingP50Ms), "sourcing", "")
	row(fmt.Sprintf("e2e p99 ms @%d/s", r.Rate), ms(r.E2EP99Ms), ms(r.RawSourcingP99Ms), "sourcing", check("e2e_p99_excess_ms"))
	row("  raw sourcing p50 / p99 ms beside e2e's load", fmt.Sprintf("%.2f / %.2f", r.RawSourcingLoadedP50Ms, r.RawSourcingLoadedP99Ms), "", "", fmt.Sprintf("e2e p99 excess over it %.3g", r.E2EP99LoadedExcessMs))
	ls := r.E2ELatencyStagesMs
	row("  p50 to origin stream / remote inbox ms", fmt.Sprintf("%.2f / %.2f", ls.ShippedP50, ls.ArrivedP50), "", "", "")
	row("  p99 to origin stream / remote inbox ms", fmt.Sprintf("%.2f / %.2f", ls.ShippedP99, ls.ArrivedP99), "", "", "")
	row("replay /s (rebuild from inbox)", rate(r.ReplayPerS), rate(r.RawConsumePerS), "ordered consume", check("replay_ratio"))
	row("get p50 / p99 µs", fmt.Sprintf("%.1f / %.1f", r.GetP50Us, r.GetP99Us), "", "", "")
	limit := "none"
	if r.MemoryLimitMB > 0 {
		limit = fmt.Sprintf("%.0f MiB", r.MemoryLimitMB)
	}
	row("peak RSS MB", fmt.Sprintf("%.0f", r.PeakRSSMB), "", "", "Go memory limit "+limit)
	row("  peak Go memory / live heap MB", fmt.Sprintf("%.0f / %.0f", r.GoMemoryPeakMB, r.GoLiveHeapPeakMB), "", "", fmt.Sprintf("%d GCs, %.1f s GC CPU", r.GCCycles, r.GCCPUSeconds))
	row("  Pebble budget MB (nodes' peak: memtables / cache)", fmt.Sprintf("%.0f", r.PebbleBudgetMB), "", "", fmt.Sprintf("%.0f (%.0f / %.0f)", r.PebbleNodesPeakMB, r.PebbleMemTablesPeakMB, r.PebbleBlockCachePeakMB))
	if err := tw.Flush(); err != nil {
		return err
	}
	for line := range strings.Lines(buf.String()) {
		if _, err := io.WriteString(w, strings.TrimRight(line, " \n")+"\n"); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "\n%s, %d cores (GOMAXPROCS %d), %s; events %d, payload %d B (records %d/%d B), median of %d after a warm-up; load %.2f → %.2f; %.0f s\n",
		r.Date, r.Cores, r.GOMAXPROCS, r.GoVersion, r.Events, r.Payload, r.GlobalRecord, r.ResidentRecord, r.Reps, r.LoadAvgStart, r.LoadAvgEnd, r.DurationSeconds)
	return err
}

func joinTab(cols []string) string { return strings.Join(cols, "\t") }

func rate(v float64) string { return fmt.Sprintf("%.0f", v) }
func ms(v float64) string   { return fmt.Sprintf("%.2f", v) }

// median of the repetitions' figures.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func usOf(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
