package claims

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// maxAttempts bounds the compare-and-set retries of one operation; each
// retry means another writer changed the same key in between, which is
// rare outside deliberate races.
const maxAttempts = 8

var errContended = errors.New("key changed on every attempt")

// Claims takes, refreshes and releases uniqueness claims in the claims
// bucket. It is safe for concurrent use and holds no goroutines.
type Claims struct {
	cfg Config
	// bind is a one-slot semaphore for binding the bucket, so that waiting
	// for it respects each caller's context.
	bind  chan struct{}
	kv    atomic.Pointer[jetstream.KeyValue]
	stats stats
}

// Ticket is what Take returns: the claim's revision after the call and
// whether the call created it (false: the identity already held it and the
// call refreshed it).
type Ticket struct {
	Revision uint64
	Created  bool
}

// New checks cfg and returns Claims without touching the network: the bucket
// is bound (or created, with Config.Create) on first use, so that a node
// starts while the claims region is away.
func New(cfg Config) (*Claims, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Claims{cfg: cfg, bind: make(chan struct{}, 1)}, nil
}

// Open is New followed by binding (or creating) the bucket within ctx and
// Config.Timeout.
func Open(ctx context.Context, cfg Config) (*Claims, error) {
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Ensure(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Ensure binds the bucket, creating it if missing when Config.Create is set.
// Creation is idempotent: a bucket that exists (from another node or an
// earlier run) is bound as it is.
func (c *Claims) Ensure(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	_, err := c.bucket(ctx)
	return err
}

// Region is the claims region, as named in errors.
func (c *Claims) Region() string { return c.cfg.ClaimsRegion }

func (c *Claims) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	if kv := c.kv.Load(); kv != nil {
		return *kv, nil
	}
	select {
	case c.bind <- struct{}{}:
	case <-ctx.Done():
		return nil, c.unavailable("bind bucket "+c.cfg.Bucket, ctx.Err())
	}
	defer func() { <-c.bind }()
	if kv := c.kv.Load(); kv != nil {
		return *kv, nil
	}
	kv, err := c.openBucket(ctx)
	if err != nil {
		return nil, c.unavailable("bind bucket "+c.cfg.Bucket, err)
	}
	c.kv.Store(&kv)
	return kv, nil
}

func (c *Claims) openBucket(ctx context.Context) (jetstream.KeyValue, error) {
	if !c.cfg.Create {
		kv, err := c.cfg.JS.KeyValue(ctx, c.cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("bucket %s not created yet by the claims region: %w", c.cfg.Bucket, err)
		}
		return kv, err
	}
	// The bucket's stream is made here rather than by CreateKeyValue, to
	// turn direct gets off: on a replicated bucket a direct get may be
	// answered by a follower that has not applied the latest write, and a
	// claim decided on a stale read would only retry, but the owner of a
	// value must be read from the leader to be trusted at once.
	_, err := c.cfg.JS.CreateStream(ctx, bucketStream(c.cfg.Bucket, c.cfg.Replicas))
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Created with other settings (an operator's, or an older version's):
		// use it as it is rather than fight over it.
		c.cfg.Logger.Warn("claims bucket exists with other settings; binding it", "bucket", c.cfg.Bucket)
	} else if err != nil {
		return nil, err
	}
	return c.cfg.JS.KeyValue(ctx, c.cfg.Bucket)
}

// bucketStream is the stream of a KV bucket as jetstream.CreateKeyValue
// makes it (History 1, file storage), without direct gets.
func bucketStream(bucket string, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              "KV_" + bucket,
		Description:       "meridian uniqueness claims (email and username HMACs) and per-identity owner registers",
		Subjects:          []string{"$KV." + bucket + ".>"},
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		Discard:           jetstream.DiscardNew,
		AllowDirect:       false,
	}
}

// Claim takes the value (ns, hash) for identityID, or refreshes it if the
// identity already holds it. *TakenError when another identity holds it,
// *UnavailableError when the claims region does not answer within
// Config.Timeout.
func (c *Claims) Claim(ctx context.Context, ns Namespace, hash []byte, identityID string) error {
	_, err := c.Take(ctx, ns, hash, identityID)
	return err
}

// Take is Claim returning the Ticket that Abort needs.
func (c *Claims) Take(ctx context.Context, ns Namespace, hash []byte, identityID string) (Ticket, error) {
	start := time.Now()
	defer func() { c.stats.claimLatency.observe(time.Since(start)) }()
	key, err := claimKey(ns, hash)
	if err != nil {
		return Ticket{}, err
	}
	if err := checkIdentity(identityID); err != nil {
		return Ticket{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	kv, err := c.bucket(ctx)
	if err != nil {
		return Ticket{}, err
	}
	now := c.cfg.Now()
	for range maxAttempts {
		rec := Record{IdentityID: identityID, Region: c.cfg.Region, Node: c.cfg.Node, ClaimedAt: now}
		rec.touch(c.cfg.Region, c.cfg.Node, now)
		rev, err := kv.Create(ctx, key, rec.encode())
		if err == nil {
			c.stats.created.Add(1)
			return Ticket{Revision: rev, Created: true}, nil
		}
		if !IsKeyExists(err) {
			return Ticket{}, c.unavailable("create "+string(ns)+" claim", err)
		}
		cur, err := c.get(ctx, kv, key)
		if errors.Is(err, ErrNotFound) {
			continue // released in between: try to create it again
		}
		if err != nil {
			return Ticket{}, err
		}
		if cur.IdentityID != identityID {
			c.stats.taken.Add(1)
			return Ticket{}, &TakenError{Namespace: ns}
		}
		// Ours already (a retry, or a value set again): refresh it by
		// compare-and-set, so that a concurrent release of the old
		// revision fails instead of dropping the claim this append needs,
		// and so that the reaper waits for this node's log too.
		cur.touch(c.cfg.Region, c.cfg.Node, now)
		rev, err = kv.Update(ctx, key, cur.encode(), cur.Revision)
		if err == nil {
			c.stats.refreshed.Add(1)
			return Ticket{Revision: rev}, nil
		}
		if !IsKeyExists(err) {
			return Ticket{}, c.unavailable("refresh "+string(ns)+" claim", err)
		}
	}
	return Ticket{}, c.unavailable("claim "+string(ns), errContended)
}

// Owner returns the claim on (ns, hash); ErrNotFound when nobody holds it.
func (c *Claims) Owner(ctx context.Context, ns Namespace, hash []byte) (Record, error) {
	key, err := claimKey(ns, hash)
	if err != nil {
		return Record{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	kv, err := c.bucket(ctx)
	if err != nil {
		return Record{}, err
	}
	return c.get(ctx, kv, key)
}

func (c *Claims) get(ctx context.Context, kv jetstream.KeyValue, key string) (Record, error) {
	e, err := kv.Get(ctx, key)
	if isAbsent(err) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, c.unavailable("read claim", err)
	}
	return decodeRecord(key, e.Value(), e.Revision())
}

// Release gives up the claim on (ns, hash) if identityID holds it: it reads
// the claim and deletes it only at the revision read. nil when released or
// when nobody holds it; ErrNotOwner when another identity holds it or it
// changed in between (for example refreshed by a concurrent append of the
// same identity, which needs it).
func (c *Claims) Release(ctx context.Context, ns Namespace, hash []byte, identityID string) error {
	key, err := claimKey(ns, hash)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	kv, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	return c.release(ctx, kv, key, identityID)
}

func (c *Claims) release(ctx context.Context, kv jetstream.KeyValue, key, identityID string) error {
	cur, err := c.get(ctx, kv, key)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur.IdentityID != identityID {
		c.stats.notOwner.Add(1)
		return ErrNotOwner
	}
	return c.deleteAt(ctx, kv, key, cur.Revision)
}

// ReleaseRevision deletes the claim on (ns, hash) only if it is still at
// revision rev (compare-and-delete); ErrNotOwner if it changed.
func (c *Claims) ReleaseRevision(ctx context.Context, ns Namespace, hash []byte, rev uint64) error {
	key, err := claimKey(ns, hash)
	if err != nil {
		return err
	}
	if rev == 0 {
		return fmt.Errorf("%w: revision: required", ErrInvalid)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	kv, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	return c.deleteAt(ctx, kv, key, rev)
}

// Abort undoes a Take whose append did not happen: it releases the claim if
// that Take created it and nobody changed it since. A claim the identity
// already held (t.Created false) stays: the identity still has the value.
func (c *Claims) Abort(ctx context.Context, ns Namespace, hash []byte, t Ticket) error {
	if !t.Created {
		return nil
	}
	return c.ReleaseRevision(ctx, ns, hash, t.Revision)
}

func (c *Claims) deleteAt(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) error {
	err := kv.Delete(ctx, key, jetstream.LastRevision(rev))
	switch {
	case err == nil:
		c.stats.released.Add(1)
		return nil
	case IsKeyExists(err):
		c.stats.notOwner.Add(1)
		return ErrNotOwner
	default:
		return c.unavailable("delete claim", err)
	}
}

// Records calls fn for every claim in the bucket (not the owner registers)
// as of the call, until fn returns an error. ctx bounds the whole listing.
// Records that do not decode are logged and skipped.
func (c *Claims) Records(ctx context.Context, fn func(Record) error) error {
	bctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	kv, err := c.bucket(bctx)
	cancel()
	if err != nil {
		return err
	}
	filters := make([]string, len(Namespaces))
	for i, ns := range Namespaces {
		filters[i] = string(ns) + ".>"
	}
	w, err := kv.WatchFiltered(ctx, filters, jetstream.IgnoreDeletes())
	if err != nil {
		return c.unavailable("list claims", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return c.unavailable("list claims", ctx.Err())
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return c.unavailable("list claims", errors.New("watch ended early"))
			case e == nil:
				return nil // every claim that existed at the start was seen
			}
			rec, err := decodeRecord(e.Key(), e.Value(), e.Revision())
			if err != nil {
				c.cfg.Logger.Error("claims: skipping undecodable claim", "key", e.Key(), "err", err)
				continue
			}
			if err := fn(rec); err != nil {
				return err
			}
		}
	}
}
