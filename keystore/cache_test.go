package keystore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// checkCache verifies the cache's structure: every index entry names a
// slot holding that identity, every other slot is free, no shard holds
// more than its limit, the negative count is right, and the limits add up
// to the capacity.
func checkCache(t *testing.T, c *cache, capacity int) {
	t.Helper()
	total := 0
	for n := range c.shards {
		sh := &c.shards[n]
		sh.mu.Lock()
		total += int(sh.limit)
		if len(sh.ring) > int(sh.limit) {
			t.Errorf("shard %d: %d positions > limit %d", n, len(sh.ring), sh.limit)
		}
		indexed, neg := 0, 0
		sh.index.Range(func(k, v any) bool {
			indexed++
			sl := v.(*cacheSlot)
			if sl.id != k.(string) || sl.e.Load() == nil || sh.ring[sl.pos] != sl {
				t.Errorf("shard %d: index %q -> slot of %q at %d (in ring: %v, entry %v)", n, k, sl.id, sl.pos, sh.ring[sl.pos] == sl, sl.e.Load())
			}
			neg += negative(sl.e.Load())
			return true
		})
		if indexed+len(sh.free) != len(sh.ring) {
			t.Errorf("shard %d: %d indexed + %d free != %d positions", n, indexed, len(sh.free), len(sh.ring))
		}
		for _, i := range sh.free {
			if sh.ring[i] != nil {
				t.Errorf("shard %d: free position %d holds %q", n, i, sh.ring[i].id)
			}
		}
		if neg != sh.neg {
			t.Errorf("shard %d: negative count %d, counted %d", n, sh.neg, neg)
		}
		sh.mu.Unlock()
	}
	if total != capacity {
		t.Errorf("shard limits add up to %d; want %d", total, capacity)
	}
}

func cachedIDs(c *cache) []string {
	var ids []string
	for n := range c.shards {
		c.shards[n].index.Range(func(k, _ any) bool {
			ids = append(ids, k.(string))
			return true
		})
	}
	slices.Sort(ids)
	return ids
}

// The CLOCK policy on one shard: "+x" stores x (a key-holding entry), "-x"
// a negative entry, "?x" looks x up, "!x" removes it.
func TestCacheClock(t *testing.T) {
	key := &entry{keys: []Key{{ID: "k"}}, cur: 0}
	none := &entry{cur: -1}
	for _, tc := range []struct {
		name      string
		capacity  int
		ops       string
		want      string // cached ids, sorted
		hits      uint64
		evictions uint64
		negative  int
	}{
		{name: "fills", capacity: 3, ops: "+a +b +c", want: "a b c"},
		{name: "one slot", capacity: 1, ops: "+a +b ?a +c", want: "c", evictions: 2},
		{name: "unreferenced leave first", capacity: 2, ops: "+a +b ?a +c", want: "a c", hits: 1, evictions: 1},
		{name: "second chance used up", capacity: 2, ops: "+a +b ?a +c +d", want: "c d", hits: 1, evictions: 2},
		{name: "all referenced: the hand's next", capacity: 3, ops: "+a +b +c ?a ?b ?c +d", want: "b c d", hits: 3, evictions: 1},
		{name: "looked up again between passes: stays", capacity: 3, ops: "+a ?a +b +c +d ?a +e +f", want: "a e f", hits: 2, evictions: 3},
		{name: "not looked up again: one pass only", capacity: 3, ops: "+a ?a +b +c +d +e +f", want: "d e f", hits: 1, evictions: 3},
		{name: "replace keeps one slot", capacity: 2, ops: "+a +a -a +b", want: "a b", negative: 1},
		{name: "negative entries count and leave", capacity: 2, ops: "-a -b +b +c", want: "b c", evictions: 1},
		{name: "removed slot reused before evicting", capacity: 2, ops: "+a +b !a +c", want: "b c"},
		{name: "remove absent", capacity: 2, ops: "!a +a !a !a", want: ""},
		{name: "miss is no hit", capacity: 2, ops: "?a +a ?a ?b", want: "a", hits: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(tc.capacity)
			if len(c.shards) != 1 {
				t.Fatalf("capacity %d: %d shards; want 1", tc.capacity, len(c.shards))
			}
			for op := range strings.FieldsSeq(tc.ops) {
				id := op[1:]
				switch op[0] {
				case '+':
					c.put(id, key)
				case '-':
					c.put(id, none)
				case '?':
					if e := c.get(id); e != nil && e != key && e != none {
						t.Fatalf("get(%s) = a foreign entry", id)
					}
				case '!':
					c.remove(id)
				}
				checkCache(t, c, tc.capacity)
			}
			if got := strings.Join(cachedIDs(c), " "); got != tc.want {
				t.Errorf("cached %q; want %q", got, tc.want)
			}
			st := c.stats()
			if st.hits != tc.hits || st.evictions != tc.evictions || st.negative != tc.negative || st.capacity != tc.capacity {
				t.Errorf("stats %+v; want hits %d evictions %d negative %d capacity %d", st, tc.hits, tc.evictions, tc.negative, tc.capacity)
			}
		})
	}
}

// Sizes: shards stay at least minShardEntries each (one below that), their
// limits add up to the capacity exactly, and however many identities pass
// through, the cache never holds more (evictions account for the rest).
func TestCacheSizes(t *testing.T) {
	for _, tc := range []struct{ capacity, shards int }{
		{1, 1}, {7, 1}, {511, 1}, {512, 2}, {1000, 2}, {4096, 16}, {DefaultCacheEntries, 64}, {DefaultCacheEntries + 13, 64},
	} {
		t.Run(fmt.Sprint(tc.capacity), func(t *testing.T) {
			c := newCache(tc.capacity)
			if len(c.shards) != tc.shards {
				t.Fatalf("%d shards; want %d", len(c.shards), tc.shards)
			}
			checkCache(t, c, tc.capacity)
			e := &entry{keys: []Key{{ID: "k"}}, cur: 0}
			n := min(3*tc.capacity, 20000)
			for i := range n {
				c.put(fmt.Sprintf("id-%d", i), e)
				if i%3 == 0 {
					c.get(fmt.Sprintf("id-%d", i/2))
				}
			}
			checkCache(t, c, tc.capacity)
			st := c.stats()
			if st.entries > tc.capacity || st.entries+int(st.evictions) != n {
				t.Fatalf("%d entries, %d evictions after %d identities; want at most %d entries and the rest evicted", st.entries, st.evictions, n, tc.capacity)
			}
		})
	}
}

// Through the store: misses load from Pebble once, hits answer after, an
// identity without keys is cached as a negative entry until it gets one,
// the bound holds, and the counters say so.
func TestStoreCacheMetrics(t *testing.T) {
	for _, tc := range []struct {
		name       string
		entries    int
		identities int
	}{
		{"fits", 0, 10},
		{"evicts", 4, 10},
		{"one", 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(Options{Dir: t.TempDir(), CacheEntries: tc.entries})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			capacity := tc.entries
			if capacity == 0 {
				capacity = DefaultCacheEntries
			}
			if m := s.Metrics(); m.CacheCapacity != capacity || m.CacheEntries != 0 {
				t.Fatalf("fresh store: %+v", m)
			}
			// A lookup of an identity without keys: one miss, then a
			// negative entry answers.
			if _, ok, err := s.Current("nobody"); ok || err != nil {
				t.Fatal(ok, err)
			}
			if _, ok, err := s.Current("nobody"); ok || err != nil {
				t.Fatal(ok, err)
			}
			if m := s.Metrics(); m.CacheMisses != 1 || m.CacheHits != 1 || m.CacheNegative != 1 || m.CacheEntries != 1 {
				t.Fatalf("after two lookups of an identity without keys: %+v; want 1 miss, 1 hit, 1 negative entry", m)
			}
			k, err := s.Create("nobody")
			if err != nil {
				t.Fatal(err)
			}
			if m := s.Metrics(); m.CacheNegative != 0 || m.CacheEntries != 1 {
				t.Fatalf("after Create: %+v; want the negative entry replaced", m)
			}
			if got, ok, _ := s.Current("nobody"); !ok || !got.Equal(k) {
				t.Fatalf("Current after Create = %v %v", got, ok)
			}
			keys := map[string]Key{}
			for i := range tc.identities {
				id := fmt.Sprintf("id-%d", i)
				if keys[id], _, err = s.CurrentOrCreate(id); err != nil {
					t.Fatal(err)
				}
			}
			for round := range 2 {
				for id, k := range keys {
					if got, err := s.Get(id, k.ID); err != nil || !got.Equal(k) {
						t.Fatalf("round %d: Get(%s) = %v, %v; want %v", round, id, got, err, k)
					}
				}
			}
			m := s.Metrics()
			if m.CacheEntries > capacity {
				t.Fatalf("%d entries cached; capacity %d", m.CacheEntries, capacity)
			}
			distinct := tc.identities + 1
			if fits := distinct <= capacity; fits != (m.CacheEvictions == 0) {
				t.Fatalf("%d identities, capacity %d: %d evictions", distinct, capacity, m.CacheEvictions)
			}
			// Each CurrentOrCreate of a new identity misses once; each Get
			// hits or misses once.
			if lookups := m.CacheHits + m.CacheMisses; lookups < uint64(1+1+1+3*tc.identities) {
				t.Fatalf("%d hits + %d misses; fewer than the lookups made", m.CacheHits, m.CacheMisses)
			}
			checkCache(t, s.cache, capacity)
		})
	}
	s, err := Open(Options{Dir: t.TempDir(), CacheEntries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.CurrentOrCreate("a"); err != nil {
		t.Fatal(err)
	}
	if m := s.Metrics(); m.CacheHits+m.CacheMisses+m.CacheEvictions != 0 || m.CacheCapacity != 0 || m.Created != 1 {
		t.Fatalf("disabled cache: %+v", m)
	}
}

// A destroyed key is never served again, from the cache or otherwise: with
// the identity cached, evicted or never cached, with the cache on, tiny
// or off; and a later CurrentOrCreate makes a new key.
func TestDestroyNotServedFromCache(t *testing.T) {
	for _, entries := range []int{0, 1, -1} {
		for _, state := range []string{"cached", "evicted", "negative-then-keyed"} {
			t.Run(fmt.Sprintf("cache=%d/%s", entries, state), func(t *testing.T) {
				s, err := Open(Options{Dir: t.TempDir(), CacheEntries: entries})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				const id = "victim"
				if state == "negative-then-keyed" {
					if _, ok, _ := s.Current(id); ok {
						t.Fatal("key before Create")
					}
				}
				k, err := s.Create(id)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Put(id, "remote", make([]byte, KeySize)); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Get(id, k.ID); err != nil {
					t.Fatal(err)
				}
				if state == "evicted" {
					if _, _, err := s.CurrentOrCreate("other"); err != nil {
						t.Fatal(err)
					}
				}
				if n, err := s.Destroy(id); err != nil || n != 2 {
					t.Fatalf("Destroy = %d, %v; want 2", n, err)
				}
				for range 2 { // the second answers from a cache entry if any
					if _, err := s.Get(id, k.ID); !errors.Is(err, ErrNotFound) {
						t.Fatalf("Get of the destroyed key = %v; want ErrNotFound", err)
					}
					if _, err := s.Get(id, "remote"); !errors.Is(err, ErrNotFound) {
						t.Fatalf("Get of the destroyed remote key = %v; want ErrNotFound", err)
					}
					if got, ok, err := s.Current(id); ok || err != nil {
						t.Fatalf("Current after Destroy = %v %v %v", got, ok, err)
					}
				}
				k2, created, err := s.CurrentOrCreate(id)
				if err != nil || !created || k2.ID == k.ID || k2.Material == k.Material {
					t.Fatalf("CurrentOrCreate after Destroy = %v created=%v %v; want a new key", k2, created, err)
				}
				if keys, _, err := s.CurrentOrCreateMany([]string{id, "other"}); err != nil || !keys[0].Equal(k2) {
					t.Fatalf("CurrentOrCreateMany after Destroy = %v, %v; want the new key", keys, err)
				}
				if s.cache != nil {
					checkCache(t, s.cache, s.cache.stats().capacity)
				}
			})
		}
	}
}

// Destroy racing readers (run with -race): readers look the victim's key
// up in a loop, with other identities churning a tiny cache so that the
// victim's entry is evicted and reloaded meanwhile, and one caller keeps
// asking CurrentOrCreate for the victim. Any lookup that starts after
// Destroy returned must not see the destroyed key. No timing is assumed:
// each reader runs until it has made its lookups after Destroy returned.
func TestDestroyConcurrentWithReaders(t *testing.T) {
	const (
		rounds      = 8
		readers     = 3
		afterChecks = 50
	)
	for _, entries := range []int{0, 2, -1} {
		t.Run(fmt.Sprintf("cache=%d", entries), func(t *testing.T) {
			s, err := Open(Options{Dir: t.TempDir(), CacheEntries: entries})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for round := range rounds {
				id := fmt.Sprintf("victim-%d", round)
				k, err := s.Create(id)
				if err != nil {
					t.Fatal(err)
				}
				var destroyed atomic.Bool
				start := make(chan struct{})
				var wg sync.WaitGroup
				check := func(after bool, got Key, ok bool, err error, what string) bool {
					if err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("round %d: %s: %v", round, what, err)
						return false
					}
					if after && ok && got.ID == k.ID {
						t.Errorf("round %d: %s served the destroyed key after Destroy returned", round, what)
						return false
					}
					return true
				}
				for r := range readers {
					wg.Go(func() {
						<-start
						for i, n := 0, 0; n < afterChecks; i++ {
							after := destroyed.Load()
							got, err := s.Get(id, k.ID)
							if !check(after, got, err == nil, err, "Get") {
								return
							}
							got, ok, err := s.Current(id)
							if !check(after, got, ok, err, "Current") {
								return
							}
							// Churn: other identities through the cache.
							if _, _, err := s.Current(fmt.Sprintf("other-%d-%d", r, i%8)); err != nil {
								t.Error(err)
								return
							}
							if after {
								n++
							}
						}
					})
				}
				wg.Go(func() {
					<-start
					for n := 0; n < afterChecks; {
						after := destroyed.Load()
						got, _, err := s.CurrentOrCreate(id)
						if !check(after, got, err == nil, err, "CurrentOrCreate") {
							return
						}
						if after {
							n++
						}
					}
				})
				close(start)
				n, err := s.Destroy(id)
				destroyed.Store(true)
				if err != nil || n != 1 {
					t.Errorf("round %d: Destroy = %d, %v; want 1 key", round, n, err)
				}
				wg.Wait()
				if t.Failed() {
					return
				}
			}
			if s.cache != nil {
				checkCache(t, s.cache, s.cache.stats().capacity)
			}
		})
	}
}
