package keystore

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// cache is the store's bounded cache of identities' entries: at most
// capacity entries in all, split over shards by a hash of the identity id,
// each shard evicting by CLOCK (second chance). A lookup takes no lock: it
// loads the identity's slot from the shard's index (a sync.Map), its entry,
// and sets the slot's reference bit if it is clear. An insertion (under the
// shard's mutex) into a full shard sweeps the shard's clock hand past
// referenced slots, clearing their bits, and evicts the first unreferenced
// one. A slot is inserted unreferenced, so identities seen once (a scan, a
// one-off write) leave before those looked up again.
//
// The cache only decides what to keep; what an entry holds is the store's
// business (see Store.cache). Removing an entry is always safe: the next
// lookup loads it again under the identity's stripe. A slot belongs to one
// identity for its life; an evicted or removed slot's entry is cleared,
// so a lookup that found the slot just before sees nothing rather than
// another identity's entry.
type cache struct {
	shards []cacheShard
	seed   maphash.Seed
}

// cacheShard is one shard; padded so that shards' counters do not share
// cache lines.
type cacheShard struct {
	index sync.Map // identity id -> *cacheSlot; changed only under mu

	mu    sync.Mutex
	ring  []*cacheSlot // the clock; len <= limit; nil: free
	free  []int32      // free positions in ring, reused first
	hand  int32        // the clock hand: next position the sweep looks at
	limit int32        // capacity of the shard
	neg   int          // entries of identities without keys

	hits, misses, evictions atomic.Uint64
	_                       [64]byte
}

type cacheSlot struct {
	id  string
	pos int32                 // position in ring
	e   atomic.Pointer[entry] // nil once evicted or removed
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
		c.shards[i].limit = int32(limit)
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
	v, ok := sh.index.Load(id)
	if !ok {
		return nil
	}
	sl := v.(*cacheSlot)
	e := sl.e.Load()
	if e == nil {
		return nil
	}
	if !sl.ref.Load() { // a store only when it changes: no line bouncing on hot entries
		sl.ref.Store(true)
	}
	sh.hits.Add(1)
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
	if v, ok := sh.index.Load(id); ok {
		sl := v.(*cacheSlot)
		sh.neg += negative(e) - negative(sl.e.Load())
		sl.e.Store(e)
		sl.ref.Store(true)
		return
	}
	var i int32
	switch {
	case len(sh.free) > 0:
		i = sh.free[len(sh.free)-1]
		sh.free = sh.free[:len(sh.free)-1]
	case int32(len(sh.ring)) < sh.limit:
		i = int32(len(sh.ring))
		sh.ring = append(sh.ring, nil)
	default:
		// Full, and every position holds a slot (free is empty): one turn
		// clears every bit, so the sweep ends within two.
		for {
			sl := sh.ring[sh.hand]
			if !sl.ref.Load() {
				break
			}
			sl.ref.Store(false)
			sh.hand = (sh.hand + 1) % int32(len(sh.ring))
		}
		i = sh.hand
		sh.hand = (sh.hand + 1) % int32(len(sh.ring))
		sh.drop(sh.ring[i])
		sh.evictions.Add(1)
	}
	sl := &cacheSlot{id: id, pos: i}
	sl.e.Store(e)
	sh.ring[i] = sl
	sh.neg += negative(e)
	sh.index.Store(id, sl)
}

// drop takes sl out of the index and clears it; the caller holds mu and
// reuses or frees its position.
func (sh *cacheShard) drop(sl *cacheSlot) {
	sh.index.Delete(sl.id)
	sh.neg -= negative(sl.e.Load())
	sl.e.Store(nil)
	sh.ring[sl.pos] = nil
}

// remove drops the identity's entry, if cached.
func (c *cache) remove(id string) {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	v, ok := sh.index.Load(id)
	if !ok {
		return
	}
	sl := v.(*cacheSlot)
	sh.drop(sl)
	sh.free = append(sh.free, sl.pos)
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
		sh.mu.Lock()
		st.entries += len(sh.ring) - len(sh.free)
		st.negative += sh.neg
		st.capacity += int(sh.limit)
		sh.mu.Unlock()
	}
	return st
}
