package node

import (
	"context"
)

// tombstones backs the writer's erased-identity check with the read model:
// an identity is erased here once the projector has applied its
// IdentityErased (the GLOBAL tombstone reaches every region). The
// projector answers from its erased marker, one small point read per event
// (projector/erased.go), not from the identity's state.
type tombstones struct{ n *Node }

func (t tombstones) Erased(_ context.Context, identityID string) (bool, error) {
	p := t.n.proj
	if p == nil { // only before Start has finished: nothing is served yet
		return false, nil
	}
	return p.Erased(identityID)
}
