package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// paceWorkers run the paced operations, so that one slow operation (an
// fsync, a wait for replication) never holds the schedule up.
const paceWorkers = 64

// pace starts op(i) for i in [0, n) at rate per second, on a fixed
// schedule from the start (not from the previous operation's end), and
// returns when every op has returned. The first error cancels the rest.
func pace(ctx context.Context, rate, n int, op func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int, n) // never blocks the schedule
	errs := make([]error, paceWorkers)
	var wg sync.WaitGroup
	for w := range paceWorkers {
		wg.Go(func() {
			for i := range jobs {
				if ctx.Err() != nil {
					return
				}
				if err := op(ctx, i); err != nil {
					errs[w] = fmt.Errorf("op %d: %w", i, err)
					cancel()
					return
				}
			}
		})
	}
	interval := time.Second / time.Duration(rate)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	start := time.Now()
schedule:
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				break schedule
			case <-timer.C:
			}
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}
