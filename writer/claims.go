package writer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-id/meridian/conflict"
	"github.com/meridian-id/meridian/eventlog"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// Global uniqueness of emails and usernames.
//
// With Config.Claimer set, an Append that gives an identity an email or a
// username (IdentityCreated with those traits, TraitsUpdated changing them)
// first claims the value's keyed hash in the claims domain, all or nothing:
// if one claim is refused the ones taken are given back and nothing is
// appended (409 conflict, or 503 claims_unavailable when the claims region
// cannot be reached: registration fails closed). The claims are taken
// after validation, which has no side effects, and before the records are
// built; an append that then fails without writing gives them back.
//
// The old value is released only after the change is durable, and the
// writer does not know the old value: the Claimer keeps, per identity, a
// last-writer-wins register of its current hashes (ordered by the event's
// stamp, as the read model merges), and Settle releases whichever value
// lost. Erasure releases every value once it is durable. Writes without an
// email or username never touch the claims.
//
// Whatever is left behind (a crash between claim and append, a release that
// failed) stays claimed, which is safe, until the claims region's reaper
// finds that no identity holds it; ClaimWindow is the writer's side of that
// contract.

// DefaultClaimWindow is the default Config.ClaimWindow.
const DefaultClaimWindow = 10 * time.Second

// maxParallelClaims bounds the claims one request has in flight.
const maxParallelClaims = 16

// Claim error codes and their sentinels (wrapped by *Error).
const (
	CodeConflict          = "conflict"
	CodeClaimsUnavailable = "claims_unavailable"
)

var (
	// ErrConflict: the email or username is already held by another
	// identity (409); nothing was appended.
	ErrConflict = errors.New("writer: conflict")
	// ErrClaimsUnavailable: the claims region could not be asked (503);
	// nothing was appended; the request may be retried.
	ErrClaimsUnavailable = errors.New("writer: claims unavailable")
	// ErrClaimTaken is what a Claimer's Claim returns (wrapped) when
	// another identity holds the value; any other error means the claims
	// region did not answer.
	ErrClaimTaken = errors.New("writer: claim taken")
)

// ClaimNamespace separates emails from usernames.
type ClaimNamespace string

const (
	ClaimEmail    ClaimNamespace = "email"
	ClaimUsername ClaimNamespace = "username"
)

// ClaimTicket is what Claim returns and Abort takes back.
type ClaimTicket struct {
	Revision uint64
	Created  bool // false: the identity already held the value
}

// ClaimChange is one durable change of an identity's value (Hash nil when
// the change cleared it), stamped as the read model orders it.
type ClaimChange struct {
	Namespace ClaimNamespace
	Hash      []byte
	Stamp     conflict.Stamp
	// Creates: the change is the identity's creation (IdentityCreated).
	Creates bool
}

// Claimer takes and gives back uniqueness claims (node adapts
// *claims.Claims to it). Its methods bound their own time; the writer
// passes contexts that are not cancelled with the request.
type Claimer interface {
	// Claim takes (ns, hash) for identityID, or refreshes it when the
	// identity holds it already. An error wrapping ErrClaimTaken when
	// another identity holds it; any other error: unreachable.
	Claim(ctx context.Context, ns ClaimNamespace, hash []byte, identityID string) (ClaimTicket, error)
	// Abort gives back a claim taken for an append that did not happen,
	// if that Claim created it and nobody changed it since.
	Abort(ctx context.Context, ns ClaimNamespace, hash []byte, t ClaimTicket) error
	// Settle records durable changes of identityID and releases the values
	// that lost (the old value, or a change that lost to a later one).
	Settle(ctx context.Context, identityID string, changes ...ClaimChange) error
	// ReleaseAll releases every value of an erased identity.
	ReleaseAll(ctx context.Context, identityID string) error
	// Region is the claims region, named in 503s.
	Region() string
}

// ClaimMetrics counts the writer's use of its Claimer.
type ClaimMetrics struct {
	Claims       uint64 // values claimed (taken or refreshed) for appends
	Conflicts    uint64 // appends refused with 409
	Unavailable  uint64 // appends refused with 503 claims_unavailable
	Aborted      uint64 // claims given back after a refused or failed append
	AbortErrors  uint64 // give-backs that failed (left to the reaper)
	Settled      uint64 // identities settled after durable changes
	SettleErrors uint64 // settles or erasure releases that failed (left to the reaper)
}

type claimStats struct {
	claims, conflicts, unavailable, aborted, abortErrors, settled, settleErrors atomic.Uint64
}

// ClaimMetrics returns a snapshot of the claim counters.
func (w *Writer) ClaimMetrics() ClaimMetrics {
	s := &w.claimStats
	return ClaimMetrics{
		Claims: s.claims.Load(), Conflicts: s.conflicts.Load(), Unavailable: s.unavailable.Load(),
		Aborted: s.aborted.Load(), AbortErrors: s.abortErrors.Load(), Settled: s.settled.Load(),
		SettleErrors: s.settleErrors.Load(),
	}
}

// claimSet is what one Append claimed and must settle. A nil *claimSet (no
// Claimer, or nothing to claim) does nothing.
type claimSet struct {
	w       *Writer
	began   int64 // node clock when claiming began
	wants   []claimWant
	tickets []ClaimTicket // per want, once taken
	changes []claimChange // in request order
	erased  []string      // identities the request erases
	// seen indexes wants by namespace and hash; selfConflict is the first
	// want giving an already wanted value to another identity, or -1.
	seen         map[string]int
	selfConflict int
}

type claimWant struct {
	event    int
	field    string // e.g. identity_created.traits.email
	identity string
	ns       ClaimNamespace
	hash     []byte
}

type claimChange struct {
	event    int
	identity string
	ns       ClaimNamespace
	hash     []byte // nil: cleared
	creates  bool   // IdentityCreated
}

// takeClaims claims every email and username the request sets, all or
// nothing, before anything is built or appended.
func (w *Writer) takeClaims(ctx context.Context, preps []*prepared) (*claimSet, *Error) {
	if w.cfg.Claimer == nil {
		return nil, nil
	}
	cs := &claimSet{w: w, selfConflict: -1}
	for i, p := range preps {
		var traits *meridianv1.Traits
		var path string
		creates := false
		switch b := p.ev.Body.(type) {
		case *meridianv1.Event_IdentityCreated:
			traits, path, creates = b.IdentityCreated.GetTraits(), "identity_created.traits", true
		case *meridianv1.Event_TraitsUpdated:
			traits, path = b.TraitsUpdated.GetTraits(), "traits_updated.traits"
		case *meridianv1.Event_IdentityErased:
			cs.erased = append(cs.erased, p.ev.IdentityId)
			continue
		default:
			continue
		}
		if traits == nil {
			continue
		}
		if traits.Email != nil {
			cs.add(i, p.ev.IdentityId, path+".email", ClaimEmail, hashOrClear(w.cfg.HashKey, *traits.Email, EmailHash), creates)
		}
		if traits.Username != nil {
			cs.add(i, p.ev.IdentityId, path+".username", ClaimUsername, hashOrClear(w.cfg.HashKey, *traits.Username, UsernameHash), creates)
		}
	}
	if len(cs.changes) == 0 && len(cs.erased) == 0 {
		return nil, nil
	}
	if len(cs.wants) == 0 {
		return cs, nil
	}
	if cs.selfConflict >= 0 {
		// One request giving one value to two identities conflicts with
		// itself: refuse the later one before asking anyone.
		w.claimStats.conflicts.Add(1)
		return nil, conflictError(cs.wants[cs.selfConflict])
	}
	cs.began = w.cfg.Now()
	cs.tickets = make([]ClaimTicket, len(cs.wants))
	errs := make([]error, len(cs.wants))
	claim := func(i int) {
		// Not cancelled with the request: a claim cut off halfway is
		// ambiguous (taken or not?), while one that completes within the
		// Claimer's timeout is given back cleanly if the append then fails.
		c := cs.wants[i]
		cs.tickets[i], errs[i] = w.cfg.Claimer.Claim(context.WithoutCancel(ctx), c.ns, c.hash, c.identity)
	}
	if len(cs.wants) == 1 {
		claim(0)
	} else {
		// In parallel, a bounded number at a time: each claim is a round
		// trip to the claims region.
		var wg sync.WaitGroup
		slots := make(chan struct{}, maxParallelClaims)
		for i := range cs.wants {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				claim(i)
			})
		}
		wg.Wait()
	}
	for i, err := range errs {
		if err == nil {
			continue
		}
		for j, e := range errs {
			if e != nil {
				cs.tickets[j] = ClaimTicket{} // nothing to give back
			}
		}
		cs.abort(ctx)
		c := cs.wants[i]
		if errors.Is(err, ErrClaimTaken) {
			w.claimStats.conflicts.Add(1)
			return nil, conflictError(c)
		}
		w.claimStats.unavailable.Add(1)
		e := claimsUnavailable(w.cfg.Claimer.Region(), fmt.Sprintf("cannot check that the %s is unique", c.ns), err)
		e.Field = c.field
		return nil, e.at(c.event)
	}
	w.claimStats.claims.Add(uint64(len(cs.wants)))
	return cs, nil
}

func (cs *claimSet) add(event int, identity, field string, ns ClaimNamespace, hash []byte, creates bool) {
	cs.changes = append(cs.changes, claimChange{event: event, identity: identity, ns: ns, hash: hash, creates: creates})
	if hash == nil {
		return // cleared: nothing to claim, the old value goes at settle
	}
	key := string(ns) + "\x00" + string(hash)
	if i, ok := cs.seen[key]; ok {
		if cs.wants[i].identity != identity && cs.selfConflict < 0 {
			cs.selfConflict = len(cs.wants)
			cs.wants = append(cs.wants, claimWant{event: event, field: field, identity: identity, ns: ns, hash: hash})
		}
		return // the same identity twice: one claim serves both
	}
	if cs.seen == nil {
		cs.seen = map[string]int{}
	}
	cs.seen[key] = len(cs.wants)
	cs.wants = append(cs.wants, claimWant{event: event, field: field, identity: identity, ns: ns, hash: hash})
}

func conflictError(c claimWant) *Error {
	e := newError(ErrConflict, CodeConflict, http.StatusConflict, c.field,
		fmt.Sprintf("this %s is already registered to another identity; it must be unique across all regions", c.ns))
	return e.at(c.event)
}

func claimsUnavailable(region, what string, cause error) *Error {
	e := newError(ErrClaimsUnavailable, CodeClaimsUnavailable, http.StatusServiceUnavailable, "",
		fmt.Sprintf("claims region %s unreachable: %s, so the write is refused (fail closed; retry later): %v", region, what, cause))
	e.cause = cause
	return e
}

// abort gives back the claims this request created.
func (cs *claimSet) abort(ctx context.Context) {
	if cs == nil {
		return
	}
	w := cs.w
	for i, t := range cs.tickets {
		if !t.Created {
			continue
		}
		c := cs.wants[i]
		if err := w.cfg.Claimer.Abort(context.WithoutCancel(ctx), c.ns, c.hash, t); err != nil {
			w.claimStats.abortErrors.Add(1)
		} else {
			w.claimStats.aborted.Add(1)
		}
		cs.tickets[i] = ClaimTicket{}
	}
}

// beforeAppend refuses to append on claims older than ClaimWindow: the
// reaper trusts that an append relying on a claim was queued in the log
// within ClaimWindow of claiming.
func (cs *claimSet) beforeAppend(ctx context.Context) *Error {
	if cs == nil || len(cs.wants) == 0 {
		return nil
	}
	w := cs.w
	if took := w.cfg.Now() - cs.began; took > w.cfg.ClaimWindow.Milliseconds() {
		cs.abort(ctx)
		w.claimStats.unavailable.Add(1)
		return claimsUnavailable(w.cfg.Claimer.Region(), "claiming took too long",
			fmt.Errorf("%d ms between claiming and appending; at most %s allowed (ClaimWindow)", took, w.cfg.ClaimWindow))
	}
	return nil
}

// appendFailed gives the claims back when the log certainly did not write
// the records. Otherwise (a failed commit, which may have reached the disk)
// they stay, and the reaper releases them if the identity never appears.
func (cs *claimSet) appendFailed(ctx context.Context, err error) {
	if cs == nil {
		return
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, eventlog.ErrInvalid) || errors.Is(err, eventlog.ErrClosed) {
		cs.abort(ctx)
	}
}

// settle runs once the records are durable: it settles each identity's
// changes (releasing old values) and releases erased identities' claims.
// Failures are counted, not returned: the append stands, and what was not
// released is the reaper's.
func (cs *claimSet) settle(ctx context.Context, ids []string, hlcs []uint64) {
	if cs == nil {
		return
	}
	w := cs.w
	ctx = context.WithoutCancel(ctx)
	var order []string
	byIdentity := map[string][]ClaimChange{}
	for _, c := range cs.changes {
		if _, ok := byIdentity[c.identity]; !ok {
			order = append(order, c.identity)
		}
		byIdentity[c.identity] = append(byIdentity[c.identity], ClaimChange{
			Namespace: c.ns, Hash: c.hash, Creates: c.creates,
			Stamp: conflict.Stamp{HLC: conflict.Timestamp(hlcs[c.event]), Node: w.cfg.Node, EventID: ids[c.event]},
		})
	}
	for _, id := range order {
		if err := w.cfg.Claimer.Settle(ctx, id, byIdentity[id]...); err != nil {
			w.claimStats.settleErrors.Add(1)
		} else {
			w.claimStats.settled.Add(1)
		}
	}
	for _, id := range cs.erased {
		if err := w.cfg.Claimer.ReleaseAll(ctx, id); err != nil {
			w.claimStats.settleErrors.Add(1)
		}
	}
}
