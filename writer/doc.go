// Package writer is a region's write path above the event log: it validates
// identity events, stamps them, splits them by residency class, seals the
// RESIDENT part and appends every record of a request to the local Pebble log
// in one synced batch, acknowledging with a consistency token.
//
// The loop of one Append: (1) validate every event (schema, ids, size, clock
// drift, residency) without side effects, and split its encoded body into
// GLOBAL, RESIDENT and key-only bytes by the (residency) and (key) field
// options, through a plan precomputed per body type at New (split.go);
// (2) stamp each (UUIDv7 event id, HLC, origin, zone), append the keyed
// email/username hashes to the GLOBAL body, seal the RESIDENT part under the
// identity's data key (creating it, and emitting its zone-wrapped key record
// first, when needed) and encode the records with protowire (wire.go);
// (3) append all records at once, so a request is all or nothing; the log's
// Stamp hook (StampSequence) writes each record's sequence into its bytes.
// An error in (1) or (2) appends nothing.
//
// The writer never mutates the events it is given, holds no goroutines and
// has nothing to close; its concurrency comes from its callers and the log's
// group commit.
package writer
