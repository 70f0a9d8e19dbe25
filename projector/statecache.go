package projector

import meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"

// stateCache keeps the decoded states of recently applied identities
// between batches, so that an identity active across batches is not read
// back from Pebble, unmarshalled and unsealed for every one. It is filled
// at commit, after the batch is in the model, and read by the apply
// goroutines of the next batch; the two never overlap, so it needs no
// lock. A batch takes over the states it gets from here and changes them
// in place: a batch that fails resets the cache. Past its size it drops
// entries at random (map order).
//
// The resident states it holds are plaintext in memory, like any state
// being applied; an erasure replaces the entry with the tombstone.
type stateCache struct {
	max int
	m   map[string]cachedState
}

type cachedState struct {
	global   *meridianv1.IdentityState
	resident *meridianv1.IdentityState
	// residentKnown: resident is what the store holds (possibly nil);
	// otherwise it was never loaded and must be read from the store.
	residentKnown bool
	foreign       bool // see entry.foreign
}

func newStateCache(max int) *stateCache {
	if max <= 0 {
		return nil
	}
	return &stateCache{max: max, m: make(map[string]cachedState)}
}

func (c *stateCache) get(id string) (cachedState, bool) {
	if c == nil {
		return cachedState{}, false
	}
	s, ok := c.m[id]
	return s, ok
}

// reset empties the cache.
func (c *stateCache) reset() {
	if c != nil {
		clear(c.m)
	}
}

func (c *stateCache) put(id string, s cachedState) {
	if c == nil {
		return
	}
	if _, ok := c.m[id]; !ok && len(c.m) >= c.max {
		n := c.max / 4
		for k := range c.m {
			delete(c.m, k)
			if n--; n <= 0 {
				break
			}
		}
	}
	c.m[id] = s
}
