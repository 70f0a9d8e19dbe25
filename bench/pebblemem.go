package bench

import (
	"sync"
	"time"

	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/projector"
)

// pebbleSampleEvery is how often the nodes' Pebble memory is sampled
// (pebble.DB.Metrics walks the LSM's levels, so not as often as the Go
// memory).
const pebbleSampleEvery = 250 * time.Millisecond

// pebbleSampler records the peaks of the nodes' Pebble memory (memtables
// and block caches, from their metrics) while a run goes on.
type pebbleSampler struct {
	c    *cluster.Cluster
	quit chan struct{}
	done chan struct{}
	once sync.Once

	mu                           sync.Mutex
	total, memTables, blockCache int64
}

func startPebbleSampler(c *cluster.Cluster, every time.Duration) *pebbleSampler {
	s := &pebbleSampler{c: c, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.quit:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// now is the nodes' Pebble memory now: memtables and blocks cached.
func (s *pebbleSampler) now() (memTables, blockCache int64) {
	for _, r := range cluster.Regions {
		if n := s.c.Node(r); n != nil {
			m := n.PebbleMemory()
			memTables += int64(m.MemTables)
			blockCache += m.BlockCache
		}
	}
	return memTables, blockCache
}

func (s *pebbleSampler) sample() {
	mt, bc := s.now()
	s.mu.Lock()
	s.total, s.memTables, s.blockCache = max(s.total, mt+bc), max(s.memTables, mt), max(s.blockCache, bc)
	s.mu.Unlock()
}

func (s *pebbleSampler) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}

// peaks returns the peaks in MiB.
func (s *pebbleSampler) peaks() (total, memTables, blockCache float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return mib(s.total), mib(s.memTables), mib(s.blockCache)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// pebbleBudget is Result.PebbleBudgetMB's bytes: every node's budget plus
// the largest set of the bench's own databases open at once (each step
// closes its own before the next; within the append step, the scratch
// stays open while the raw Pebble and bare-log sides take turns).
func pebbleBudget(c *cluster.Cluster) int64 {
	var nodes int64
	for _, r := range cluster.Regions {
		if n := c.Node(r); n != nil {
			nodes += n.PebbleBudget()
		}
	}
	sum := func(cache, memTables int64) int64 { return cache + memTables }
	appendStep := scratchPebbleBudget() + max(sum(eventlog.BenchRawPebbleBudget()), sum(eventlog.Options{}.PebbleBudget()))
	shipStep := scratchPebbleBudget()
	replayStep := sum(projector.RebuildConfig{}.PebbleBudget()) // measureReplay's Rebuild sets no sizes
	return nodes + max(appendStep, shipStep, replayStep)
}
