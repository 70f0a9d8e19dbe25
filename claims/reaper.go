package claims

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// DefaultReapInterval is how often Run sweeps when Reaper.Interval is 0.
const DefaultReapInterval = time.Minute

// Reaper releases claims that no identity holds: taken by a writer that
// crashed before its append, by an append that lost a last-writer-wins race,
// an old value whose release failed, the claims of an erased identity. It
// runs in the claims region, whose read model (the projector) answers
// Exists and Holds for every identity: the GLOBAL part of each event, with
// the email and username hashes, replicates everywhere.
//
// A claim is released only when all of these hold:
//   - every node that took or refreshed it did so at least Grace ago;
//   - the read model has applied each such node's log past the time it
//     claimed plus Window (Settled); the writer appends within Window of
//     claiming or gives the claim up, so an append that relies on the claim
//     is in the read model by then, even if its node was down or cut off for
//     hours in between;
//   - Exists reports the identity not live (never appeared, or erased), or
//     Holds reports that it does not hold this value now;
//   - the claim is still at the revision the sweep read (compare-and-delete),
//     so a claim re-taken or refreshed meanwhile is not released.
//
// It never releases a live claim as long as Exists and Holds answer from a
// read model that has applied what Settled says; when Settled is nil, Grace
// alone must exceed the worst replication delay, which a partition can
// break: set Settled in production.
type Reaper struct {
	Claims *Claims
	// Exists reports whether the identity is live in the read model: it
	// appeared and is not erased. Required.
	Exists func(ctx context.Context, identityID string) (bool, error)
	// Holds reports whether a live identity's current value in ns has this
	// hash. Optional: without it, claims of live identities are kept (an
	// old value whose release failed stays claimed).
	Holds func(ctx context.Context, identityID string, ns Namespace, hash []byte) (bool, error)
	// Settled reports whether the read model has applied everything node
	// (of region) appended up to atMs on its clock, typically from the
	// node's heartbeats. Optional; see the type's comment.
	Settled func(ctx context.Context, region, node string, atMs int64) (bool, error)
	// Grace is how old a claim must be before it is looked at. Required.
	Grace time.Duration
	// Window is the writer's bound from claiming to appending
	// (writer.Config.ClaimWindow): Settled is asked about claim time plus
	// Window.
	Window time.Duration
	// Interval between sweeps in Run (default DefaultReapInterval).
	Interval time.Duration
	// SweepTimeout bounds one sweep (default: Interval).
	SweepTimeout time.Duration
	// Logger (default: the Claims' logger).
	Logger *slog.Logger
	// Observe, if set, receives each sweep's result in Run (for metrics).
	Observe func(SweepResult, error)
}

// SweepResult counts what one sweep did with the claims it saw.
type SweepResult struct {
	Seen      int // claims in the bucket
	Young     int // kept: claimed less than Grace ago
	Unsettled int // kept: the read model has not seen a claimant's log far enough
	Live      int // kept: the identity holds the value
	Released  int // released
	Changed   int // not released: changed since the sweep read it
	Errors    int // kept: a lookup or the release failed (see the error)
}

func (r *Reaper) validate() error {
	var errs []error
	bad := func(field, rule string) {
		errs = append(errs, fmt.Errorf("%w: Reaper.%s: %s", ErrInvalid, field, rule))
	}
	if r.Claims == nil {
		bad("Claims", "required")
	}
	if r.Exists == nil {
		bad("Exists", "required: the read model's answer to whether an identity is live")
	}
	if r.Grace <= 0 {
		bad("Grace", "required: a positive duration")
	}
	if r.Window < 0 {
		bad("Window", "must not be negative")
	}
	if r.Interval < 0 || r.SweepTimeout < 0 {
		bad("Interval", "must not be negative")
	}
	return errors.Join(errs...)
}

func (r *Reaper) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return r.Claims.cfg.Logger
}

// Sweep looks at every claim once and releases the ones the rules allow.
// Lookup failures keep the claim (and are joined into the error); the sweep
// goes on with the others.
func (r *Reaper) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	if err := r.validate(); err != nil {
		return res, err
	}
	c := r.Claims
	now := c.cfg.Now()
	grace, window := r.Grace.Milliseconds(), r.Window.Milliseconds()
	var errs []error
	fail := func(err error) {
		res.Errors++
		if len(errs) < 10 {
			errs = append(errs, err)
		}
	}
	err := c.Records(ctx, func(rec Record) error {
		res.Seen++
		last := rec.ClaimedAt
		for _, cl := range rec.Claimants {
			last = max(last, cl.At)
		}
		if now-last < grace {
			res.Young++
			return nil
		}
		if r.Settled != nil {
			for _, cl := range rec.Claimants {
				ok, err := r.Settled(ctx, cl.Region, cl.Node, cl.At+window)
				if err != nil {
					fail(fmt.Errorf("claims: reaper: settled %s/%s: %w", cl.Region, cl.Node, err))
					return nil
				}
				if !ok {
					res.Unsettled++
					return nil
				}
			}
		}
		live, err := r.Exists(ctx, rec.IdentityID)
		if err != nil {
			fail(fmt.Errorf("claims: reaper: exists %s: %w", rec.IdentityID, err))
			return nil
		}
		if live && r.Holds != nil {
			holds, err := r.Holds(ctx, rec.IdentityID, rec.Namespace, rec.Hash)
			if err != nil {
				fail(fmt.Errorf("claims: reaper: holds %s: %w", rec.IdentityID, err))
				return nil
			}
			live = holds
		}
		if live {
			res.Live++
			return nil
		}
		switch err := c.ReleaseRevision(ctx, rec.Namespace, rec.Hash, rec.Revision); {
		case err == nil:
			res.Released++
			r.logger().Info("claims: reaper released a claim", "namespace", rec.Namespace, "identity", rec.IdentityID,
				"claimed_at_unix_ms", rec.ClaimedAt, "node", rec.Node)
		case errors.Is(err, ErrNotOwner):
			res.Changed++
		default:
			fail(err)
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// Run sweeps at Interval until ctx ends; it returns nil then, or the
// configuration error at once.
func (r *Reaper) Run(ctx context.Context) error {
	if err := r.validate(); err != nil {
		return err
	}
	interval := r.Interval
	if interval == 0 {
		interval = DefaultReapInterval
	}
	timeout := r.SweepTimeout
	if timeout == 0 {
		timeout = interval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, timeout)
		res, err := r.Sweep(sctx)
		cancel()
		if r.Observe != nil {
			r.Observe(res, err)
		}
		if err != nil && ctx.Err() == nil {
			r.logger().Warn("claims: reaper sweep incomplete", "err", err, "result", fmt.Sprintf("%+v", res))
		} else if res.Released > 0 {
			r.logger().Info("claims: reaper sweep", "result", fmt.Sprintf("%+v", res))
		}
	}
}
