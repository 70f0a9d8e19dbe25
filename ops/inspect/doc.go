// Package inspect reads one region's stores for operators, without changing
// them (redaction aside): Merkle-style digests of a read model (so that two
// regions can be compared without shipping their data), the structural
// residency audit of a log, a read model or a stream message, and the data
// key records an erasure must redact.
//
// It is the part of the operator toolkit that runs where the stores are:
// inside a node (its admin HTTP routes) or offline on a stopped node's data
// directory. Package ops drives it across regions.
package inspect
