package writer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Tombstones tells the writer which identities this region already knows to
// be erased (the node backs it with the read model's GLOBAL tombstones).
// Events for an erased identity can never take effect anywhere, and
// accepting one would make this region create a fresh data key for a person
// who asked to be forgotten, so the writer refuses them up front.
type Tombstones interface {
	Erased(ctx context.Context, identityID string) (bool, error)
}

// ErrErased is wrapped by the error for an event of an erased identity.
var ErrErased = errors.New("writer: identity erased")

// CodeErased is the error code of an event for an erased identity (410).
const CodeErased = "identity_erased"

// checkErased refuses the request if any of its events is for an identity
// this region holds a tombstone for. A repeated IdentityErased is allowed:
// it is harmless and lets an operator re-run an erasure. An erasure this
// region has not applied yet is not seen here; the projector ignores what
// such a write adds, and `meridian erase` sweeps keys made meanwhile.
func (w *Writer) checkErased(ctx context.Context, preps []*prepared) *Error {
	if w.cfg.Tombstones == nil {
		return nil
	}
	for i, p := range preps {
		if p.ev.GetIdentityErased() != nil {
			continue
		}
		id := p.ev.GetIdentityId()
		erased, err := w.cfg.Tombstones.Erased(ctx, id)
		if err != nil {
			return unavailable("check tombstone", err).at(i)
		}
		if erased {
			return newError(ErrErased, CodeErased, http.StatusGone, "identity_id",
				fmt.Sprintf("identity %s is erased; events for it are refused", id)).at(i)
		}
	}
	return nil
}
