package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

// Get returns the merged identity as this region holds it: GLOBAL fields
// everywhere, RESIDENT fields (unsealed now, under the identity's data
// key) only where this region holds them. The result includes credential
// material; API layers must strip it (the HTTP routes do). ErrNotFound for
// an unknown id, ErrErased for an erased identity.
func (p *Projector) Get(ctx context.Context, id string) (*meridianv1.Identity, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	defer p.mu.RUnlock()
	p.gets.Add(1)
	ident, _, err := p.eng.get(id)
	return ident, err
}

// get also reports whether this region holds resident state of the
// identity.
func (e *engine) get(id string) (*meridianv1.Identity, bool, error) {
	g, err := e.store.global(id)
	if err != nil {
		return nil, false, err
	}
	if g == nil {
		return nil, false, fmt.Errorf("projector: identity %s: %w", id, ErrNotFound)
	}
	if e.merger.Erased(g) {
		return nil, false, fmt.Errorf("projector: identity %s: %w", id, ErrErased)
	}
	sealed, err := e.store.residentSealed(id)
	if err != nil {
		return nil, false, err
	}
	var r *meridianv1.IdentityState
	if sealed != nil {
		r, err = openResident(e.keys, id, sealed)
		if errors.Is(err, errResidentLost) {
			// Erased between the two reads (keys go right after the
			// erasure commits)?
			if g2, gerr := e.store.global(id); gerr == nil && e.merger.Erased(g2) {
				return nil, false, fmt.Errorf("projector: identity %s: %w", id, ErrErased)
			}
		}
		if err != nil {
			return nil, false, err
		}
	}
	return e.merger.View(g, r), r != nil, nil
}

// LookupEmail returns the id of the identity whose current email has this
// keyed hash (traits.email_hash, as the writer computes it). Every region
// can answer it: the hash is GLOBAL. ErrNotFound when none has it.
func (p *Projector) LookupEmail(hash []byte) (string, error) {
	return p.lookup(pEmail, "email hash", hash)
}

// LookupUsername is LookupEmail for traits.username_hash.
func (p *Projector) LookupUsername(hash []byte) (string, error) {
	return p.lookup(pUsername, "username hash", hash)
}

func (p *Projector) lookup(prefix byte, what string, hash []byte) (string, error) {
	if len(hash) == 0 {
		return "", invalidf(what, "required")
	}
	if err := p.open(); err != nil {
		return "", err
	}
	defer p.mu.RUnlock()
	ids, err := p.eng.store.lookupHash(prefix, hash)
	if err != nil {
		return "", err
	}
	if len(ids) == 0 {
		return "", fmt.Errorf("projector: %s: %w", what, ErrNotFound)
	}
	// Uniqueness is enforced at write time (claims); two holders can only
	// appear briefly while concurrent changes converge. Answer the first
	// in id order so every region answers alike.
	return ids[0], nil
}

// SessionStatus is whether a session may be used now.
type SessionStatus struct {
	Valid bool `json:"valid"`
	// Reason is empty when Valid, otherwise one of "revoked", "expired",
	// "identity_disabled".
	Reason     string `json:"reason,omitempty"`
	SessionID  string `json:"session_id"`
	IdentityID string `json:"identity_id"`
	ExpiresAt  int64  `json:"expires_at_unix_ms"`
}

// Session reports whether a session is valid: it exists, is not revoked
// (in any region: revocations are a grow-only set), has not expired (by
// Config.Now), and its identity is not disabled. ErrNotFound for a session
// this region does not know, or whose identity was erased.
func (p *Projector) Session(sessionID string) (SessionStatus, error) {
	if sessionID == "" {
		return SessionStatus{}, invalidf("session_id", "required")
	}
	if err := p.open(); err != nil {
		return SessionStatus{}, err
	}
	defer p.mu.RUnlock()
	id, ok, err := p.eng.store.session(sessionID)
	if err != nil {
		return SessionStatus{}, err
	}
	notFound := fmt.Errorf("projector: session %s: %w", sessionID, ErrNotFound)
	if !ok {
		return SessionStatus{}, notFound
	}
	g, err := p.eng.store.global(id)
	if err != nil {
		return SessionStatus{}, err
	}
	if g == nil || p.eng.merger.Erased(g) {
		return SessionStatus{}, notFound
	}
	view := p.eng.merger.View(g)
	i := slices.IndexFunc(view.GetSessions(), func(s *meridianv1.Session) bool { return s.GetSessionId() == sessionID })
	if i < 0 {
		return SessionStatus{}, notFound
	}
	s := view.GetSessions()[i]
	st := SessionStatus{SessionID: sessionID, IdentityID: id, ExpiresAt: s.GetExpiresAtUnixMs()}
	switch {
	case slices.Contains(view.GetRevokedSessions(), sessionID):
		st.Reason = "revoked"
	case s.GetExpiresAtUnixMs() <= p.cfg.Now():
		st.Reason = "expired"
	case view.GetStatus() == meridianv1.IdentityStatus_IDENTITY_STATUS_DISABLED:
		st.Reason = "identity_disabled"
	default:
		st.Valid = true
	}
	return st, nil
}

// WaitApplied returns once this region has applied, for the token's origin
// node, every subject-zone sequence the token names that this region
// receives (the global zone and its own; a zone it does not hold never
// arrives here and is skipped). It wakes at each committed batch, never
// polls. When ctx ends first it returns a *NotReplicatedError naming the
// origin region.
func (p *Projector) WaitApplied(ctx context.Context, token *meridianv1.ConsistencyToken) error {
	switch {
	case token == nil:
		return invalidf("token", "required")
	case token.GetOriginRegion() == "" || token.GetOriginNode() == "" || len(token.GetSequences()) == 0:
		return invalidf("token", "must name origin_region, origin_node and at least one sequence")
	}
	if err := p.open(); err != nil {
		return err
	}
	p.mu.RUnlock() // a waiter must not hold Close up; it reads only memory
	p.waiting.Add(1)
	defer p.waiting.Add(-1)
	for {
		gaps, next := p.eng.gaps(token, p.cfg.Zone)
		if len(gaps) == 0 {
			return nil
		}
		select {
		case <-next:
		case <-p.done:
			return ErrClosed
		case <-ctx.Done():
			return &NotReplicatedError{Origin: token.GetOriginRegion(), Node: token.GetOriginNode(), Missing: gaps, Cause: ctx.Err()}
		}
	}
}

// gaps lists the zones of the token not applied yet, and the channel that
// closes at the next commit.
func (e *engine) gaps(token *meridianv1.ConsistencyToken, zone string) ([]ZoneGap, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var gaps []ZoneGap
	for z, want := range token.GetSequences() {
		if z != region.GlobalZone && z != zone {
			continue
		}
		have := e.pos.applied[nodeZone{token.GetOriginRegion(), token.GetOriginNode(), z}]
		if have < want {
			gaps = append(gaps, ZoneGap{Zone: z, Want: want, Applied: have})
		}
	}
	slices.SortFunc(gaps, func(a, b ZoneGap) int {
		switch {
		case a.Zone < b.Zone:
			return -1
		case a.Zone > b.Zone:
			return 1
		}
		return 0
	})
	return gaps, e.mu.notify
}
