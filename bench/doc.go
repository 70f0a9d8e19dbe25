// Package bench measures the meridian backbone next to the raw NATS and
// Pebble operations beneath it, in one process and one run, so that every
// figure reads as a ratio to its own ceiling on the machine that ran it
// (`meridian bench`, issue 5).
//
// Run (run.go) starts the embedded three-region topology (cluster.Start)
// in a fresh temporary directory and runs each backbone measurement beside
// its ceiling, interleaved repetition by repetition so that noise from a
// shared machine falls on both alike: the writer's synced appends against
// raw Pebble synced commits and the bare log (append.go, scratch.go,
// events.go); the shipper against raw async publishes with a message id
// (ship.go, streams.go); eu-west → eu-central end to end against raw
// cross-domain sourcing, in throughput and at a paced rate for latency,
// each split into stages (e2e.go, sourcing.go, pace.go); a rebuild of
// eu-central's read model against a raw ordered consumption of its inbox,
// then identity reads over the live model (get.go). Each measurement
// runs once to warm up, then Reps times; every figure is the median, and
// the process's CPU time per operation is kept beside each rate
// (cpu_unix.go). Peak memory comes from the kernel (proc_*.go). Everything
// is closed and the directory removed when Run returns.
package bench
