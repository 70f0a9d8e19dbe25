package claims

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Metrics is a snapshot of a Claims' counters.
type Metrics struct {
	Created     uint64 // claims taken anew
	Refreshed   uint64 // re-claims by the holder (idempotent)
	Taken       uint64 // refused: held by another identity
	Released    uint64 // claims deleted (by Release, Abort, Settle, ReleaseAll or the reaper)
	NotOwner    uint64 // releases skipped: held by another identity or changed meanwhile
	Settled     uint64 // owner registers updated
	Unavailable uint64 // operations that failed with *UnavailableError
	// ClaimLatency is the latency of Take (Claim), successful or not.
	ClaimLatency Latency
}

// Latency summarises a latency distribution from a log-scale histogram
// (buckets 2^(1/4) apart, so quantiles are within 19% of the truth).
type Latency struct {
	Count         uint64
	P50, P99, Max time.Duration
}

type stats struct {
	created, refreshed, taken, released, notOwner, settled, unavailable atomic.Uint64
	claimLatency                                                        histogram
}

func (c *Claims) Metrics() Metrics {
	s := &c.stats
	return Metrics{
		Created: s.created.Load(), Refreshed: s.refreshed.Load(), Taken: s.taken.Load(),
		Released: s.released.Load(), NotOwner: s.notOwner.Load(), Settled: s.settled.Load(),
		Unavailable: s.unavailable.Load(), ClaimLatency: s.claimLatency.snapshot(),
	}
}

// histogram counts durations in buckets of a quarter power of two of
// nanoseconds: bucket i holds [2^(i/4), 2^((i+1)/4)) ns. Lock-free.
type histogram struct {
	buckets [histBuckets]atomic.Uint64
	max     atomic.Int64
}

const histBuckets = 4 * 40 // up to 2^40 ns ≈ 18 minutes

func bucketOf(d time.Duration) int {
	if d <= 1 {
		return 0
	}
	n := uint64(d)
	exp := bits.Len64(n) - 1 // 2^exp <= n < 2^(exp+1)
	// Quarter steps inside the octave from the next two bits' worth of
	// the mantissa: compare against 2^(exp + q/4).
	q := 0
	for q < 3 && float64(n) >= math.Exp2(float64(exp)+float64(q+1)/4) {
		q++
	}
	return min(exp*4+q, histBuckets-1)
}

func (h *histogram) observe(d time.Duration) {
	h.buckets[bucketOf(d)].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (h *histogram) snapshot() Latency {
	var counts [histBuckets]uint64
	var total uint64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	l := Latency{Count: total, Max: time.Duration(h.max.Load())}
	if total == 0 {
		return l
	}
	quantile := func(q float64) time.Duration {
		rank := uint64(math.Ceil(q * float64(total)))
		var seen uint64
		for i, n := range counts {
			seen += n
			if seen >= rank {
				// The bucket's upper bound, capped by the maximum seen.
				return min(time.Duration(math.Exp2(float64(i+1)/4)), l.Max)
			}
		}
		return l.Max
	}
	l.P50, l.P99 = quantile(0.50), quantile(0.99)
	return l
}
