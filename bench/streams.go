package bench

import (
	"context"
	"fmt"
	"strings"
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

// benchDuplicateWindow replaces the deployment's duplicate window
// (region.DefaultDuplicateWindow, 2 minutes) on every stream of the
// benchmark: origins, inboxes and its own. A stream keeps one entry per
// message id for the window (JetStream's duplicate tracking, ~150 bytes
// each), so with 2 minutes the whole of a run of any --events stays in
// memory and peak_rss_mb grows with --events; with a window well under
// the length of one step it is bounded by rate × window, as in a
// long-running deployment. Nothing in the benchmark re-sends after more
// than a few milliseconds, so no duplicate it relies on is missed.
const benchDuplicateWindow = 10 * time.Second

// streamLike returns the deployment's origin stream config of a region,
// renamed, with its own subjects (none for a sourcing stream) and the
// benchmark's duplicate window.
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
	cfg.Duplicates = benchDuplicateWindow
	return cfg, nil
}

// boundDuplicates sets the benchmark's duplicate window on a provisioned
// stream of the deployment. The nodes provision only when they start, and
// their source watchdog updates a stream from its current config, so the
// setting stays for the run.
func boundDuplicates(ctx context.Context, js jetstream.JetStream, name string) error {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("bench: stream %s: %w", name, err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Duplicates == benchDuplicateWindow {
		return nil
	}
	cfg.Duplicates = benchDuplicateWindow
	if cfg.MaxAge > 0 && cfg.MaxAge < cfg.Duplicates {
		cfg.Duplicates = cfg.MaxAge
	}
	meta := map[string]string{}
	for k, v := range cfg.Metadata {
		if !strings.HasPrefix(k, "_nats.") { // the server's own, derived again
			meta[k] = v
		}
	}
	cfg.Metadata = meta
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("bench: duplicate window of %s: %w", name, err)
	}
	return nil
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
