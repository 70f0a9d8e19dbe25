package keystore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
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
	// CacheEntries bounds the in-memory cache of current keys (one entry per
	// identity). Default 65536; negative disables the cache.
	CacheEntries int
}

func (o *Options) validate() error {
	if o.Dir == "" {
		return fmt.Errorf("%w: Options.Dir is required", ErrInvalid)
	}
	if o.CacheEntries == 0 {
		o.CacheEntries = 1 << 16
	}
	return nil
}

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
	return unseal(k.gcm(), s, recordID)
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

func (k Key) gcm() cipher.AEAD {
	if k.aead != nil {
		return k.aead
	}
	return newGCM(k.Material[:])
}

// Metrics is a snapshot of the store's counters.
type Metrics struct {
	Created   uint64 // keys created here
	Put       uint64 // keys stored from other regions (new ones only)
	Destroyed uint64 // keys deleted by Destroy
	CacheHits uint64
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
	stripes [64]sync.Mutex

	mu struct {
		sync.RWMutex
		closed bool
	}
	// cache maps identity -> *Key (current key). Lock-free reads: every
	// resident write looks its key up here. n is approximate (Clear races
	// with stores), which only makes the bound approximate.
	cache struct {
		m sync.Map
		n atomic.Int64
	}

	created, put, destroyed, cacheHits atomic.Uint64
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
	db, err := pebble.Open(opts.Dir, pebbleOptions(opts.Dir))
	if err != nil {
		return nil, fmt.Errorf("keystore: open %s: %w", opts.Dir, err)
	}
	s := &Store{db: db, opts: opts}
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
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("keystore: close: %w", err)
	}
	return nil
}

// Metrics returns a snapshot of the counters.
func (s *Store) Metrics() Metrics {
	return Metrics{
		Created:   s.created.Load(),
		Put:       s.put.Load(),
		Destroyed: s.destroyed.Load(),
		CacheHits: s.cacheHits.Load(),
	}
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
	h := fnv.New32a()
	h.Write([]byte(identityID))
	return &s.stripes[h.Sum32()%uint32(len(s.stripes))]
}

// Current returns the key this region seals the identity's new data under:
// the first key it created or received for the identity. ok is false when
// the identity has no key here.
func (s *Store) Current(identityID string) (k Key, ok bool, err error) {
	if err := checkID("identity id", identityID); err != nil {
		return Key{}, false, err
	}
	if err := s.open(); err != nil {
		return Key{}, false, err
	}
	defer s.mu.RUnlock()
	if k, ok := s.cached(identityID); ok {
		return k, true, nil
	}
	st := s.stripe(identityID)
	st.Lock()
	defer st.Unlock()
	return s.currentLocked(identityID)
}

// CurrentOrCreate returns the identity's current key, creating (and durably
// storing) a new one if the identity has none here. created reports which.
func (s *Store) CurrentOrCreate(identityID string) (k Key, created bool, err error) {
	if err := checkID("identity id", identityID); err != nil {
		return Key{}, false, err
	}
	if err := s.open(); err != nil {
		return Key{}, false, err
	}
	defer s.mu.RUnlock()
	if k, ok := s.cached(identityID); ok {
		return k, false, nil
	}
	st := s.stripe(identityID)
	st.Lock()
	defer st.Unlock()
	k, ok, err := s.currentLocked(identityID)
	if err != nil || ok {
		return k, false, err
	}
	k, err = s.createLocked(identityID)
	return k, err == nil, err
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
	return s.createLocked(identityID)
}

// Put stores a key that arrived from another region (already unwrapped). It
// is idempotent; storing a different key under an existing key id is an
// error. The key becomes current only if the identity has no current key.
func (s *Store) Put(identityID, keyID string, material []byte) error {
	if err := checkID("identity id", identityID); err != nil {
		return err
	}
	if err := checkID("key id", keyID); err != nil {
		return err
	}
	if len(material) != KeySize {
		return fmt.Errorf("%w: key material is %d bytes, want %d", ErrInvalid, len(material), KeySize)
	}
	if err := s.open(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	st := s.stripe(identityID)
	st.Lock()
	defer st.Unlock()

	k := Key{ID: keyID, Published: true}
	copy(k.Material[:], material)
	old, err := s.getLocked(identityID, keyID)
	switch {
	case err == nil:
		if old.Material != k.Material {
			return fmt.Errorf("%w: identity %s key %s already stored with different material", ErrInvalid, identityID, keyID)
		}
		if old.Published {
			return nil
		}
	case !errors.Is(err, ErrNotFound):
		return err
	default:
		s.put.Add(1)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(keyKey(identityID, keyID), encodeValue(k), nil); err != nil {
		return fmt.Errorf("keystore: put: %w", err)
	}
	if _, ok, err := s.currentLocked(identityID); err != nil {
		return err
	} else if !ok {
		if err := b.Set(currentKey(identityID), []byte(keyID), nil); err != nil {
			return fmt.Errorf("keystore: put: %w", err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("keystore: put: %w", err)
	}
	s.uncache(identityID)
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
	k, err := s.getLocked(identityID, keyID)
	if err != nil {
		return err
	}
	if k.Published {
		return nil
	}
	k.Published = true
	if err := s.db.Set(keyKey(identityID, keyID), encodeValue(k), pebble.NoSync); err != nil {
		return fmt.Errorf("keystore: mark published: %w", err)
	}
	s.uncache(identityID)
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
	if err := s.open(); err != nil {
		return Key{}, err
	}
	defer s.mu.RUnlock()
	return s.getLocked(identityID, keyID)
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

	keys, err := s.keysLocked(identityID)
	if err != nil {
		return 0, err
	}
	lo, hi := identityRange(identityID)
	if err := s.db.DeleteRange(lo, hi, pebble.Sync); err != nil {
		return 0, fmt.Errorf("keystore: destroy: %w", err)
	}
	s.uncache(identityID)
	s.destroyed.Add(uint64(len(keys)))
	if err := s.db.Flush(); err != nil {
		return len(keys), fmt.Errorf("keystore: destroy: flush: %w", err)
	}
	if err := s.db.Compact(context.Background(), lo, hi, false); err != nil {
		return len(keys), fmt.Errorf("keystore: destroy: compact: %w", err)
	}
	return len(keys), nil
}

func (s *Store) cached(identityID string) (Key, bool) {
	if s.opts.CacheEntries < 0 {
		return Key{}, false
	}
	v, ok := s.cache.m.Load(identityID)
	if !ok {
		return Key{}, false
	}
	s.cacheHits.Add(1)
	return *v.(*Key), true
}

// cacheLocked is called with the identity's stripe held, so the value cannot
// be older than what Pebble holds. It returns k with its AEAD built.
func (s *Store) cacheLocked(identityID string, k Key) Key {
	if s.opts.CacheEntries < 0 {
		return k
	}
	if k.aead == nil {
		k.aead = newGCM(k.Material[:])
	}
	if s.cache.n.Load() >= int64(s.opts.CacheEntries) {
		s.cache.m.Clear()
		s.cache.n.Store(0)
	}
	if _, loaded := s.cache.m.Swap(identityID, &k); !loaded {
		s.cache.n.Add(1)
	}
	return k
}

func (s *Store) uncache(identityID string) {
	if _, loaded := s.cache.m.LoadAndDelete(identityID); loaded {
		s.cache.n.Add(-1)
	}
}

func (s *Store) currentLocked(identityID string) (Key, bool, error) {
	id, closer, err := s.db.Get(currentKey(identityID))
	if errors.Is(err, pebble.ErrNotFound) {
		return Key{}, false, nil
	}
	if err != nil {
		return Key{}, false, fmt.Errorf("keystore: current: %w", err)
	}
	keyID := string(id)
	closer.Close()
	k, err := s.getLocked(identityID, keyID)
	if err != nil {
		return Key{}, false, fmt.Errorf("keystore: current key %s of %s: %w", keyID, identityID, err)
	}
	return s.cacheLocked(identityID, k), true, nil
}

func (s *Store) createLocked(identityID string) (Key, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Key{}, fmt.Errorf("keystore: create: key id: %w", err)
	}
	k := Key{ID: id.String()}
	rand.Read(k.Material[:]) // never fails (crypto/rand since Go 1.24)
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
		return Key{}, fmt.Errorf("keystore: create: %w", err)
	}
	s.created.Add(1)
	return s.cacheLocked(identityID, k), nil
}

func (s *Store) getLocked(identityID, keyID string) (Key, error) {
	v, closer, err := s.db.Get(keyKey(identityID, keyID))
	if errors.Is(err, pebble.ErrNotFound) {
		return Key{}, fmt.Errorf("keystore: identity %s key %s: %w", identityID, keyID, ErrNotFound)
	}
	if err != nil {
		return Key{}, fmt.Errorf("keystore: get: %w", err)
	}
	defer closer.Close()
	return decodeValue(keyID, v)
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
	if bytes.IndexByte([]byte(id), 0) >= 0 {
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
