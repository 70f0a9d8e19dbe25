package conflict

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/quick"
)

func TestMakeTimestamp(t *testing.T) {
	tests := []struct {
		name     string
		phys     int64
		logical  uint16
		wantPhys int64
		wantLog  uint16
		wantStr  string
	}{
		{"zero", 0, 0, 0, 0, "0.0"},
		{"typical", 1_700_000_000_123, 7, 1_700_000_000_123, 7, "1700000000123.7"},
		{"max logical", 5, math.MaxUint16, 5, math.MaxUint16, "5.65535"},
		{"negative clamps", -3, 1, 0, 1, "0.1"},
		{"too large clamps", math.MaxInt64, 2, maxPhysical, 2, "281474976710655.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := MakeTimestamp(tt.phys, tt.logical)
			if ts.Physical() != tt.wantPhys || ts.Logical() != tt.wantLog {
				t.Fatalf("MakeTimestamp(%d,%d) = (%d,%d), want (%d,%d)", tt.phys, tt.logical, ts.Physical(), ts.Logical(), tt.wantPhys, tt.wantLog)
			}
			if ts.String() != tt.wantStr {
				t.Fatalf("String() = %q, want %q", ts.String(), tt.wantStr)
			}
		})
	}
	if !(MakeTimestamp(1, math.MaxUint16) < MakeTimestamp(2, 0)) {
		t.Fatal("packed order must be (physical, logical) order")
	}
}

// fakePhysical is a scripted physical clock: each read returns the next value.
type fakePhysical struct {
	vals []int64
	i    int
}

func (f *fakePhysical) read() int64 {
	v := f.vals[f.i%len(f.vals)]
	f.i++
	return v
}

func TestClockCases(t *testing.T) {
	t.Run("follows physical time", func(t *testing.T) {
		c := NewClock((&fakePhysical{vals: []int64{100, 200}}).read)
		if got := c.Now(); got != MakeTimestamp(100, 0) {
			t.Fatalf("got %v", got)
		}
		if got := c.Now(); got != MakeTimestamp(200, 0) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("stalled physical clock ticks logical", func(t *testing.T) {
		c := NewClock(func() int64 { return 100 })
		c.Now()
		if got := c.Now(); got != MakeTimestamp(100, 1) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("backwards physical clock keeps last", func(t *testing.T) {
		c := NewClock((&fakePhysical{vals: []int64{100, 50}}).read)
		c.Now()
		if got := c.Now(); got != MakeTimestamp(100, 1) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("remote ahead is adopted plus one", func(t *testing.T) {
		c := NewClock(func() int64 { return 100 })
		if got := c.Update(MakeTimestamp(150, 3)); got != MakeTimestamp(150, 4) {
			t.Fatalf("got %v", got)
		}
		if got := c.Now(); got != MakeTimestamp(150, 5) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("remote behind is ignored", func(t *testing.T) {
		c := NewClock(func() int64 { return 100 })
		if got := c.Update(MakeTimestamp(10, 9)); got != MakeTimestamp(100, 0) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("equal physical takes max logical plus one", func(t *testing.T) {
		c := NewClock(func() int64 { return 100 })
		c.Now() // (100,0)
		if got := c.Update(MakeTimestamp(100, 7)); got != MakeTimestamp(100, 8) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("logical overflow advances physical by one ms", func(t *testing.T) {
		c := NewClock(func() int64 { return 100 })
		if got := c.Update(MakeTimestamp(100, math.MaxUint16)); got != MakeTimestamp(101, 0) {
			t.Fatalf("got %v", got)
		}
		if got := c.Now(); got != MakeTimestamp(101, 1) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("saturates at the largest timestamp", func(t *testing.T) {
		c := NewClock(func() int64 { return 0 })
		if got := c.Update(math.MaxUint64); got != math.MaxUint64 {
			t.Fatalf("got %v", got)
		}
		if got := c.Now(); got != math.MaxUint64 {
			t.Fatalf("got %v", got)
		}
	})
}

// clockStep is one random operation against a clock: a physical clock move
// (possibly backwards) and either a Now or an Update with a remote timestamp
// near physical time.
type clockStep struct {
	PhysDelta  int16 // ms, may be negative: clocks step back
	IsUpdate   bool
	RemoteSkew int16 // remote physical relative to local physical, ms
	RemoteLog  uint16
}

// runClock drives a clock through steps and checks the HLC properties after
// every step:
//   - strictly monotonic: every result is greater than the previous one;
//   - never behind what it has seen: an Update result exceeds the remote;
//   - bounded drift: the physical part never exceeds max(largest physical
//     reading, largest remote physical seen) by more than the number of
//     logical overflows possible, ceil(steps / 65536).
func runClock(t *testing.T, start int64, steps []clockStep) bool {
	t.Helper()
	phys := start
	c := NewClock(func() int64 { return phys })
	var prev Timestamp
	maxPT, maxRemote := int64(0), int64(0)
	for i, s := range steps {
		phys += int64(s.PhysDelta)
		if phys < 0 {
			phys = 0
		}
		maxPT = max(maxPT, phys)
		var got Timestamp
		if s.IsUpdate {
			remote := MakeTimestamp(phys+int64(s.RemoteSkew), s.RemoteLog)
			maxRemote = max(maxRemote, remote.Physical())
			got = c.Update(remote)
			if got <= remote {
				t.Logf("step %d: Update(%v) = %v, not after remote", i, remote, got)
				return false
			}
		} else {
			got = c.Now()
		}
		if i > 0 && got <= prev {
			t.Logf("step %d: %v not after previous %v", i, got, prev)
			return false
		}
		bound := max(maxPT, maxRemote) + int64((i+1+logicalMask)/(logicalMask+1))
		if got.Physical() > bound {
			t.Logf("step %d: physical %d exceeds drift bound %d", i, got.Physical(), bound)
			return false
		}
		if got.Physical() < phys {
			t.Logf("step %d: physical %d behind physical clock %d", i, got.Physical(), phys)
			return false
		}
		prev = got
	}
	return true
}

func TestClockProperties(t *testing.T) {
	f := func(start uint32, steps []clockStep) bool {
		return runClock(t, int64(start)+1_700_000_000_000, steps)
	}
	if err := quick.Check(f, quickConfig(500)); err != nil {
		t.Fatal(err)
	}
}

func TestClockOverflowDrift(t *testing.T) {
	// A stalled physical clock and a burst well over 65536 events: the
	// logical counter overflows into the physical part, and the drift stays
	// within the bound runClock checks.
	steps := make([]clockStep, 3*(logicalMask+1)+10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range steps {
		steps[i].IsUpdate = r.IntN(100) == 0
		steps[i].RemoteLog = uint16(r.Uint32())
	}
	if !runClock(t, 1_700_000_000_000, steps) {
		t.Fatal("property violated")
	}
}

func TestClockConcurrent(t *testing.T) {
	c := NewClock(func() int64 { return 42 })
	const workers, per = 8, 500
	results := make([][]Timestamp, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				var ts Timestamp
				if i%3 == 0 {
					ts = c.Update(MakeTimestamp(42, uint16(i)))
				} else {
					ts = c.Now()
				}
				results[w] = append(results[w], ts)
			}
		}()
	}
	wg.Wait()
	seen := make(map[Timestamp]bool, workers*per)
	for _, rs := range results {
		for i, ts := range rs {
			if seen[ts] {
				t.Fatalf("timestamp %v issued twice", ts)
			}
			seen[ts] = true
			if i > 0 && ts <= rs[i-1] {
				t.Fatalf("per-goroutine order broken: %v after %v", ts, rs[i-1])
			}
		}
	}
}

func BenchmarkClockNow(b *testing.B) {
	c := NewClock(func() int64 { return 1 })
	for b.Loop() {
		c.Now()
	}
}
