package ops

import (
	"sync"
	"time"
)

// Progress is a snapshot of a long operation, for progress bars and log
// lines.
type Progress struct {
	Op    string // "replay", "reseed log", "erase", ...
	Phase string // the step within the operation, e.g. "rebuild"
	// Done of Total units (Total 0: unknown), e.g. messages.
	Done, Total uint64
	Unit        string
	Elapsed     time.Duration // in this phase
	Rate        float64       // units per second in this phase
	// ETA is the estimated time left; negative when unknown.
	ETA  time.Duration
	Note string // free text, e.g. "2 of 3 regions applied"
	// Final is set on the last report of a phase.
	Final bool
}

// ProgressFunc receives progress reports. It is called synchronously from
// the operation's goroutine, so it must return promptly.
type ProgressFunc func(Progress)

// meter turns counts into Progress reports, throttled to one per
// interval (the final one always goes out).
type meter struct {
	fn          ProgressFunc
	op, phase   string
	unit        string
	total       uint64
	start, last time.Time
	every       time.Duration

	mu sync.Mutex // updates may come from a callback goroutine
}

const progressEvery = 100 * time.Millisecond

func newMeter(fn ProgressFunc, op, phase, unit string, total uint64) *meter {
	now := time.Now()
	return &meter{fn: fn, op: op, phase: phase, unit: unit, total: total, start: now, every: progressEvery}
}

// withEvery sets the least time between two reports (0: the default,
// 100 ms; negative: every update is reported).
func (m *meter) withEvery(every time.Duration) *meter {
	if m != nil && every != 0 {
		m.every = max(every, 0)
	}
	return m
}

// update reports done units (and a note); final forces the report out.
func (m *meter) update(done uint64, note string, final bool) {
	if m == nil || m.fn == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if !final && now.Sub(m.last) < m.every {
		return
	}
	m.last = now
	p := Progress{Op: m.op, Phase: m.phase, Done: done, Total: m.total, Unit: m.unit,
		Elapsed: now.Sub(m.start), ETA: -1, Note: note, Final: final}
	if s := p.Elapsed.Seconds(); s > 0 {
		p.Rate = float64(done) / s
	}
	if p.Total > 0 && p.Rate > 0 && done <= p.Total {
		p.ETA = time.Duration(float64(p.Total-done) / p.Rate * float64(time.Second))
	}
	m.fn(p)
}

func (m *meter) setTotal(total uint64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.total = total
	m.mu.Unlock()
}
