package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/projector"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

// natsGaveUpAfter is how long a source must have been silent for NATS to
// have given up on it for a while: its health check runs every 10 s and
// re-creates a source silent for more than 10 s, so after 20 s of silence
// it has sent that request; the cut swallowed it, and NATS waits 30 s for
// the answer and then 10 s more before trying again (nats-server 2.15
// stream.go: sourceHealthCheckInterval, srcConsumerWaitTime,
// calculateRetryBackoff).
const natsGaveUpAfter = 21 * time.Second

// TestWatchdogReestablishesStalledSource cuts us-east's link until NATS
// has given up on eu-west's sources of us-east (its next attempt is at
// least 30 s away), restores it, and checks that eu-west's watchdog
// re-establishes those sources and that what us-east wrote during the cut
// arrives well before NATS would have fetched it.
func TestWatchdogReestablishesStalledSource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("MERIDIAN_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	began := time.Now()
	c, err := cluster.Start(ctx, cluster.Config{Dir: t.TempDir(), SourceStallAfter: 2 * time.Second, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	t.Logf("cluster live in %v", time.Since(began).Round(time.Millisecond))
	us, eu := c.Node(region.DevUSEast), c.Node(region.DevEUWest)
	if n := eu.Status().SourceReestablished[region.DevUSEast]; n != 0 {
		t.Fatalf("eu-west re-established its us-east sources %d times before any fault", n)
	}

	c.Embedded.Link(region.DevUSEast).Cut()
	cutAt := time.Now()
	id := uuid.NewString()
	evID, _ := uuid.NewV7()
	created := &meridianv1.Event{EventId: evID.String(), IdentityId: id, HomeRegion: region.DevUSEast,
		Body: &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{
			HomeRegion: region.DevUSEast, Traits: &meridianv1.Traits{Name: ptr("Watchdog")},
		}}}
	if _, err := us.Writer().Append(ctx, created); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, ctx, 60*time.Second, "NATS gives up on eu-west's sources of us-east", func() (bool, string) {
		l, ok := link(eu.Projector(), region.DevUSEast)
		if !ok || len(l.Sources) == 0 {
			return false, fmt.Sprintf("no link: %+v", l)
		}
		for _, s := range l.Sources {
			if s.Active < natsGaveUpAfter {
				return false, fmt.Sprintf("source %s last heard %v ago (link %+v)", s.Filter, s.Active, l)
			}
		}
		return !l.Reachable, fmt.Sprintf("us-east reachable during the cut: %+v", l)
	})
	if n := eu.Status().SourceReestablished[region.DevUSEast]; n != 0 {
		t.Fatalf("eu-west re-established the sources of an unreachable origin (%d times)", n)
	}

	c.Embedded.Link(region.DevUSEast).Restore()
	restoredAt := time.Now()
	t.Logf("link cut for %v", restoredAt.Sub(cutAt).Round(time.Millisecond))
	// NATS alone would not fetch anything for at least 30 s more.
	deadline := 20 * time.Second
	waitUntil(t, ctx, deadline, "eu-west applies what us-east wrote during the cut", func() (bool, string) {
		_, err := eu.Projector().Get(ctx, id)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	t.Logf("replicated %v after the restore", time.Since(restoredAt).Round(time.Millisecond))
	if n := eu.Status().SourceReestablished[region.DevUSEast]; n == 0 {
		t.Errorf("eu-west's watchdog did not count re-establishing its us-east sources")
	}
	// Live again: fresh heartbeats from us-east, with events lag known.
	waitUntil(t, ctx, deadline, "eu-west's lag from us-east is known and small", func() (bool, string) {
		for _, o := range eu.Status().Origins {
			if o.Region == region.DevUSEast {
				ok := o.LagEvents != nil && o.LagSeconds != nil && *o.LagSeconds < 2
				return ok, fmt.Sprintf("lag events %v, seconds %v, poll error %q", o.LagEvents, o.LagSeconds, o.PollError)
			}
		}
		return false, "no us-east origin in eu-west's status"
	})
	// us-east, cut off from both others, re-established its sources too.
	waitUntil(t, ctx, deadline, "us-east re-establishes its sources of both eu regions", func() (bool, string) {
		n := us.Status().SourceReestablished
		return n[region.DevEUWest] > 0 && n[region.DevEUCentral] > 0, fmt.Sprintf("re-established %v", n)
	})
}

func link(p *projector.Projector, origin string) (projector.OriginLink, bool) {
	for _, l := range p.OriginLinks() {
		if l.Region == origin {
			return l, true
		}
	}
	return projector.OriginLink{}, false
}

// waitUntil polls cond every 50 ms until it holds, failing the test after
// timeout (or when ctx ends) with cond's account of what is missing.
func waitUntil(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		select {
		case <-timer.C:
			t.Fatalf("%s: not within %v: %s", what, timeout, why)
		case <-ctx.Done():
			t.Fatalf("%s: %v: %s", what, ctx.Err(), why)
		case <-tick.C:
		}
	}
}

func ptr[T any](v T) *T { return &v }
