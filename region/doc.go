// Package region owns regions, residency zones and the policy that says
// where data may live, and turns that policy into NATS configuration.
//
// The loop is policy → plan → provision:
//
//   - Policy. A meridianv1.Policy (protojson, schema-checked) declares each
//     region with its NATS URL and JetStream domain, the zones that group
//     the regions, and the claims region. NewPolicy validates it and reports
//     every broken rule as a *PolicyError naming the field path and the rule.
//   - Plan. Compile is the one place that spells names: subjects
//     meridian.<region>.<zone>.<type>, streams origin-<region> and
//     inbox-<region>, one inbox source per allowed (origin, filter) pair
//     naming the origin's domain, and the NATS permissions of each region's
//     credentials. It is pure, and its text form is golden-tested.
//   - Provision. Provision converges running JetStream domains to a plan,
//     idempotently, reporting what it created, updated or left alone. A
//     region leaving a zone is refused unless the operator allows it; then
//     the region's inbox copies of that zone's resident data are purged,
//     because storage filters only keep new data out.
//
// Data of the global zone goes everywhere; resident data stays in its zone.
// Filters run on the origin side, so disallowed data never crosses the wire
// into a region's stream; permissions stop live subscribers from seeing it.
//
// The embedded multi-region topology for `meridian dev` and tests lives in
// this package too (embedded*.go, linkproxy*.go); nothing here assumes it.
package region
