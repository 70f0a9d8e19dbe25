package keystore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// BenchmarkCreate creates the first key of new identities from 64
// goroutines (the writer's CurrentOrCreate for new identities; and
// CurrentOrCreateMany for 8 at once), next to raw Pebble one-Set synced
// commits from 64 goroutines in the same run.
//
//	go test ./keystore -run '^$' -bench BenchmarkCreate -benchtime 20000x
func BenchmarkCreate(b *testing.B) {
	const callers = 64
	b.Run("current_or_create", func(b *testing.B) {
		s, err := Open(Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		var next atomic.Int64
		b.ResetTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					if _, _, err := s.CurrentOrCreate(fmt.Sprintf("identity-%d", i)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "keys/s")
	})
	// Appends of 8 events of new identities each: one synced write per
	// append instead of one per identity.
	b.Run("current_or_create_many/8", func(b *testing.B) {
		s, err := Open(Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		var next atomic.Int64
		b.ResetTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				ids := make([]string, 8)
				for {
					i := next.Add(int64(len(ids)))
					if i > int64(b.N) {
						return
					}
					for j := range ids {
						ids[j] = fmt.Sprintf("identity-%d", i-int64(j))
					}
					if _, _, err := s.CurrentOrCreateMany(ids); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "keys/s")
	})
	b.Run("raw_pebble_sync", func(b *testing.B) {
		dir := b.TempDir()
		o := Options{Dir: dir}
		o.setDefaults()
		db, err := pebble.Open(dir, pebbleOptions(o))
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		val := make([]byte, valueLen)
		var next atomic.Int64
		b.ResetTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					if err := db.Set(fmt.Appendf(nil, "identity-%d", i), val, pebble.Sync); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commits/s")
	})
}

// BenchmarkCacheHit looks up keys of identities that are all in the cache
// (the writer's Current for every sealed write, the projector's Get for
// every unseal), from GOMAXPROCS goroutines; churn looks up a working set
// twice the cache's size, so that about half the lookups load from Pebble
// and evict.
//
//	go test -run '^$' -bench BenchmarkCacheHit ./keystore/
func BenchmarkCacheHit(b *testing.B) {
	setup := func(b *testing.B, cache, identities int) (*Store, []string, []string) {
		s, err := Open(Options{Dir: b.TempDir(), CacheEntries: cache})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		ids := make([]string, identities)
		for i := range ids {
			ids[i] = fmt.Sprintf("0193a6c2-0000-7000-8000-%012d", i)
		}
		keys, _, err := s.CurrentOrCreateMany(ids)
		if err != nil {
			b.Fatal(err)
		}
		kids := make([]string, len(keys))
		for i, k := range keys {
			kids[i] = k.ID
		}
		return s, ids, kids
	}
	b.Run("get", func(b *testing.B) {
		s, ids, kids := setup(b, 0, 4096)
		var seed atomic.Uint64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			for pb.Next() {
				i++
				j := i % len(ids)
				if _, err := s.Get(ids[j], kids[j]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("current", func(b *testing.B) {
		s, ids, _ := setup(b, 0, 4096)
		var seed atomic.Uint64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			for pb.Next() {
				i++
				if _, ok, err := s.Current(ids[i%len(ids)]); err != nil || !ok {
					b.Error(ok, err)
					return
				}
			}
		})
	})
	b.Run("churn", func(b *testing.B) {
		s, ids, kids := setup(b, 2048, 4096)
		var seed atomic.Uint64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			x := seed.Add(0x9E3779B97F4A7C15)
			for pb.Next() {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				j := int(x % uint64(len(ids)))
				if _, err := s.Get(ids[j], kids[j]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
