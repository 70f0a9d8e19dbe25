package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
)

// appendRun is one repetition of concurrent synced appends.
type appendRun struct {
	perSec   float64
	p50, p99 time.Duration
}

// runAppends appends n events made by ev from callers goroutines, each
// waiting for its acknowledgement before the next, and returns the rate of
// acknowledged appends.
func runAppends(ctx context.Context, w *writer.Writer, callers, n int, ev func(i int) *meridianv1.Event, onResult func(*writer.Result)) (appendRun, error) {
	lat := make([][]time.Duration, callers)
	errs := make([]error, callers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for c := range callers {
		wg.Go(func() {
			k := share(n, callers, c)
			ls := make([]time.Duration, 0, k)
			for j := range k {
				e := ev(c + j*callers)
				t := time.Now()
				res, err := w.Append(ctx, e)
				if err != nil {
					errs[c] = fmt.Errorf("caller %d: %w", c, err)
					cancel()
					return
				}
				ls = append(ls, time.Since(t))
				if onResult != nil {
					onResult(res)
				}
			}
			lat[c] = ls
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return appendRun{}, fmt.Errorf("bench: appends: %w", err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	return appendRun{perSec: float64(n) / elapsed.Seconds(), p50: percentile(all, 0.50), p99: percentile(all, 0.99)}, nil
}

// share is worker w's part of n operations over workers.
func share(n, workers, w int) int {
	k := n / workers
	if w < n%workers {
		k++
	}
	return k
}
