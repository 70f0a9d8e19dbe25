package tests

import (
	"fmt"
	"testing"
	"time"

	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/region"
)

// TestExactlyOnceAcrossRestarts writes to every region while a node (and so
// its shipper), a region's NATS server and the hub restart; afterwards every
// inbox holds each record the policy allows it exactly once, and every
// acknowledged event is in a log.
func TestExactlyOnceAcrossRestarts(t *testing.T) {
	t.Parallel()
	c := startCluster(t, cluster.Config{})
	rj := connectRegions(t, c)
	ctx := testCtx(t, 3*time.Minute)
	wl := &workload{c: c, idents: createIdentities(t, ctx, c, 2)}
	ws := startWriters(t, ctx, c, wl.next)

	ws.grant(40)
	ws.drain(t)

	// A node restart mid-write: its shipper stops with records in flight or
	// not yet shipped and resumes from its checkpoint; the writes sent while
	// it is down (at least the ones granted after it stopped) fail and are
	// retried until it is back.
	ws.grant(30)
	ws.waitAcked(t, euWest, ws.granted(euWest)-25)
	if err := c.StopNode(euWest); err != nil {
		t.Fatal(err)
	}
	ws.grant(10, euWest)
	ws.drain(t, usEast, euCentral)
	if err := c.StartNode(ctx, euWest); err != nil {
		t.Fatal(err)
	}
	ws.drain(t)
	whileDown, _ := ws.w[euWest].failures()
	if whileDown == 0 {
		t.Fatalf("no write to %s failed while its node was down: the restart did not overlap the writes", euWest)
	}

	// A region's NATS server restarts: its node keeps taking writes into
	// its log; the shipper reconnects and the other regions' sources of its
	// origin stream resume.
	if err := c.Embedded.StopRegion(usEast); err != nil {
		t.Fatal(err)
	}
	ws.grant(30)
	ws.drain(t)
	ws.grant(30)
	if err := c.Embedded.StartRegion(ctx, usEast); err != nil {
		t.Fatal(err)
	}
	ws.drain(t)

	// The hub restarts: every region is alone for a while.
	if err := c.Embedded.StopHub(); err != nil {
		t.Fatal(err)
	}
	ws.grant(30)
	ws.drain(t)
	ws.grant(30)
	if err := c.Embedded.StartHub(ctx); err != nil {
		t.Fatal(err)
	}
	ws.drain(t)

	ws.grant(30)
	ws.drain(t)
	ws.stop(t)
	for _, r := range allRegions {
		n, err := ws.w[r].failures()
		if r == euWest {
			n -= whileDown
		}
		if n > 0 {
			t.Errorf("%d writes to %s failed (last: %v); NATS and hub restarts must not stop a region taking writes", n, r, err)
		}
	}

	logs := readLogs(t, c)
	checkAckedLogged(t, logs, ws.all())
	waitExactlyOnce(t, c, rj, logs, convergeTimeout)
	checkOrigins(t, c, rj)
}

// checkOrigins checks that each region's origin stream holds every record
// of its node's log exactly once (a shipper that resumes re-sends at most
// its unacknowledged window, and the duplicate window folds the repeats).
func checkOrigins(t *testing.T, c *cluster.Cluster, rj *regionJS) {
	t.Helper()
	ctx := testCtx(t, convergeTimeout)
	for _, r := range allRegions {
		stream := region.OriginStream(r)
		var msgs []record
		var want map[string]record
		eventually(t, convergeTimeout, stream+" holds its log", func() (bool, string) {
			want = map[string]record{}
			for _, rec := range readLog(t, c.Node(r)) {
				want[rec.ID] = rec
			}
			var err error
			if msgs, err = rj.read(ctx, r, stream); err != nil {
				return false, err.Error()
			}
			// Records appended since the log was read (heartbeats) may be
			// missing; everything else must be there.
			if k, sample := missingIDs(want, idCounts(msgs), 5); k > 0 {
				return false, fmt.Sprintf("misses %d of %d records, e.g. %v", k, len(want), sample)
			}
			return true, ""
		})
		after := map[string]record{}
		for _, rec := range readLog(t, c.Node(r)) {
			after[rec.ID] = rec
		}
		checkStream(t, c, r, stream, msgs, after)
	}
}
