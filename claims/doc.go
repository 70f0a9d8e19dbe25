// Package claims decides global uniqueness of emails and usernames with
// compare-and-set on a JetStream KV bucket that lives in one designated
// claims domain (the policy's claims region), reachable from every region.
//
// Keys are "<namespace>.<hex HMAC>" (namespace email or username): only the
// keyed hash that is GLOBAL in the schema leaves a zone. A claim is taken
// with KV Create, which fails with "key exists" (10071; 10164 on replicated
// streams) when anyone holds it: held by the same identity it is refreshed
// (idempotent), otherwise it is taken (*TakenError). A claim is released
// only by compare-and-delete on the revision read, so a claim re-taken or
// refreshed meanwhile survives.
//
// Besides the claims, the bucket keeps one "owner.<identity>" record per
// identity: a last-writer-wins register (the schema's merge rule, ordered by
// conflict.Stamp) of the identity's current email and username hashes.
// After a change is durable, the writer Settles it: the register keeps the
// winning value, and whichever value lost (the old one, or the new one if a
// concurrent change with a larger stamp already won) is released. Erasure
// tombstones the register and releases everything it lists.
//
// The Reaper is the garbage collector behind both: in the claims region it
// sweeps the claims at an interval and releases those whose identity never
// appeared, was erased or no longer holds the value, once the read model has
// provably seen everything each claimant node appended after claiming (its
// heartbeats), so a live claim is never released.
package claims
