package claims_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/claims"
)

// readModel stands in for the projector: which identities are live, their
// current values, and how far each node's log has been applied (by node
// clock). A plain map, not a NATS mock: the reaper only asks these
// questions.
type readModel struct {
	mu      sync.Mutex
	live    map[string]map[claims.Namespace][]byte
	applied map[string]int64 // node -> newest heartbeat sent_at applied
	asked   int
}

func newReadModel() *readModel {
	return &readModel{live: map[string]map[claims.Namespace][]byte{}, applied: map[string]int64{}}
}

func (m *readModel) set(id string, ns claims.Namespace, h []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.live[id] == nil {
		m.live[id] = map[claims.Namespace][]byte{}
	}
	m.live[id][ns] = h
}

func (m *readModel) erase(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.live, id)
}

func (m *readModel) apply(node string, at int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applied[node] = at
}

func (m *readModel) Exists(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked++
	_, ok := m.live[id]
	return ok, nil
}

func (m *readModel) Holds(_ context.Context, id string, ns claims.Namespace, h []byte) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Equal(m.live[id][ns], h), nil
}

func (m *readModel) Settled(_ context.Context, _, node string, at int64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied[node] >= at, nil
}

func TestReaper(t *testing.T) {
	s := startServer(t)
	js := connectJS(t, s.ClientURL())
	clk := newClock()
	euWest := open(t, js, "eu-west-n1", clk.Now, func(c *claims.Config) { c.Region = "eu-west" })
	usEast := open(t, js, "us-east-n1", clk.Now)
	ctx := testCtx(t)
	rm := newReadModel()
	const grace, window = 10 * time.Minute, 10 * time.Second
	r := &claims.Reaper{Claims: usEast, Exists: rm.Exists, Holds: rm.Holds, Settled: rm.Settled, Grace: grace, Window: window}
	sweep := func(want claims.SweepResult) {
		t.Helper()
		got, err := r.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("sweep: %+v\nwant        %+v", got, want)
		}
	}

	crashed, live, stale, erased := newIdentity(), newIdentity(), newIdentity(), newIdentity()
	hCrashed, hLive, hStaleOld, hStaleNew, hErased := newHash(), newHash(), newHash(), newHash(), newHash()
	claim := func(c *claims.Claims, h []byte, id string) {
		t.Helper()
		if err := c.Claim(ctx, claims.Email, h, id); err != nil {
			t.Fatal(err)
		}
	}
	// eu-west claims for an identity whose append never happens (the node
	// crashed between claim and append).
	claim(euWest, hCrashed, crashed)
	// Live: registered, in the read model.
	claim(euWest, hLive, live)
	rm.set(live, claims.Email, hLive)
	// Stale: the identity changed its email and the release of the old
	// value failed; the read model shows the new one.
	claim(usEast, hStaleOld, stale)
	claim(usEast, hStaleNew, stale)
	rm.set(stale, claims.Email, hStaleNew)
	// Erased: the identity is gone from the read model.
	claim(usEast, hErased, erased)

	// Young claims are not even looked up.
	sweep(claims.SweepResult{Seen: 5, Young: 5})
	if rm.asked != 0 {
		t.Fatalf("the read model was asked about young claims")
	}
	clk.Advance(grace)

	// Old enough, but the read model has not applied either node's log
	// past claim time + window: a node down or cut off since it claimed
	// may still ship the append. Nothing is released.
	sweep(claims.SweepResult{Seen: 5, Unsettled: 5})
	// us-east's log is applied far enough, eu-west's is not.
	rm.apply("us-east-n1", testNow+window.Milliseconds())
	sweep(claims.SweepResult{Seen: 5, Unsettled: 2, Live: 1, Released: 2})
	ownerOf(t, usEast, claims.Email, hStaleOld, "")
	ownerOf(t, usEast, claims.Email, hErased, "")
	ownerOf(t, usEast, claims.Email, hStaleNew, stale)
	// eu-west catches up: its crashed claim goes, the live one stays.
	rm.apply("eu-west-n1", testNow+window.Milliseconds())
	sweep(claims.SweepResult{Seen: 3, Live: 2, Released: 1})
	ownerOf(t, usEast, claims.Email, hCrashed, "")
	ownerOf(t, usEast, claims.Email, hLive, live)
	ownerOf(t, usEast, claims.Email, hStaleNew, stale)

	// A claim refreshed by another node is judged by that node's log too.
	claim(euWest, hStaleOld, stale) // stale sets its old email again, from eu-west, later
	clk.Advance(grace)
	sweep(claims.SweepResult{Seen: 3, Live: 2, Unsettled: 1})
	rm.apply("eu-west-n1", clk.Now()+window.Milliseconds())
	rm.apply("us-east-n1", clk.Now()+window.Milliseconds())
	rm.set(stale, claims.Email, hStaleOld) // its append arrived and won
	sweep(claims.SweepResult{Seen: 3, Live: 2, Released: 1})
	ownerOf(t, usEast, claims.Email, hStaleNew, "")
	ownerOf(t, usEast, claims.Email, hStaleOld, stale)
}

// A claim re-taken between the sweep's read and its release survives: the
// release is a compare-and-delete on the revision the sweep read.
func TestReaperCompareAndDelete(t *testing.T) {
	s := startServer(t)
	clk := newClock()
	c := open(t, connectJS(t, s.ClientURL()), "us-east-n1", clk.Now)
	ctx := testCtx(t)
	id := newIdentity()
	h := newHash()
	if err := c.Claim(ctx, claims.Email, h, id); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	r := &claims.Reaper{
		Claims: c, Grace: time.Minute,
		Exists: func(ctx context.Context, got string) (bool, error) {
			// The identity's writer retries its registration right now.
			if err := c.Claim(ctx, claims.Email, h, got); err != nil {
				return false, err
			}
			return false, nil
		},
	}
	res, err := r.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 1 || res.Released != 0 {
		t.Fatalf("sweep %+v; want the changed claim kept", res)
	}
	ownerOf(t, c, claims.Email, h, id)
}

func TestReaperRun(t *testing.T) {
	s := startServer(t)
	clk := newClock()
	c := open(t, connectJS(t, s.ClientURL()), "us-east-n1", clk.Now)
	ctx := testCtx(t)
	h := newHash()
	if err := c.Claim(ctx, claims.Email, h, newIdentity()); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	results := make(chan claims.SweepResult, 16)
	r := &claims.Reaper{
		Claims: c, Grace: time.Minute, Interval: 10 * time.Millisecond,
		Exists: func(context.Context, string) (bool, error) { return false, nil },
		Observe: func(res claims.SweepResult, err error) {
			if err != nil {
				t.Errorf("sweep: %v", err)
			}
			select {
			case results <- res:
			default:
			}
		},
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	deadline := time.After(10 * time.Second)
	for released := false; !released; {
		select {
		case res := <-results:
			released = res.Released == 1
		case <-deadline:
			t.Fatal("Run did not release the claim within 10s")
		}
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
	ownerOf(t, c, claims.Email, h, "")

	if err := (&claims.Reaper{Claims: c}).Run(ctx); !errors.Is(err, claims.ErrInvalid) ||
		!strings.Contains(err.Error(), "Reaper.Exists") || !strings.Contains(err.Error(), "Reaper.Grace") {
		t.Fatalf("Run without Exists and Grace: %v", err)
	}
}
