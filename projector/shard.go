package projector

import (
	"hash/maphash"

	"google.golang.org/protobuf/encoding/protowire"
)

var shardSeed = maphash.MakeSeed()

// shardOf picks the apply goroutine of a message by its identity, so that
// all messages of one identity (key record, GLOBAL and RESIDENT parts)
// are applied by one goroutine in inbox order. The identity comes from the
// subject (key records) or from Event.identity_id read straight off the
// wire, without decoding the event. Messages without one go to shard 0.
func shardOf(m *inMsg, shards int) int {
	var h uint64
	if sp, err := m.subject(); err == nil && sp.IdentityID != "" {
		h = maphash.String(shardSeed, sp.IdentityID)
	} else if id := wireIdentityID(m.Data); len(id) > 0 {
		h = maphash.Bytes(shardSeed, id)
	} else {
		return 0
	}
	return int(h % uint64(shards))
}

// identityIDField is Event.identity_id.
const identityIDField protowire.Number = 2

// wireIdentityID returns the last top-level identity_id in an encoded
// Event (empty if none or malformed: such a message is quarantined
// anyway), as a slice of b.
func wireIdentityID(b []byte) []byte {
	var id []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num == identityIDField && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil
			}
			id, b = v, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil
		}
		b = b[n:]
	}
	return id
}
