package keystore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/google/uuid"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// KeySize is the size of a data key and of a zone key (AES-256).
const KeySize = 32

// maxIDLen bounds identity and key ids; they become Pebble key prefixes.
const maxIDLen = 256

// Options configures a Store.
type Options struct {
	// Dir is the directory of the store's own Pebble database (for example
	// <data>/keys). Required. It must not be shared with another database:
	// the store shreds every file Pebble discards there.
	Dir string
	// CacheEntries bounds the in-memory cache of the identities' keys, in
	// entries: one per identity looked up, holding all its keys with their
	// AES-GCM instances built (about 1 KiB per key), or none for an
	// identity without keys here (a negative entry, a few dozen bytes, so
	// that asking again for an identity that has no key reads no disk).
	// When full, the cache evicts by CLOCK (an identity looked up again
	// since the hand last passed it stays; see cache.go), sharded by
	// identity for large sizes. Default DefaultCacheEntries; negative
	// disables the cache.
	CacheEntries int

	// MemTableSize is Pebble's memtable size for the store (default
	// DefaultMemTableSize; at least 1 MiB, below 4 GiB). Pebble allocates
	// memtables outside the Go heap and keeps up to
	// MemTableStopWritesThreshold of them.
	MemTableSize uint64
	// BlockCache, if set, is a Pebble block cache shared with other
	// databases (a node's log, read model and key store share one; Pebble
	// counts every database's memtables against it, so its owner sizes it
	// as the room for blocks plus their memtables budget, see
	// PebbleBudget). The store takes its own reference; the caller keeps
	// and releases (Unref) its own. BlockCacheSize must then be 0.
	BlockCache *pebble.Cache
	// BlockCacheSize is the room for blocks in the store's own block cache
	// when BlockCache is not set (default DefaultBlockCacheSize); the cache
	// made is BlockCacheSize plus the memtables' budget.
	BlockCacheSize int64
}

// Defaults of the store's Pebble: a key record is 34 bytes, and the cache
// of entries above answers most lookups, so both are small.
const (
	DefaultMemTableSize   = 4 << 20
	DefaultBlockCacheSize = 8 << 20
	// MemTableStopWritesThreshold is how many memtables Pebble keeps at
	// most before it stalls writes.
	MemTableStopWritesThreshold = 2
)

func (o *Options) validate() error {
	bad := func(field, rule string, args ...any) error {
		return fmt.Errorf("%w: Options.%s: %s", ErrInvalid, field, fmt.Sprintf(rule, args...))
	}
	switch {
	case o.Dir == "":
		return bad("Dir", "required")
	case o.MemTableSize != 0 && o.MemTableSize < 1<<20:
		return bad("MemTableSize", "must be 0 (default %d) or at least 1 MiB, got %d", DefaultMemTableSize, o.MemTableSize)
	case o.MemTableSize >= 4<<30:
		return bad("MemTableSize", "must be below 4 GiB, got %d", o.MemTableSize)
	case o.BlockCacheSize < 0:
		return bad("BlockCacheSize", "must not be negative, got %d", o.BlockCacheSize)
	case o.BlockCache != nil && o.BlockCacheSize != 0:
		return bad("BlockCacheSize", "must be 0 when BlockCache (a shared cache) is set, got %d", o.BlockCacheSize)
	}
	o.setDefaults()
	return nil
}

func (o *Options) setDefaults() {
	if o.CacheEntries == 0 {
		o.CacheEntries = DefaultCacheEntries
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.BlockCacheSize == 0 && o.BlockCache == nil {
		o.BlockCacheSize = DefaultBlockCacheSize
	}
}

// PebbleBudget is the memory, outside the Go heap, the store's Pebble may
// take with these options (defaults applied): cache is the room for blocks
// of its own block cache (0 when BlockCache is shared: its owner counts
// it), memTables MemTableStopWritesThreshold memtables. The store's own
// cache is made of cache + memTables, which bounds both together.
func (o Options) PebbleBudget() (cache, memTables int64) {
	o.setDefaults()
	memTables = MemTableStopWritesThreshold * int64(o.MemTableSize)
	if o.BlockCache != nil {
		return 0, memTables
	}
	return o.BlockCacheSize, memTables
}

// DefaultCacheEntries is Options.CacheEntries' default: 65,536 identities,
// about 64 MiB with one key each.
const DefaultCacheEntries = 1 << 16

// Key is one data key of an identity.
type Key struct {
	// ID names the key in Sealed.key_id and DataKey.key_id (a UUIDv7 when
	// this region made it).
	ID string
	// Material is the AES-256 key.
	Material [KeySize]byte
	// Published is true once a wrapped copy of the key is known to be in an
	// event log (for keys made here: after the writer's append of the key
	// record succeeded; keys Put from other regions always are). Until then
	// the writer emits the key record with every append that uses the key.
	Published bool

	// aead is the key's AES-GCM instance, built once for keys served from
	// the cache (key expansion and GHASH tables cost about 2 KB and a
	// microsecond per seal otherwise). Safe for concurrent use.
	aead cipher.AEAD
}

// Seal encrypts plaintext under this key for recordID (see the package
// function Seal).
func (k Key) Seal(recordID string, plaintext []byte) *meridianv1.Sealed {
	return seal(k.gcm(), k.ID, recordID, plaintext)
}

// Unseal decrypts a Sealed made under this key for recordID.
func (k Key) Unseal(s *meridianv1.Sealed, recordID string) ([]byte, error) {
	return unseal(k.gcm(), nil, s, recordID)
}

// UnsealAppend is Unseal appending the plaintext to dst, which callers
// that open many records reuse (it must not overlap the ciphertext; clear
// it after use).
func (k Key) UnsealAppend(dst []byte, s *meridianv1.Sealed, recordID string) ([]byte, error) {
	return unseal(k.gcm(), dst, s, recordID)
}

// String names the key without its material, so that logging a Key never
// leaks it.
func (k Key) String() string {
	return fmt.Sprintf("keystore.Key{ID:%s Published:%v}", k.ID, k.Published)
}

// GoString is String, for %#v.
func (k Key) GoString() string { return k.String() }

// Equal reports whether two keys are the same key in the same state.
func (k Key) Equal(o Key) bool {
	return k.ID == o.ID && k.Material == o.Material && k.Published == o.Published
}

// WithCipher returns k with its AES-GCM instance built, so that its Seal
// and Unseal calls do not build one each (keys from the store's cache have
// it already). Use it for a key made from its fields that seals or
// unseals more than once.
func (k Key) WithCipher() Key {
	if k.aead == nil {
		k.aead = newGCM(k.Material[:])
	}
	return k
}

func (k Key) gcm() cipher.AEAD {
	if k.aead != nil {
		return k.aead
	}
	return newGCM(k.Material[:])
}

// Metrics is a snapshot of the store's counters. The cache's are zero
// when the cache is disabled.
type Metrics struct {
	Created   uint64 // keys created here
	Put       uint64 // keys stored from other regions (new ones only)
	Destroyed uint64 // keys deleted by Destroy

	// CacheHits counts lookups of an identity answered from the cache
	// (negative entries included); CacheMisses counts identities loaded
	// from Pebble because the cache did not hold them.
	CacheHits, CacheMisses uint64
	// CacheEvictions counts entries evicted to make room for another
	// (not those dropped by Destroy or a failed write).
	CacheEvictions uint64
	// CacheEntries is the number of identities cached now, of which
	// CacheNegative have no key here; CacheCapacity is the bound
	// (Options.CacheEntries).
	CacheEntries, CacheNegative, CacheCapacity int
}

// Store is the key store. It is safe for concurrent use.
//
// Pebble layout, all under the identity's prefix id+"\x00" so that Destroy is
// one range deletion:
//
//	<identity>\x00c          -> id of the current key
//	<identity>\x00k<key id>  -> 1 version byte, 1 flags byte, 32 key bytes
type Store struct {
	db   *pebble.DB
	opts Options

	// stripes serialise writers of one identity (create-if-absent, destroy,
	// publish) and cache fills, so that two callers never both create a
	// first key and the cache never holds a value older than Pebble's.
	stripes [1024]sync.Mutex

	mu struct {
		sync.RWMutex
		closed bool
	}
	// closed mirrors mu.closed for cache hits, which touch no Pebble and so
	// need not hold the close lock (its cache line would bounce between
	// every core that looks keys up).
	closed atomic.Bool
	// cache maps identity -> *entry: every key of the identity, as Pebble
	// held them when the entry was made (nil when disabled). Entries are
	// made and replaced only under the identity's stripe, after the write
	// that changed Pebble, so they are never older than Pebble; Destroy
	// removes the identity's entry under its stripe after deleting its
	// keys, so no later lookup can see them. Lookups take no stripe (every
	// sealed write and every unseal looks a key up). Evicting an entry,
	// which needs no stripe, only makes the next lookup load it again.
	cache *cache

	created, put, destroyed atomic.Uint64
}

const (
	valueVersion  = 1
	flagPublished = 1 << 0
	valueLen      = 2 + KeySize
)

// Open opens (or creates) the store in opts.Dir.
func Open(opts Options) (*Store, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	db, err := pebble.Open(opts.Dir, pebbleOptions(opts))
	if err != nil {
		return nil, fmt.Errorf("keystore: open %s: %w", opts.Dir, err)
	}
	s := &Store{db: db, opts: opts}
	if opts.CacheEntries > 0 {
		s.cache = newCache(opts.CacheEntries)
	}
	return s, nil
}

// Close closes the database. Pending obsolete-file shredding finishes before
// it returns. Operations after Close return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return ErrClosed
	}
	s.mu.closed = true
	s.closed.Store(true)
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("keystore: close: %w", err)
	}
	return nil
}

// PebbleMemory is what the store's Pebble holds outside the Go heap now
// (from pebble.DB.Metrics).
type PebbleMemory struct {
	// MemTables is the bytes allocated for memtables, in use or zombie.
	MemTables uint64
	// BlockCache is the bytes of blocks in the block cache; for a shared
	// cache, that of every database using it.
	BlockCache int64
}

// PebbleMemory reports the memory the store's Pebble holds now (zero after
// Close).
func (s *Store) PebbleMemory() PebbleMemory {
	if err := s.open(); err != nil {
		return PebbleMemory{}
	}
	defer s.mu.RUnlock()
	m := s.db.Metrics()
	return PebbleMemory{MemTables: m.MemTable.Size + m.MemTable.ZombieSize, BlockCache: m.BlockCache.Size}
}

// Metrics returns a snapshot of the counters.
func (s *Store) Metrics() Metrics {
	m := Metrics{
		Created:   s.created.Load(),
		Put:       s.put.Load(),
		Destroyed: s.destroyed.Load(),
	}
	if s.cache != nil {
		st := s.cache.stats()
		m.CacheHits, m.CacheMisses, m.CacheEvictions = st.hits, st.misses, st.evictions
		m.CacheEntries, m.CacheNegative, m.CacheCapacity = st.entries, st.negative, st.capacity
	}
	return m
}

// open takes the read side of the close lock; callers defer s.mu.RUnlock().
func (s *Store) open() error {
	s.mu.RLock()
	if s.mu.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *Store) stripe(identityID string) *sync.Mutex {
	return &s.stripes[s.stripeIndex(identityID)]
}

func (s *Store) stripeIndex(identityID string) int {
	return int(maphash.String(stripeSeed, identityID) % uint64(len(s.stripes)))
}

var stripeSeed = maphash.MakeSeed()

// Current returns the key this region seals the identity's new data under:
// the first key it created or received for the identity. ok is false when
// the identity has no key here.
func (s *Store) Current(identityID string) (k Key, ok bool, err error) {
	if err := checkID("identity id", identityID); err != nil {
		return Key{}, false, err
	}
	if e, err := s.hit(identityID); e != nil || err != nil {
		k, ok := e.current()
		return k, ok, err
	}
	if err := s.open(); err != nil {
		return Key{}, false, err
	}
	defer s.mu.RUnlock()
	st := s.stripe(identityID)
	st.Lock()
	defer st.Unlock()
	e, err := s.entryLocked(identityID)
	if err != nil {
		return Key{}, false, err
	}
	k, ok = e.current()
	return k, ok, nil
}

// CurrentOrCreate returns the identity's current key, creating (and durably
// storing) a new one if the identity has none here. created reports which.
func (s *Store) CurrentOrCreate(identityID string) (k Key, created bool, err error) {
	if err := checkID("identity id", identityID); err != nil {
		return Key{}, false, err
	}
	if e, err := s.hit(identityID); err != nil {
		return Key{}, false, err
	} else if k, ok := e.current(); ok {
		return k, false, nil
	}
	if err := s.open(); err != nil {
		return Key{}, false, err
	}
	defer s.mu.RUnlock()
	st := s.stripe(identityID)
	st.Lock()
	defer st.Unlock()
	e, err := s.entryLocked(identityID)
	if err != nil {
		return Key{}, false, err
	}
	if k, ok := e.current(); ok {
		return k, false, nil
	}
	k, err = s.createLocked(identityID, e)
	return k, err == nil, err
}

// CurrentOrCreateMany is CurrentOrCreate for several identities (repeats
// allowed) with one synced write for all the keys it creates, so that an
// append of events of many new identities waits for one key-store fsync,
// not one each. keys[i] and created[i] answer identityIDs[i] (created is
// true once per identity it made a key for).
func (s *Store) CurrentOrCreateMany(identityIDs []string) (keys []Key, created []bool, err error) {
	for i, id := range identityIDs {
		if err := checkID("identity id", id); err != nil {
			return nil, nil, fmt.Errorf("%w (identity %d of %d)", err, i+1, len(identityIDs))
		}
	}
	keys, created = make([]Key, len(identityIDs)), make([]bool, len(identityIDs))
	var missing []int // identities without a cached current key
	for i, id := range identityIDs {
		e, err := s.hit(id)
		if err != nil {
			return nil, nil, err
		}
		if k, ok := e.current(); ok {
			keys[i] = k
		} else {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return keys, created, nil
	}
	if err := s.open(); err != nil {
		return nil, nil, err
	}
	defer s.mu.RUnlock()
	// In stripe order, so that concurrent calls cannot deadlock.
	var held [len(Store{}.stripes)]bool
	for _, i := range missing {
		held[s.stripeIndex(identityIDs[i])] = true
	}
	for j := range held {
		if held[j] {
			s.stripes[j].Lock()
			defer s.stripes[j].Unlock()
		}
	}
	b := s.db.NewBatch()
	defer b.Close()
	made := map[string]*entry{} // identities given a key by this call
	for _, i := range missing {
		id := identityIDs[i]
		if e := made[id]; e != nil {
			keys[i], _ = e.current()
			continue
		}
		e, err := s.entryLocked(id)
		if err != nil {
			return nil, nil, err
		}
		if k, ok := e.current(); ok {
			keys[i] = k
			continue
		}
		k, err := newKey()
		if err != nil {
			return nil, nil, err
		}
		if err := b.Set(keyKey(id, k.ID), encodeValue(k), nil); err != nil {
			return nil, nil, fmt.Errorf("keystore: create: %w", err)
		}
		if err := b.Set(currentKey(id), []byte(k.ID), nil); err != nil {
			return nil, nil, fmt.Errorf("keystore: create: %w", err)
		}
		if s.opts.CacheEntries >= 0 {
			k.aead = newGCM(k.Material[:])
		}
		made[id] = e.with(k, true)
		keys[i], created[i] = k, true
	}
	if len(made) == 0 {
		return keys, created, nil
	}
	// Synced, as Create: see createLocked.
	if err := b.Commit(pebble.Sync); err != nil {
		for id := range made {
			s.uncache(id)
		}
		return nil, nil, fmt.Errorf("keystore: create: %w", err)
	}
	s.created.Add(uint64(len(made)))
	for id, e := range made {
		s.cacheLocked(id, e)
	}
	return keys, created, nil
}

// Create makes a new random key for the identity, stores it durably (synced)
// and makes it the current key.
func (s *Store) Create(identityID string) (Key, error) {
	if err := checkID("identity id", identityID); err != nil {
		return Key{}, err
	}
	if err := s.open(); err != nil {
		return Key{}, err
	}
	defer s.mu.RUnlock()
	st := s.stripe(identityID)
	st.Lock()
	defer st.Unlock()
	e, err := s.entryLocked(identityID)
	if err != nil {
		return Key{}, err
	}
	return s.createLocked(identityID, e)
}

// Put stores a key that arrived from another region (already unwrapped). It
// is idempotent; storing a different key under an existing key id is an
// error. The key becomes current only if the identity has no current key.
// Storing a key that is already held, published, writes nothing.
func (s *Store) Put(identityID, keyID string, material []byte) error {
	return s.PutMany([]PutKey{{IdentityID: identityID, KeyID: keyID, Material: material}})
}

// PutKey is one key for PutMany.
type PutKey struct {
	IdentityID, KeyID string
	Material          []byte
}

// PutMany is Put for many keys (of any identities) with one synced write:
// all of them are stored, or none when any is invalid (the error names it)
// or conflicts with a held key. The projector stores the keys that arrive
// in a batch of inbox messages with it.
func (s *Store) PutMany(keys []PutKey) error {
	for i, k := range keys {
		if err := checkID("identity id", k.IdentityID); err != nil {
			return fmt.Errorf("%w (key %d of %d)", err, i+1, len(keys))
		}
		if err := checkID("key id", k.KeyID); err != nil {
			return fmt.Errorf("%w (key %d of %d)", err, i+1, len(keys))
		}
		if len(k.Material) != KeySize {
			return fmt.Errorf("%w: key material is %d bytes, want %d (key %d of %d)", ErrInvalid, len(k.Material), KeySize, i+1, len(keys))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if err := s.open(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if len(keys) == 1 {
		st := s.stripe(keys[0].IdentityID)
		st.Lock()
		defer st.Unlock()
	} else {
		// In stripe order, so that concurrent calls cannot deadlock.
		var held [len(Store{}.stripes)]bool
		for _, k := range keys {
			held[s.stripeIndex(k.IdentityID)] = true
		}
		for i := range held {
			if held[i] {
				s.stripes[i].Lock()
				defer s.stripes[i].Unlock()
			}
		}
	}

	// What each identity's entry becomes, and the writes that make it so.
	next := map[string]*entry{}
	b := s.db.NewBatch()
	defer b.Close()
	var added uint64
	for _, pk := range keys {
		e := next[pk.IdentityID]
		if e == nil {
			var err error
			if e, err = s.entryLocked(pk.IdentityID); err != nil {
				return err
			}
		}
		k := Key{ID: pk.KeyID, Published: true}
		copy(k.Material[:], pk.Material)
		if old, ok := e.get(pk.KeyID); ok {
			if old.Material != k.Material {
				return fmt.Errorf("%w: identity %s key %s already stored with different material", ErrInvalid, pk.IdentityID, pk.KeyID)
			}
			if old.Published {
				continue
			}
		} else {
			added++
			if s.opts.CacheEntries >= 0 {
				k.aead = newGCM(k.Material[:])
			}
		}
		if err := b.Set(keyKey(pk.IdentityID, pk.KeyID), encodeValue(k), nil); err != nil {
			return fmt.Errorf("keystore: put: %w", err)
		}
		if _, ok := e.current(); !ok {
			if err := b.Set(currentKey(pk.IdentityID), []byte(pk.KeyID), nil); err != nil {
				return fmt.Errorf("keystore: put: %w", err)
			}
		}
		next[pk.IdentityID] = e.with(k, false)
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		for id := range next {
			s.uncache(id)
		}
		return fmt.Errorf("keystore: put: %w", err)
	}
	s.put.Add(added)
	for id, e := range next {
		s.cacheLocked(id, e)
	}
	return nil
}

// MarkPublished records that the key's wrapped record is durable in the log.
// It is not synced: losing the mark only makes the writer emit the key
// record once more, which deduplication drops.
func (s *Store) MarkPublished(identityID, keyID string) error {
	if err := s.open(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	st := s.stripe(identityID)
	st.Lock()
	defer st.Unlock()
	e, err := s.entryLocked(identityID)
	if err != nil {
		return err
	}
	k, ok := e.get(keyID)
	if !ok {
		return notFound(identityID, keyID)
	}
	if k.Published {
		return nil
	}
	k.Published = true
	if err := s.db.Set(keyKey(identityID, keyID), encodeValue(k), pebble.NoSync); err != nil {
		s.uncache(identityID)
		return fmt.Errorf("keystore: mark published: %w", err)
	}
	s.cacheLocked(identityID, e.with(k, false))
	return nil
}

// Get returns one key of the identity; ErrNotFound if it is not here.
func (s *Store) Get(identityID, keyID string) (Key, error) {
	if err := checkID("identity id", identityID); err != nil {
		return Key{}, err
	}
	if err := checkID("key id", keyID); err != nil {
		return Key{}, err
	}
	e, err := s.hit(identityID)
	if err != nil {
		return Key{}, err
	}
	if e == nil {
		if err := s.open(); err != nil {
			return Key{}, err
		}
		defer s.mu.RUnlock()
		if s.opts.CacheEntries < 0 {
			return s.getLocked(identityID, keyID)
		}
		st := s.stripe(identityID)
		st.Lock()
		defer st.Unlock()
		var err error
		if e, err = s.entryLocked(identityID); err != nil {
			return Key{}, err
		}
	}
	k, ok := e.get(keyID)
	if !ok {
		return Key{}, notFound(identityID, keyID)
	}
	return k, nil
}

// Keys returns all the identity's keys held here, ordered by key id.
func (s *Store) Keys(identityID string) ([]Key, error) {
	if err := checkID("identity id", identityID); err != nil {
		return nil, err
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	return s.keysLocked(identityID)
}

// Destroy deletes every key of the identity and returns how many there were.
//
// Guarantee: when Destroy returns, the keys are gone from the store (Get,
// Keys, Current see nothing) and the deletion is synced. It then flushes the
// memtable (which retires the WAL that held the key) and compacts the
// identity's key range to the bottom level, so no live SSTable or WAL holds
// the key bytes. Pebble discards the obsolete files asynchronously, through
// the store's cleaner, which overwrites each file with zeros and fsyncs
// before unlinking it, and never recycles WAL files; at the latest when Close
// returns, no file in Dir contains the key. What this cannot promise is the
// physical medium: a copy-on-write filesystem, snapshots or an SSD's wear
// levelling may keep old blocks, so production disks should be encrypted at
// rest as well.
func (s *Store) Destroy(identityID string) (int, error) {
	if err := checkID("identity id", identityID); err != nil {
		return 0, err
	}
	if err := s.open(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	st := s.stripe(identityID)
	st.Lock()
	defer st.Unlock()

	// Out of the cache first: from here on a lookup finds no entry and
	// waits for the stripe, and no entry can come back while Destroy holds
	// it (entries are only stored under the stripe); after it, a lookup
	// loads from Pebble, which holds no key then (or, if DeleteRange
	// failed, the keys that are still there).
	s.uncache(identityID)
	keys, err := s.keysLocked(identityID)
	if err != nil {
		return 0, err
	}
	lo, hi := identityRange(identityID)
	if err := s.db.DeleteRange(lo, hi, pebble.Sync); err != nil {
		return 0, fmt.Errorf("keystore: destroy: %w", err)
	}
	s.destroyed.Add(uint64(len(keys)))
	if err := s.db.Flush(); err != nil {
		return len(keys), fmt.Errorf("keystore: destroy: flush: %w", err)
	}
	if err := s.db.Compact(context.Background(), lo, hi, false); err != nil {
		return len(keys), fmt.Errorf("keystore: destroy: compact: %w", err)
	}
	return len(keys), nil
}

// hit returns the identity's cache entry without the close lock (nil if
// there is none): ErrClosed once Close has begun.
func (s *Store) hit(identityID string) (*entry, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	return s.cached(identityID), nil
}

// cached returns the identity's cache entry, nil if there is none.
func (s *Store) cached(identityID string) *entry {
	if s.cache == nil {
		return nil
	}
	return s.cache.get(identityID)
}

// entryLocked returns the identity's entry, from the cache or loaded from
// Pebble (and cached); the caller holds the identity's stripe.
func (s *Store) entryLocked(identityID string) (*entry, error) {
	if e := s.cached(identityID); e != nil {
		return e, nil
	}
	if s.cache != nil {
		s.cache.miss(identityID)
	}
	e, err := s.loadLocked(identityID)
	if err != nil {
		return nil, err
	}
	s.cacheLocked(identityID, e)
	return e, nil
}

// loadLocked reads every key of the identity and its current key id, in one
// pass over the identity's range. An identity without a current key has
// no key at all (every write that stores a key makes one current if there
// is none, in the same batch), so a point read settles the common case of
// an identity new here without an iterator.
func (s *Store) loadLocked(identityID string) (*entry, error) {
	_, closer, err := s.db.Get(currentKey(identityID))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return &entry{cur: -1}, nil
	case err != nil:
		return nil, fmt.Errorf("keystore: load: %w", err)
	}
	closer.Close()
	lo, hi := identityRange(identityID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("keystore: load: %w", err)
	}
	e := &entry{cur: -1}
	curID, hasCur := "", false
	for it.First(); it.Valid(); it.Next() {
		switch rest := it.Key()[len(lo):]; {
		case len(rest) == 1 && rest[0] == 'c':
			curID, hasCur = string(it.Value()), true
		case len(rest) > 1 && rest[0] == 'k':
			k, err := decodeValue(string(rest[1:]), it.Value())
			if err != nil {
				it.Close()
				return nil, err
			}
			e.keys = append(e.keys, k)
		}
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("keystore: load: %w", err)
	}
	if hasCur {
		for i := range e.keys {
			if e.keys[i].ID == curID {
				e.cur = i
			}
		}
		if e.cur < 0 {
			return nil, fmt.Errorf("keystore: current key %s of %s: %w", curID, identityID, notFound(identityID, curID))
		}
	}
	if s.opts.CacheEntries >= 0 {
		for i := range e.keys {
			e.keys[i].aead = newGCM(e.keys[i].Material[:])
		}
	}
	return e, nil
}

// cacheLocked stores e as the identity's entry; the caller holds the
// identity's stripe, so e is not older than what Pebble holds.
func (s *Store) cacheLocked(identityID string, e *entry) {
	if s.cache != nil {
		s.cache.put(identityID, e)
	}
}

// uncache drops the identity's entry; the caller holds the identity's
// stripe.
func (s *Store) uncache(identityID string) {
	if s.cache != nil {
		s.cache.remove(identityID)
	}
}

// createLocked makes a new key, stores it synced as the current key and
// returns it; e is the identity's entry.
func (s *Store) createLocked(identityID string, e *entry) (Key, error) {
	k, err := newKey()
	if err != nil {
		return Key{}, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(keyKey(identityID, k.ID), encodeValue(k), nil); err != nil {
		return Key{}, fmt.Errorf("keystore: create: %w", err)
	}
	if err := b.Set(currentKey(identityID), []byte(k.ID), nil); err != nil {
		return Key{}, fmt.Errorf("keystore: create: %w", err)
	}
	// Synced: a sealed record may be durable in the log a moment later, and
	// it must never outlive the only copy of its key in a crash.
	if err := b.Commit(pebble.Sync); err != nil {
		s.uncache(identityID)
		return Key{}, fmt.Errorf("keystore: create: %w", err)
	}
	s.created.Add(1)
	if s.opts.CacheEntries >= 0 {
		k.aead = newGCM(k.Material[:])
	}
	s.cacheLocked(identityID, e.with(k, true))
	return k, nil
}

// newKey makes a random key with a UUIDv7 id.
func newKey() (Key, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Key{}, fmt.Errorf("keystore: create: key id: %w", err)
	}
	k := Key{ID: id.String()}
	rand.Read(k.Material[:]) // never fails (crypto/rand since Go 1.24)
	return k, nil
}

func (s *Store) getLocked(identityID, keyID string) (Key, error) {
	v, closer, err := s.db.Get(keyKey(identityID, keyID))
	if errors.Is(err, pebble.ErrNotFound) {
		return Key{}, notFound(identityID, keyID)
	}
	if err != nil {
		return Key{}, fmt.Errorf("keystore: get: %w", err)
	}
	defer closer.Close()
	return decodeValue(keyID, v)
}

func notFound(identityID, keyID string) error {
	return fmt.Errorf("keystore: identity %s key %s: %w", identityID, keyID, ErrNotFound)
}

func (s *Store) keysLocked(identityID string) ([]Key, error) {
	prefix := keyKey(identityID, "")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("keystore: keys: %w", err)
	}
	var keys []Key
	for it.First(); it.Valid(); it.Next() {
		k, err := decodeValue(string(it.Key()[len(prefix):]), it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		keys = append(keys, k)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("keystore: keys: %w", err)
	}
	return keys, nil
}

func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalid, what, maxIDLen)
	}
	if strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%w: %s contains a NUL byte", ErrInvalid, what)
	}
	return nil
}

func currentKey(identityID string) []byte { return []byte(identityID + "\x00c") }

func keyKey(identityID, keyID string) []byte { return []byte(identityID + "\x00k" + keyID) }

func identityRange(identityID string) (lo, hi []byte) {
	return []byte(identityID + "\x00"), []byte(identityID + "\x01")
}

// prefixEnd is the smallest key greater than every key with the prefix; the
// prefixes used here end in a printable byte, so incrementing it is enough.
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	end[len(end)-1]++
	return end
}

func encodeValue(k Key) []byte {
	v := make([]byte, valueLen)
	v[0] = valueVersion
	if k.Published {
		v[1] |= flagPublished
	}
	copy(v[2:], k.Material[:])
	return v
}

func decodeValue(keyID string, v []byte) (Key, error) {
	if len(v) != valueLen || v[0] != valueVersion {
		return Key{}, fmt.Errorf("keystore: key %s: stored value has unknown format (len %d)", keyID, len(v))
	}
	k := Key{ID: keyID, Published: v[1]&flagPublished != 0}
	copy(k.Material[:], v[2:])
	return k, nil
}
