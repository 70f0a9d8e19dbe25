package keystore

// entry is what the store knows of one identity: all its keys, as Pebble
// held them when the entry was made, and which of them is current. Entries
// are immutable (with returns a changed copy), so lock-free readers can
// use them while a writer replaces them.
type entry struct {
	keys []Key // every key of the identity held here
	cur  int   // index of the current key in keys; -1: none
}

func (e *entry) current() (Key, bool) {
	if e == nil || e.cur < 0 {
		return Key{}, false
	}
	return e.keys[e.cur], true
}

func (e *entry) get(keyID string) (Key, bool) {
	for _, k := range e.keys {
		if k.ID == keyID {
			return k, true
		}
	}
	return Key{}, false
}

// with returns a copy of e holding k (replacing the key of the same id),
// current if makeCurrent or if e has no current key.
func (e *entry) with(k Key, makeCurrent bool) *entry {
	out := &entry{keys: make([]Key, 0, len(e.keys)+1), cur: e.cur}
	i := -1
	for j, old := range e.keys {
		if old.ID == k.ID {
			i = j
			if k.aead == nil {
				k.aead = old.aead // same material (callers check)
			}
		}
		out.keys = append(out.keys, old)
	}
	if i < 0 {
		i = len(out.keys)
		out.keys = append(out.keys, k)
	} else {
		out.keys[i] = k
	}
	if makeCurrent || out.cur < 0 {
		out.cur = i
	}
	return out
}
