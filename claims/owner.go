package claims

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/conflict"
)

// Change is one durable change of an identity's value in a namespace, as
// the writer appended it. Hash is nil when the change cleared the value.
type Change struct {
	Namespace Namespace
	Hash      []byte
	// Stamp is the event's (HLC, origin node, event id): the order the read
	// model's last-writer-wins merge uses.
	Stamp conflict.Stamp
	// Creates marks a change made by the identity's creation: its register
	// most likely does not exist yet, and Settle tries to create it in one
	// round trip before reading it.
	Creates bool
}

// Settle records durable changes of identityID in its owner register and
// releases whichever values lost: the previous value of a namespace when a
// change wins, or the change's own value when the register already holds a
// later change (a concurrent change elsewhere won, so the read model will
// not show this value). This is how an old email is released after a change:
// the writer does not know the old value, the register does. After an
// erasure every change loses.
//
// Settle is idempotent; a failure leaves claims held, which is safe, and
// the reaper releases them later.
func (c *Claims) Settle(ctx context.Context, identityID string, changes ...Change) error {
	okey, err := ownerKey(identityID)
	if err != nil {
		return err
	}
	for i, ch := range changes {
		if !ch.Namespace.valid() {
			return fmt.Errorf("%w: changes[%d].Namespace %q: must be %q or %q", ErrInvalid, i, ch.Namespace, Email, Username)
		}
		if len(ch.Hash) != 0 && len(ch.Hash) != hashLen {
			return fmt.Errorf("%w: changes[%d].Hash: must be empty or %d bytes, got %d", ErrInvalid, i, hashLen, len(ch.Hash))
		}
	}
	if len(changes) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	kv, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	if changes[0].Creates {
		o := Owner{IdentityID: identityID, Values: map[Namespace]OwnedValue{}}
		var losers []Change
		for _, ch := range changes {
			if cur, ok := o.Values[ch.Namespace]; ok {
				losers = append(losers, Change{Namespace: ch.Namespace, Hash: cur.hash()})
			}
			o.Values[ch.Namespace] = ownedValue(ch.Hash, ch.Stamp)
		}
		switch err := c.putOwner(ctx, kv, okey, &o); {
		case err == nil:
			c.stats.settled.Add(1)
			return c.releaseLosers(ctx, kv, identityID, o, losers)
		case !IsKeyExists(err):
			return err
		}
		// The register exists (a retried registration, or other changes
		// settled first): decide on its contents below.
	}
	for range maxAttempts {
		o, err := c.owner(ctx, kv, okey, identityID)
		if err != nil {
			return err
		}
		var losers []Change
		changed := false
		for _, ch := range changes {
			if o.Erased {
				losers = append(losers, ch)
				continue
			}
			cur, had := o.Values[ch.Namespace]
			switch order := cur.stamp().Compare(ch.Stamp); {
			case had && order == 0:
				// Settled before (a retry): nothing lost, nothing to do.
			case had && order > 0:
				losers = append(losers, ch)
			default:
				if had {
					losers = append(losers, Change{Namespace: ch.Namespace, Hash: cur.hash(), Stamp: cur.stamp()})
				}
				if o.Values == nil {
					o.Values = map[Namespace]OwnedValue{}
				}
				o.Values[ch.Namespace] = ownedValue(ch.Hash, ch.Stamp)
				changed = true
			}
		}
		if changed {
			err := c.putOwner(ctx, kv, okey, &o)
			if IsKeyExists(err) {
				continue // another settle in between: decide again on its result
			}
			if err != nil {
				return err
			}
			c.stats.settled.Add(1)
		}
		return c.releaseLosers(ctx, kv, identityID, o, losers)
	}
	return c.unavailable("settle owner register", errContended)
}

// releaseLosers releases each loser's value unless the register holds that
// very value now (in the same or the other change of this call).
func (c *Claims) releaseLosers(ctx context.Context, kv jetstream.KeyValue, identityID string, o Owner, losers []Change) error {
	var errs []error
	for _, l := range losers {
		if len(l.Hash) == 0 {
			continue
		}
		if cur, ok := o.Values[l.Namespace]; ok && !o.Erased && cur.Hash == hex.EncodeToString(l.Hash) {
			continue
		}
		key, _ := claimKey(l.Namespace, l.Hash)
		if err := c.release(ctx, kv, key, identityID); err != nil && !errors.Is(err, ErrNotOwner) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReleaseAll releases every claim the owner register of identityID lists
// and tombstones the register, after an erasure is durable: erasure wins
// over every change, so no later Settle records a value for it again.
// Claims the register does not list (an append in flight, a crash) are the
// reaper's: the identity is erased, so none of them is live.
func (c *Claims) ReleaseAll(ctx context.Context, identityID string) error {
	okey, err := ownerKey(identityID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	kv, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	for range maxAttempts {
		o, err := c.owner(ctx, kv, okey, identityID)
		if err != nil {
			return err
		}
		var held []Change
		for _, ns := range Namespaces {
			if v, ok := o.Values[ns]; ok {
				held = append(held, Change{Namespace: ns, Hash: v.hash(), Stamp: v.stamp()})
			}
		}
		if !o.Erased || len(o.Values) > 0 {
			o.Erased, o.Values = true, nil
			err := c.putOwner(ctx, kv, okey, &o)
			if IsKeyExists(err) {
				continue
			}
			if err != nil {
				return err
			}
		}
		return c.releaseLosers(ctx, kv, identityID, o, held)
	}
	return c.unavailable("tombstone owner register", errContended)
}

// OwnerOf returns the owner register of an identity (an empty one, with
// revision 0, when it has none).
func (c *Claims) OwnerOf(ctx context.Context, identityID string) (Owner, error) {
	okey, err := ownerKey(identityID)
	if err != nil {
		return Owner{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	kv, err := c.bucket(ctx)
	if err != nil {
		return Owner{}, err
	}
	return c.owner(ctx, kv, okey, identityID)
}

func (c *Claims) owner(ctx context.Context, kv jetstream.KeyValue, okey, identityID string) (Owner, error) {
	e, err := kv.Get(ctx, okey)
	if isAbsent(err) {
		return Owner{IdentityID: identityID}, nil
	}
	if err != nil {
		return Owner{}, c.unavailable("read owner register", err)
	}
	o, err := decodeOwner(e.Value(), e.Revision())
	if err != nil {
		return Owner{}, err
	}
	if o.IdentityID != identityID {
		return Owner{}, fmt.Errorf("claims: owner register %s names identity %q", okey, o.IdentityID)
	}
	return o, nil
}

// putOwner writes the register by compare-and-set on its revision (create
// when it has none); a "key exists" error means someone wrote in between.
func (c *Claims) putOwner(ctx context.Context, kv jetstream.KeyValue, okey string, o *Owner) error {
	var err error
	if o.Revision == 0 {
		_, err = kv.Create(ctx, okey, o.encode())
	} else {
		_, err = kv.Update(ctx, okey, o.encode(), o.Revision)
	}
	if err != nil && !IsKeyExists(err) {
		return c.unavailable("write owner register", err)
	}
	return err
}
