package eventlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Benchmark helpers shared by the package's Go benchmarks and `meridian
// bench`, so that the log and raw Pebble are measured the same way, on the
// same engine settings and payloads, in one run.

// BenchResult is the outcome of BenchAppend.
type BenchResult struct {
	Appends          int
	Elapsed          time.Duration
	PerSec           float64 // acknowledged appends per second
	P50, P99         time.Duration
	MeanBatchRecords float64
	Fsyncs           uint64
}

// BenchAppend opens a log in dir (which should be empty) and appends n
// single-record appends of payload random bytes from writers goroutines,
// each waiting for its acknowledgement before the next.
func BenchAppend(dir string, writers, n, payload int) (BenchResult, error) {
	if err := checkBenchArgs("writers", writers, n, payload); err != nil {
		return BenchResult{}, err
	}
	l, err := Open(Options{Dir: dir})
	if err != nil {
		return BenchResult{}, err
	}
	res, err := runAppendBench(l, writers, n, payload)
	return res, errors.Join(err, l.Close())
}

func runAppendBench(l *Log, writers, n, payload int) (BenchResult, error) {
	if err := checkBenchArgs("writers", writers, n, payload); err != nil {
		return BenchResult{}, err
	}
	data := benchPayload(payload)
	lat := make([][]time.Duration, writers)
	errs := make([]error, writers)
	before := l.Metrics()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			k := share(n, writers, w)
			ls := make([]time.Duration, 0, k)
			for range k {
				t := time.Now()
				if _, err := l.Append(context.Background(), data); err != nil {
					errs[w] = err
					return
				}
				ls = append(ls, time.Since(t))
			}
			lat[w] = ls
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return BenchResult{}, err
	}
	after := l.Metrics()
	all := slices.Concat(lat...)
	slices.Sort(all)
	res := BenchResult{
		Appends: n,
		Elapsed: elapsed,
		PerSec:  float64(n) / elapsed.Seconds(),
		P50:     percentile(all, 0.50),
		P99:     percentile(all, 0.99),
		Fsyncs:  after.Fsyncs - before.Fsyncs,
	}
	if b := after.RecordBatches - before.RecordBatches; b > 0 {
		res.MeanBatchRecords = float64(after.Records-before.Records) / float64(b)
	}
	return res, nil
}

// BenchRawPebbleSync opens Pebble in dir (which should be empty) with the
// log's engine settings and commits n single-Set synced batches of payload
// random bytes from goroutines goroutines: the ceiling the log's group
// commit is compared with.
func BenchRawPebbleSync(dir string, goroutines, n, payload int) (perSec float64, err error) {
	if err := checkBenchArgs("goroutines", goroutines, n, payload); err != nil {
		return 0, err
	}
	db, err := openRawPebble(dir)
	if err != nil {
		return 0, err
	}
	d, err := runRawPebbleSync(db, goroutines, n, payload)
	if err = errors.Join(err, db.Close()); err != nil {
		return 0, err
	}
	return float64(n) / d.Seconds(), nil
}

func openRawPebble(dir string) (*pebble.DB, error) {
	o := Options{Dir: dir}
	o.setDefaults()
	return pebble.Open(dir, pebbleOptions(o, vfs.Default))
}

// BenchRawPebbleBudget is the Pebble memory budget (see
// Options.PebbleBudget) of the database BenchRawPebbleSync opens: the log's
// default settings.
func BenchRawPebbleBudget() (cache, memTables int64) { return Options{}.PebbleBudget() }

func runRawPebbleSync(db *pebble.DB, goroutines, n, payload int) (time.Duration, error) {
	if err := checkBenchArgs("goroutines", goroutines, n, payload); err != nil {
		return 0, err
	}
	data := benchPayload(payload)
	errs := make([]error, goroutines)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range goroutines {
		wg.Go(func() {
			var key [16]byte
			binary.BigEndian.PutUint64(key[:8], uint64(g))
			for i := range share(n, goroutines, g) {
				binary.BigEndian.PutUint64(key[8:], uint64(i))
				if err := db.Set(key[:], data, pebble.Sync); err != nil {
					errs[g] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

func checkBenchArgs(workersName string, workers, n, payload int) error {
	switch {
	case workers < 1:
		return argErr(workersName, fmt.Sprintf("must be >= 1, got %d", workers))
	case n < 0:
		return argErr("n", fmt.Sprintf("must be >= 0, got %d", n))
	case payload < 0:
		return argErr("payload", fmt.Sprintf("must be >= 0, got %d", payload))
	}
	return nil
}

// share is worker w's part of n operations over workers.
func share(n, workers, w int) int {
	k := n / workers
	if w < n%workers {
		k++
	}
	return k
}

// benchPayload is incompressible, like the sealed parts the writer stores.
func benchPayload(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}
