package projector

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// store is the read model on Pebble. Every change of a batch of inbox
// messages goes into one Pebble batch together with the inbox sequence it
// reached (see batch.go), so state and position move together.
//
// Layout (one prefix byte per kind):
//
//	'g' id                        GLOBAL IdentityState (deterministic proto)
//	'r' id                        RESIDENT IdentityState sealed (Sealed proto)
//	'e' len hash id               email hash index (empty value)
//	'u' len hash id               username hash index (empty value)
//	's' session id                -> identity id
//	'p' origin node zone          highest origin log sequence applied (8 bytes)
//	'o' origin zone               origin stream sequence of the last message applied (8 bytes)
//	'h' origin                    newest heartbeat applied
//	'c' node                      newest HLC applied of the origin node's GLOBAL records (8 bytes)
//	'q' inbox seq (8 bytes BE)    quarantine record (JSON)
//	'x' id                        erasure committed, key destruction pending
//	'd' id                        erased: the identity's tombstone is applied (empty value; permanent, see erased.go)
//	'm' name                      meta: "inbox" (8 bytes), "quarantined" (8 bytes), "version",
//	                              "erased markers complete" (8 bytes)
//
// Strings inside composite keys are length-prefixed (uvarint), so no
// separator byte has to be forbidden in ids.
type store struct {
	db    *pebble.DB
	cache interface{ Unref() }
	// markers: every erased identity of the model has its 'd' marker
	// (erased.go); false only for a model of an older build opened
	// read-only, which isErased answers from the states instead.
	markers bool
}

const (
	pGlobal     = 'g'
	pResident   = 'r'
	pEmail      = 'e'
	pUsername   = 'u'
	pSession    = 's'
	pPosition   = 'p'
	pSource     = 'o'
	pHeartbeat  = 'h'
	pObserved   = 'c'
	pQuarantine = 'q'
	pErasing    = 'x'
	pErased     = 'd'
	pMeta       = 'm'

	storeVersion = 1
)

var (
	metaInbox       = []byte{pMeta, 'i', 'n', 'b', 'o', 'x'}
	metaQuarantined = []byte{pMeta, 'q', 'u', 'a', 'r'}
	metaVersion     = []byte{pMeta, 'v', 'e', 'r'}
	metaMarkers     = []byte{pMeta, 'e', 'r', 'a', 's', 'e', 'd'}
)

// storeOptions size the read model's Pebble (zero values: the defaults).
type storeOptions struct {
	memTableSize uint64        // default DefaultMemTableSize
	cache        *pebble.Cache // shared block cache; nil: one of cacheSize
	cacheSize    int64         // default DefaultBlockCacheSize
}

func (o storeOptions) defaulted() storeOptions {
	if o.memTableSize == 0 {
		o.memTableSize = DefaultMemTableSize
	}
	if o.cacheSize == 0 && o.cache == nil {
		o.cacheSize = DefaultBlockCacheSize
	}
	return o
}

// budget is the memory outside the Go heap the model's Pebble may take:
// the room for blocks of its own block cache (0 when shared) and
// MemTableStopWritesThreshold memtables.
func (o storeOptions) budget() (cache, memTables int64) {
	o = o.defaulted()
	memTables = MemTableStopWritesThreshold * int64(o.memTableSize)
	if o.cache != nil {
		return 0, memTables
	}
	return o.cacheSize, memTables
}

// openStore opens (or creates) the read model in dir with the default
// sizes.
func openStore(dir string, readOnly bool) (*store, error) {
	return openStoreWith(dir, readOnly, storeOptions{})
}

// openStoreWith opens (or creates) the read model in dir.
func openStoreWith(dir string, readOnly bool, so storeOptions) (*store, error) {
	so = so.defaulted()
	cache := so.cache
	if cache != nil {
		cache.Ref() // released by close, like a cache of its own
	} else {
		// Pebble counts memtables against the cache: room for both.
		cache = pebble.NewCache(so.cacheSize + MemTableStopWritesThreshold*int64(so.memTableSize))
	}
	opts := &pebble.Options{
		Cache:                       cache,
		MemTableSize:                so.memTableSize,
		MemTableStopWritesThreshold: MemTableStopWritesThreshold,
		Logger:                      quietLogger{},
		ReadOnly:                    readOnly,
	}
	// Bloom filters: the first touch of an identity new to the model
	// looks its states up, and should not read every table to miss.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10) // inherited by the other levels
	db, err := pebble.Open(dir, opts)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("projector: open read model %s: %w", dir, err)
	}
	s := &store{db: db, cache: cache}
	v, err := s.getUint(metaVersion)
	switch {
	case err != nil:
		s.close()
		return nil, err
	case v == 0 && readOnly:
		s.close()
		return nil, fmt.Errorf("projector: %s holds no read model", dir)
	case v == 0:
		// A new model: it holds no identity, so its markers are complete.
		wb := db.NewBatch()
		err := errors.Join(wb.Set(metaVersion, u64(storeVersion), nil), wb.Set(metaMarkers, u64(1), nil))
		if err == nil {
			err = wb.Commit(pebble.Sync)
		}
		wb.Close()
		if err != nil {
			s.close()
			return nil, fmt.Errorf("projector: open read model: %w", err)
		}
		s.markers = true
		return s, nil
	case v != storeVersion:
		s.close()
		return nil, fmt.Errorf("projector: read model %s has format version %d, this build reads %d", dir, v, storeVersion)
	}
	if err := s.loadMarkers(readOnly); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// PebbleMemory is what a read model's Pebble holds outside the Go heap
// now (from pebble.DB.Metrics).
type PebbleMemory struct {
	// MemTables is the bytes allocated for memtables (and large batches),
	// in use or zombie.
	MemTables uint64
	// BlockCache is the bytes of blocks in the block cache; for a shared
	// cache, that of every database using it.
	BlockCache int64
}

func (s *store) pebbleMemory() PebbleMemory {
	m := s.db.Metrics()
	return PebbleMemory{MemTables: m.MemTable.Size + m.MemTable.ZombieSize, BlockCache: m.BlockCache.Size}
}

// PebbleMemory reports the memory the read model's Pebble holds now (zero
// after Close).
func (p *Projector) PebbleMemory() PebbleMemory {
	if err := p.open(); err != nil {
		return PebbleMemory{}
	}
	defer p.mu.RUnlock()
	return p.eng.store.pebbleMemory()
}

// PebbleBudget is the memory, outside the Go heap, the read model's
// Pebble may take with this configuration: cache is the room for blocks of
// its own block cache (0 when BlockCache is shared: its owner counts it),
// memTables MemTableStopWritesThreshold memtables. A model's own cache is
// made of cache + memTables, which bounds both together. A Swap opens a
// second model of the same sizes while it runs.
func (c Config) PebbleBudget() (cache, memTables int64) { return c.storeOptions().budget() }

// PebbleBudget is Config.PebbleBudget for a rebuild's model.
func (c RebuildConfig) PebbleBudget() (cache, memTables int64) { return c.storeOptions().budget() }

func (s *store) close() error {
	err := s.db.Close()
	s.cache.Unref()
	if err != nil {
		return fmt.Errorf("projector: close read model: %w", err)
	}
	return nil
}

func (s *store) get(key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("projector: read model get: %w", err)
	}
	out := bytes.Clone(v)
	closer.Close()
	return out, true, nil
}

func (s *store) getUint(key []byte) (uint64, error) {
	v, ok, err := s.get(key)
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("projector: read model key %q: value of %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// inboxSeq is the last inbox sequence whose effects are in the model.
func (s *store) inboxSeq() (uint64, error) { return s.getUint(metaInbox) }

func (s *store) quarantinedCount() (uint64, error) { return s.getUint(metaQuarantined) }

// empty reports whether the model holds no identity.
func (s *store) empty() (bool, error) {
	empty := true
	err := s.scan([]byte{pGlobal}, func(_, _ []byte) error {
		empty = false
		return errStopScan
	})
	if errors.Is(err, errStopScan) {
		err = nil
	}
	return empty, err
}

var errStopScan = errors.New("stop")

// global returns the stored GLOBAL state, nil if there is none.
func (s *store) global(id string) (*meridianv1.IdentityState, error) {
	v, ok, err := s.get(globalKey(id))
	if err != nil || !ok {
		return nil, err
	}
	st := &meridianv1.IdentityState{}
	if err := proto.Unmarshal(v, st); err != nil {
		return nil, fmt.Errorf("projector: identity %s: stored state does not decode: %w", id, err)
	}
	return st, nil
}

// residentSealed returns the stored sealed RESIDENT state, nil if none.
func (s *store) residentSealed(id string) (*meridianv1.Sealed, error) {
	v, ok, err := s.get(residentKey(id))
	if err != nil || !ok {
		return nil, err
	}
	sealed := &meridianv1.Sealed{}
	if err := proto.Unmarshal(v, sealed); err != nil {
		return nil, fmt.Errorf("projector: identity %s: stored resident state does not decode: %w", id, err)
	}
	return sealed, nil
}

// lookupHash returns the identity ids indexed under a hash (prefix pEmail
// or pUsername), in id order.
func (s *store) lookupHash(prefix byte, hash []byte) ([]string, error) {
	lo := hashIndexKey(prefix, hash, "")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, fmt.Errorf("projector: lookup: %w", err)
	}
	var ids []string
	for it.First(); it.Valid(); it.Next() {
		ids = append(ids, string(it.Key()[len(lo):]))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("projector: lookup: %w", err)
	}
	return ids, nil
}

// session returns the identity a session id belongs to.
func (s *store) session(sessionID string) (string, bool, error) {
	v, ok, err := s.get(sessionKey(sessionID))
	return string(v), ok, err
}

// scan calls fn for every key with the prefix.
func (s *store) scan(prefix []byte, fn func(k, v []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("projector: scan: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("projector: scan: %w", err)
	}
	return nil
}

// positions loads the applied positions, origin stream sequences and
// heartbeats (small: a few per origin).
func (s *store) positions() (*positions, error) {
	ps := newPositions()
	err := s.scan([]byte{pPosition}, func(k, v []byte) error {
		origin, rest, ok1 := readStr(k[1:])
		node, rest, ok2 := readStr(rest)
		if !ok1 || !ok2 || len(v) != 8 {
			return fmt.Errorf("projector: read model: bad position key %q", k)
		}
		ps.applied[nodeZone{origin, node, string(rest)}] = binary.BigEndian.Uint64(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.scan([]byte{pSource}, func(k, v []byte) error {
		origin, rest, ok := readStr(k[1:])
		if !ok || len(v) != 8 {
			return fmt.Errorf("projector: read model: bad source key %q", k)
		}
		ps.source[originZone{origin, string(rest)}] = binary.BigEndian.Uint64(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.scan([]byte{pHeartbeat}, func(k, v []byte) error {
		var hb Heartbeat
		if err := json.Unmarshal(v, &hb); err != nil {
			return fmt.Errorf("projector: read model: heartbeat of %q: %w", k[1:], err)
		}
		ps.heartbeats[string(k[1:])] = hb
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.loadObserved(ps); err != nil {
		return nil, err
	}
	return ps, nil
}

// quarantined lists the quarantine records in inbox order.
func (s *store) quarantined() ([]QuarantineRecord, error) {
	var out []QuarantineRecord
	err := s.scan([]byte{pQuarantine}, func(k, v []byte) error {
		var r QuarantineRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("projector: quarantine record %x: %w", k[1:], err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// erasing lists identities whose erasure committed but whose keys may not
// have been destroyed yet (a crash in between).
func (s *store) erasing() ([]string, error) {
	var ids []string
	err := s.scan([]byte{pErasing}, func(k, _ []byte) error {
		ids = append(ids, string(k[1:]))
		return nil
	})
	return ids, err
}

func (s *store) erased(id string) error {
	if err := s.db.Delete(erasingKey(id), pebble.NoSync); err != nil {
		return fmt.Errorf("projector: clear erasure marker: %w", err)
	}
	return nil
}

// Keys.

func globalKey(id string) []byte   { return append([]byte{pGlobal}, id...) }
func residentKey(id string) []byte { return append([]byte{pResident}, id...) }
func sessionKey(sid string) []byte { return append([]byte{pSession}, sid...) }
func erasingKey(id string) []byte  { return append([]byte{pErasing}, id...) }
func erasedKey(id string) []byte   { return append([]byte{pErased}, id...) }

func hashIndexKey(prefix byte, hash []byte, id string) []byte {
	k := make([]byte, 0, 2+len(hash)+len(id))
	k = append(k, prefix)
	k = binary.AppendUvarint(k, uint64(len(hash)))
	k = append(k, hash...)
	return append(k, id...)
}

func positionKey(k nodeZone) []byte {
	b := appendStr([]byte{pPosition}, k.origin)
	b = appendStr(b, k.node)
	return append(b, k.zone...)
}

func sourceKey(k originZone) []byte {
	return append(appendStr([]byte{pSource}, k.origin), k.zone...)
}

func heartbeatKey(origin string) []byte { return append([]byte{pHeartbeat}, origin...) }

func quarantineKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{pQuarantine}, seq)
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func readStr(b []byte) (string, []byte, bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return "", nil, false
	}
	return string(b[w : w+int(n)]), b[w+int(n):], true
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// prefixEnd is the smallest key above every key with the prefix.
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// quietLogger keeps Pebble's errors and drops its informational chatter.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	pebble.DefaultLogger.Errorf(format, args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	pebble.DefaultLogger.Fatalf(format, args...)
}
