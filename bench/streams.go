package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/region"
)

// Streams of the benchmark's own, beside the deployment's. They copy the
// settings of the deployment's origin stream (storage, limits, duplicate
// window), so that raw and backbone figures share a stream configuration.
const (
	shipRegion      = "bench"            // route region of the shipped records: subjects meridian.bench.>
	shipStream      = "bench-ship"       // the shipper's target
	publishStream   = "bench-publish"    // raw publishes with a message id
	publishSubject  = "benchpub.msg"     //
	sourceOrigin    = "bench-src-origin" // raw sourcing: published here (eu-west) ...
	sourceInbox     = "bench-src-inbox"  // ... and sourced here (eu-central)
	sourceSubjects  = "benchsrc.>"
	sourcingSubject = "benchsrc.msg"
)

// streamLike returns the deployment's origin stream config of a region,
// renamed, with its own subjects (none for a sourcing stream).
func streamLike(plan *region.Plan, regionName, name string, subjects ...string) (jetstream.StreamConfig, error) {
	rp, ok := plan.Region(regionName)
	if !ok {
		return jetstream.StreamConfig{}, fmt.Errorf("bench: region %s is not in the plan", regionName)
	}
	cfg := rp.Origin
	cfg.Name = name
	cfg.Subjects = subjects
	cfg.Description = "meridian bench"
	cfg.Metadata = nil
	return cfg, nil
}

func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bench: create stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// deleteStream removes a benchmark stream once its measurement is done, so
// that its messages and duplicate-window entries do not weigh on the
// measurements after it (and on peak_rss_mb).
func deleteStream(js jetstream.JetStream, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, name); err != nil {
		return fmt.Errorf("bench: delete stream %s: %w", name, err)
	}
	return nil
}
