// Package projector turns a region's inbox stream into the region's read
// model and answers queries from it.
//
// The loop (projector.go, pump.go, engine.go): an ordered consumer reads the
// inbox from the stored inbox sequence + 1; runs of whatever messages are
// waiting (up to BatchSize) are applied as one batch. A batch is split by
// identity over ApplyWorkers goroutines, each feeding its messages in inbox
// order through the pure apply step (apply.go: decode (eventcodec.go),
// check subject, part and zone, unwrap key records, unseal RESIDENT parts,
// merge with conflict.Merger.ApplyInPlace) against the states it owns for
// the batch (batch.go, loaded from the state cache or the store), then
// encoding and sealing the states it changed (statecodec.go, atrest.go)
// in key order (sorted.go). The batch stores the data keys that arrived in
// it (one synced write), then writes the states, the index changes,
// per-origin positions and heartbeats, quarantine records and the inbox
// sequence it reached as ONE Pebble batch (store.go), commits it, destroys
// the keys of identities it erased, and wakes readers waiting for a
// consistency token (a channel closed per commit). A rebuild commits every
// few batches instead: nobody reads its model meanwhile, and an identity
// updated in many batches is then encoded and sealed once per commit.
//
// Exactly once. State and position are written atomically, so after any
// crash the model holds exactly the effects of the messages up to its
// stored sequence, and the restart resumes at the next one. Batches commit
// without fsync: Pebble recovers its WAL as a prefix of whole batches, so a
// crash can only lose a tail of batches, states and positions together,
// and those messages are applied again from the stream (which keeps them).
// The two effects outside the model are ordered around that: data keys
// from key records are stored (synced, idempotently, one write per batch)
// before the batch that may need them commits; an erasure's batch is
// synced, with a marker, before the keys are destroyed, and a restart
// finishes any marked destruction.
//
// Residency at rest. An identity's RESIDENT state is stored sealed
// (AES-256-GCM) under its data key from the region's key store
// (atrest.go); erasure destroys the keys, which makes every copy of it
// unreadable, and drops the state, the index entries and later events.
// Messages that can never apply are quarantined (recorded, counted,
// skipped), never retried forever. RESIDENT data of another zone is never
// decrypted or stored.
//
// The query side (query.go, http.go) reads the model directly: identities
// (resident fields unsealed on read where held), email lookup by keyed
// hash, session validity, read-your-writes waits, status and lag per origin
// (lag.go, status.go). Rebuild (rebuild.go) replays a stream into a fresh
// directory through the same engine; BenchRawConsume measures its ceiling.
package projector
