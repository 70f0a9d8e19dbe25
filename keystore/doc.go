// Package keystore is a region's mutable store of per-identity data keys and
// the AES-256-GCM helpers that use them.
//
// Every identity whose resident data a region writes gets a random 32-byte
// data key (crypto/rand, never derived from a long-lived secret, so destroying
// the key destroys the data). A region that holds no key for an identity
// creates its own; keys made in other regions of the zone arrive as DataKey
// records wrapped by the zone key (Wrap/Unwrap) and are Put here, so an
// identity may have several keys. Erasure calls Destroy, which deletes all of
// the identity's keys and pushes the deletion down through Pebble's memtable,
// WAL and SSTables (see Destroy for the exact guarantee).
//
// The loop a caller runs: the writer asks CurrentOrCreate for the key to seal
// a resident part under, emits a wrapped key record while the key is not yet
// Published, and marks it Published once that record is durable in the log;
// the projector Puts arriving keys (a batch's together, PutMany) and Gets
// them by id to unseal. The keys of recently used identities are cached
// (with their AES-GCM instances built; a bounded CLOCK cache of
// Options.CacheEntries identities), so the lookups of sealed writes and
// unseals of those identities touch no disk.
package keystore
