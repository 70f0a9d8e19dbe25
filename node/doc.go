// Package node runs one regional meridian node: the event log, the key
// store, the writer behind the HTTP API, the shipper that moves the log into
// the region's origin stream, the heartbeat that lets every region measure
// lag, and the projector that turns the region's inbox into its read model.
//
// Start opens the local stores and starts serving writes at once, because a
// region must accept writes even while NATS is away; a bootstrap loop then
// connects, provisions the region's streams (idempotently, from the compiled
// policy) and starts the shipper and projector. Close stops everything in
// reverse order and waits for every goroutine it started.
package node
