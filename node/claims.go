package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/claims"
	"github.com/meridian-id/meridian/projector"
	"github.com/meridian-id/meridian/writer"
)

// Uniqueness claims. When the policy names a claims region, every node
// reaches the claims bucket in that region's JetStream domain through its
// own NATS connection (jetstream.NewWithDomain), and its writer claims each
// email and username there before appending. The claims region's node
// creates the bucket and runs the reaper, which asks this node's read model
// (the projector: GLOBAL parts, hashes included, reach every region) which
// identities are live, what they hold and how far each origin's log has
// been applied (heartbeats).

// Defaults for zero-valued ClaimsConfig fields.
const (
	DefaultClaimsGrace        = 10 * time.Minute
	DefaultClaimsReapInterval = time.Minute
)

// ClaimsConfig tunes the uniqueness claims (used only when the policy names
// a claims region).
type ClaimsConfig struct {
	// Timeout bounds each claim operation (default claims.DefaultTimeout):
	// a registration fails with 503 claims_unavailable after it when the
	// claims region does not answer.
	Timeout time.Duration
	// Window bounds the time between claiming and appending
	// (writer.Config.ClaimWindow, default writer.DefaultClaimWindow). Every
	// node of a deployment must use the same value.
	Window time.Duration
	// Grace is how old a claim must be before the reaper looks at it
	// (default 10 min).
	Grace time.Duration
	// ReapInterval is how often the claims region's node sweeps (default
	// 1 min; negative: no reaper).
	ReapInterval time.Duration
}

func (c *ClaimsConfig) validate(bad func(field, rule string, args ...any)) {
	if c.Timeout < 0 || c.Window < 0 || c.Grace < 0 {
		bad("Claims", "durations must not be negative")
	}
	if c.Timeout == 0 {
		c.Timeout = claims.DefaultTimeout
	}
	if c.Window == 0 {
		c.Window = writer.DefaultClaimWindow
	}
	if c.Grace == 0 {
		c.Grace = DefaultClaimsGrace
	}
	if c.ReapInterval == 0 {
		c.ReapInterval = DefaultClaimsReapInterval
	}
	if c.Grace < c.Window {
		bad("Claims.Grace", "must be at least Claims.Window (%s), got %s", c.Window, c.Grace)
	}
}

// nodeClaims is the node's part of the claims.
type nodeClaims struct {
	c     *claims.Claims
	owner bool // this node is in the claims region: it creates the bucket and reaps

	mu struct {
		sync.Mutex
		sweeps    uint64
		released  uint64
		last      claims.SweepResult
		lastErr   string
		statusAt  time.Time
		heartbeat map[string]projector.Heartbeat // by origin region, cached
	}
}

// ClaimsMetrics is a snapshot of the node's claims.
type ClaimsMetrics struct {
	Region string // the claims region
	claims.Metrics
	Writer writer.ClaimMetrics
	// Reaper counters (claims region only).
	Sweeps, Reaped uint64
	LastSweep      claims.SweepResult
	LastSweepError string
}

// openClaims prepares the claims client (no I/O: the bucket is bound on
// first use, so the node starts while the claims region is away).
func (n *Node) openClaims() error {
	cr, ok := n.cfg.Policy.ClaimsRegion()
	if !ok {
		return nil
	}
	domain, _ := n.cfg.Policy.Domain(cr)
	js, err := jetstream.NewWithDomain(n.nc, domain)
	if err != nil {
		return fmt.Errorf("node: claims domain %s: %w", domain, err)
	}
	c, err := claims.New(claims.Config{
		JS:           js,
		Bucket:       n.fullPlan.Claims.Bucket,
		ClaimsRegion: cr,
		Region:       n.cfg.Region,
		Node:         n.id,
		Create:       cr == n.cfg.Region,
		Replicas:     n.fullPlan.Options.Replicas,
		Timeout:      n.cfg.Claims.Timeout,
		Now:          n.cfg.Now,
		Logger:       n.cfg.Logger.With("component", "claims"),
	})
	if err != nil {
		return fmt.Errorf("node: claims: %w", err)
	}
	n.claims = &nodeClaims{c: c, owner: cr == n.cfg.Region}
	return nil
}

// claimer is what the writer's Config gets: nil (no uniqueness) without a
// claims region. It is called before openClaims has run, so it adapts the
// node, not the claims client.
func (n *Node) claimer() writer.Claimer {
	cr, ok := n.cfg.Policy.ClaimsRegion()
	if !ok {
		return nil
	}
	return claimAdapter{region: cr, get: func() (*claims.Claims, error) {
		if n.claims == nil {
			return nil, errors.New("node: claims not connected")
		}
		return n.claims.c, nil
	}}
}

// ClaimerFor adapts a claims client to the writer (what every node's writer
// uses; for tools and tests that run a writer of their own).
func ClaimerFor(c *claims.Claims) writer.Claimer {
	return claimAdapter{region: c.Region(), get: func() (*claims.Claims, error) { return c, nil }}
}

// startClaims starts the claims region's reaper (an owned goroutine that
// ends with ctx): it first creates the bucket, retrying, so that the other
// regions can bind to it.
func (n *Node) startClaims(ctx context.Context) {
	nc := n.claims
	if nc == nil || !nc.owner || n.cfg.Claims.ReapInterval < 0 {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		backoff := 100 * time.Millisecond
		for {
			err := nc.c.Ensure(ctx)
			if err == nil {
				break
			}
			n.cfg.Logger.Warn("claims bucket not ready; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		r := n.ClaimsReaper()
		r.Observe = nc.observe
		_ = r.Run(ctx) // configured here: cannot fail validation
	}()
}

// ClaimsReaper returns a reaper over this node's claims and read model with
// the node's settings (nil without a claims region). The claims region's
// node runs one itself; this is for one-off sweeps by operators and tests,
// which may change its fields before use.
func (n *Node) ClaimsReaper() *claims.Reaper {
	if n.claims == nil {
		return nil
	}
	return &claims.Reaper{
		Claims:   n.claims.c,
		Exists:   n.identityLive,
		Holds:    n.identityHolds,
		Settled:  n.originSettled,
		Grace:    n.cfg.Claims.Grace,
		Window:   n.cfg.Claims.Window,
		Interval: n.cfg.Claims.ReapInterval,
		Logger:   n.cfg.Logger.With("component", "claims-reaper"),
	}
}

// identityLive: the identity appeared here and is not erased.
func (n *Node) identityLive(ctx context.Context, id string) (bool, error) {
	_, err := n.proj.Get(ctx, id)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, projector.ErrNotFound), errors.Is(err, projector.ErrErased):
		return false, nil
	}
	return false, err
}

// identityHolds: the identity's merged email or username hash is hash.
func (n *Node) identityHolds(ctx context.Context, id string, ns claims.Namespace, hash []byte) (bool, error) {
	ident, err := n.proj.Get(ctx, id)
	switch {
	case errors.Is(err, projector.ErrNotFound), errors.Is(err, projector.ErrErased):
		return false, nil
	case err != nil:
		return false, err
	}
	t := ident.GetTraits()
	switch ns {
	case claims.Email:
		return bytes.Equal(t.GetEmailHash(), hash), nil
	case claims.Username:
		return bytes.Equal(t.GetUsernameHash(), hash), nil
	}
	return false, fmt.Errorf("node: unknown claim namespace %q", ns)
}

// originSettled: the read model has applied a heartbeat of node (in region)
// sent at or after atMs; since a node's log is applied in order, everything
// it appended before that heartbeat is applied too. The projector keeps the
// newest heartbeat per origin region, so with several nodes in a region
// this can be false for a while (never wrongly true). The status snapshot
// is cached for a second: a stale one only says "not yet".
func (n *Node) originSettled(_ context.Context, region, node string, atMs int64) (bool, error) {
	nc := n.claims
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if time.Since(nc.mu.statusAt) > time.Second {
		hb := map[string]projector.Heartbeat{}
		for _, o := range n.proj.Status().Origins {
			if o.Heartbeat != nil {
				hb[o.Region] = *o.Heartbeat
			}
		}
		nc.mu.heartbeat, nc.mu.statusAt = hb, time.Now()
	}
	hb, ok := nc.mu.heartbeat[region]
	return ok && hb.Node == node && hb.SentAtUnixMs >= atMs, nil
}

func (nc *nodeClaims) observe(res claims.SweepResult, err error) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.mu.sweeps++
	nc.mu.released += uint64(res.Released)
	nc.mu.last = res
	nc.mu.lastErr = ""
	if err != nil {
		nc.mu.lastErr = err.Error()
	}
}

// ClaimsMetrics returns the claims' counters and latencies; ok is false
// without a claims region.
func (n *Node) ClaimsMetrics() (m ClaimsMetrics, ok bool) {
	nc := n.claims
	if nc == nil {
		return m, false
	}
	m.Region = nc.c.Region()
	m.Metrics = nc.c.Metrics()
	m.Writer = n.writer.ClaimMetrics()
	nc.mu.Lock()
	m.Sweeps, m.Reaped, m.LastSweep, m.LastSweepError = nc.mu.sweeps, nc.mu.released, nc.mu.last, nc.mu.lastErr
	nc.mu.Unlock()
	return m, true
}

// claimAdapter is writer.Claimer over a claims client: it converts the
// types and turns claims.ErrTaken into writer.ErrClaimTaken.
type claimAdapter struct {
	region string
	get    func() (*claims.Claims, error)
}

func (a claimAdapter) client() (*claims.Claims, error) { return a.get() }

func (a claimAdapter) Claim(ctx context.Context, ns writer.ClaimNamespace, hash []byte, id string) (writer.ClaimTicket, error) {
	c, err := a.client()
	if err != nil {
		return writer.ClaimTicket{}, err
	}
	t, err := c.Take(ctx, claims.Namespace(ns), hash, id)
	if errors.Is(err, claims.ErrTaken) {
		err = fmt.Errorf("%w: %w", writer.ErrClaimTaken, err)
	}
	return writer.ClaimTicket(t), err
}

func (a claimAdapter) Abort(ctx context.Context, ns writer.ClaimNamespace, hash []byte, t writer.ClaimTicket) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	return c.Abort(ctx, claims.Namespace(ns), hash, claims.Ticket(t))
}

func (a claimAdapter) Settle(ctx context.Context, id string, changes ...writer.ClaimChange) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	out := make([]claims.Change, len(changes))
	for i, ch := range changes {
		out[i] = claims.Change{Namespace: claims.Namespace(ch.Namespace), Hash: ch.Hash, Stamp: ch.Stamp, Creates: ch.Creates}
	}
	return c.Settle(ctx, id, out...)
}

func (a claimAdapter) ReleaseAll(ctx context.Context, id string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	return c.ReleaseAll(ctx, id)
}

func (a claimAdapter) Region() string { return a.region }
