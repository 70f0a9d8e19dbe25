package keystore

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// cache is the store's bounded cache of identities' entries: at most
// capacity entries in all, split over shards by a hash of the identity id,
// each shard evicting by CLOCK (second chance). A lookup takes its shard's
// read lock and sets the entry's reference bit; an insertion into a full
// shard sweeps the shard's clock hand past referenced entries (clearing
// their bits) and evicts the first unreferenced one. An entry is inserted
// unreferenced, so identities seen once (a scan, a one-off write) leave
// before those looked up again.
//
// The cache only decides what to keep; what an entry holds is the store's
// business (see Store.cache). Removing an entry is always safe: the next
// lookup loads it again under the identity's stripe.
type cache struct {
	shards []cacheShard
	seed   maphash.Seed
}

// cacheShard is one shard; padded so that shards' locks and counters do
// not share cache lines.
type cacheShard struct {
	mu    sync.RWMutex
	index map[string]int32 // identity id -> slot
	slots []cacheSlot      // len <= capacity
	free  []int32          // slots emptied by remove, reused first
	hand  int32            // the clock hand: next slot the sweep looks at
	limit int32            // capacity of the shard
	neg   int              // entries of identities without keys

	hits, misses, evictions atomic.Uint64
	_                       [64]byte
}

type cacheSlot struct {
	id  string
	e   *entry // nil: free
	ref atomic.Bool
}

// maxCacheShards bounds the shards; minShardEntries keeps small caches in
// one shard (and every shard's clock meaningful).
const (
	maxCacheShards  = 64
	minShardEntries = 256
)

// newCache returns a cache of capacity entries (> 0).
func newCache(capacity int) *cache {
	n := maxCacheShards
	for n > 1 && capacity/n < minShardEntries {
		n /= 2
	}
	c := &cache{shards: make([]cacheShard, n), seed: maphash.MakeSeed()}
	for i := range c.shards {
		limit := capacity / n
		if i < capacity%n {
			limit++
		}
		sh := &c.shards[i]
		sh.limit = int32(limit)
		sh.index = make(map[string]int32, min(limit, 4096))
	}
	return c
}

func (c *cache) shard(id string) *cacheShard {
	if len(c.shards) == 1 {
		return &c.shards[0]
	}
	return &c.shards[maphash.String(c.seed, id)%uint64(len(c.shards))]
}

// get returns the identity's entry (nil if it is not cached), counting a
// hit if there is one. Misses are counted by the store (miss) when it loads
// an entry from Pebble, so that a lookup retried under the identity's
// stripe counts once.
func (c *cache) get(id string) *entry {
	sh := c.shard(id)
	sh.mu.RLock()
	i, ok := sh.index[id]
	var e *entry
	if ok {
		sl := &sh.slots[i]
		e = sl.e
		if !sl.ref.Load() { // a store only when it changes: no line bouncing on hot entries
			sl.ref.Store(true)
		}
	}
	sh.mu.RUnlock()
	if ok {
		sh.hits.Add(1)
	}
	return e
}

// miss counts a load from Pebble of an identity's entry that was not cached.
func (c *cache) miss(id string) { c.shard(id).misses.Add(1) }

func negative(e *entry) int {
	if e != nil && len(e.keys) == 0 {
		return 1
	}
	return 0
}

// put stores e as the identity's entry, evicting another identity's if the
// shard is full.
func (c *cache) put(id string, e *entry) {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i, ok := sh.index[id]; ok {
		sh.neg += negative(e) - negative(sh.slots[i].e)
		sh.slots[i].e = e
		sh.slots[i].ref.Store(true)
		return
	}
	var i int32
	switch {
	case len(sh.free) > 0:
		i = sh.free[len(sh.free)-1]
		sh.free = sh.free[:len(sh.free)-1]
	case int32(len(sh.slots)) < sh.limit:
		i = int32(len(sh.slots))
		sh.slots = append(sh.slots, cacheSlot{})
	default:
		// Full, and every slot holds an entry (free is empty): at most one
		// turn clears every bit, so the sweep ends within two.
		for {
			sl := &sh.slots[sh.hand]
			if !sl.ref.Load() {
				break
			}
			sl.ref.Store(false)
			sh.hand = (sh.hand + 1) % int32(len(sh.slots))
		}
		i = sh.hand
		sh.hand = (sh.hand + 1) % int32(len(sh.slots))
		delete(sh.index, sh.slots[i].id)
		sh.neg -= negative(sh.slots[i].e)
		sh.evictions.Add(1)
	}
	sl := &sh.slots[i]
	sh.neg += negative(e)
	sl.id, sl.e = id, e
	sl.ref.Store(false)
	sh.index[id] = i
}

// remove drops the identity's entry, if cached.
func (c *cache) remove(id string) {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.index[id]
	if !ok {
		return
	}
	delete(sh.index, id)
	sl := &sh.slots[i]
	sh.neg -= negative(sl.e)
	sl.id, sl.e = "", nil
	sl.ref.Store(false)
	sh.free = append(sh.free, i)
}

// cacheStats is what Metrics reports of the cache.
type cacheStats struct {
	hits, misses, evictions uint64
	entries, negative       int
	capacity                int
}

func (c *cache) stats() cacheStats {
	var st cacheStats
	for i := range c.shards {
		sh := &c.shards[i]
		st.hits += sh.hits.Load()
		st.misses += sh.misses.Load()
		st.evictions += sh.evictions.Load()
		sh.mu.RLock()
		st.entries += len(sh.index)
		st.negative += sh.neg
		st.capacity += int(sh.limit)
		sh.mu.RUnlock()
	}
	return st
}
