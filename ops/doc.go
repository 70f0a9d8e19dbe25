// Package ops is the operator toolkit behind `meridian replay`, `reseed`,
// `verify`, `erase` and `status`: the on-call engineer's side of meridian.
//
// Each command is one function taking a Config and returning a report
// (what was done, what was found, what is lost), so that the binary only
// parses flags and prints:
//
//   - Replay rebuilds a region's read model from its inbox stream into a
//     workspace (from the start, a stream sequence, or as of a time),
//     verifies it against the live model where both cover the same
//     events, and swaps it in: into a running node, which catches it up
//     to its live position and switches without stopping (node/swap.go,
//     projector/swap.go), or into a stopped node's data directory.
//   - ReseedLog rebuilds a lost event log from the region's origin stream;
//     ReseedStreams recreates a lost JetStream store's streams and re-fills
//     them from the log and the other regions' inboxes.
//   - Verify compares the regions' read models by Merkle-style digests
//     (package inspect) and audits every stream, log and model for
//     resident data outside its zone.
//   - Erase appends IdentityErased and drives the erasure to completion
//     everywhere: tombstones, destroyed keys, redacted log records and
//     securely deleted key messages.
//   - Status gathers every node's /v1/status into one view with
//     thresholds.
//
// Long operations report Progress through a callback and end with their
// context; interrupted work (a replay) resumes where it stopped.
package ops
