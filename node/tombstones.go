package node

import (
	"context"
	"errors"

	"github.com/meridian-id/meridian/projector"
)

// tombstones backs the writer's erased-identity check with the read model:
// an identity is erased here once the projector has applied its
// IdentityErased (the GLOBAL tombstone reaches every region).
type tombstones struct{ n *Node }

func (t tombstones) Erased(_ context.Context, identityID string) (bool, error) {
	p := t.n.proj
	if p == nil { // only before Start has finished: nothing is served yet
		return false, nil
	}
	global, _, err := p.Stored(identityID)
	switch {
	case errors.Is(err, projector.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return global.GetErased() != nil, nil
}
