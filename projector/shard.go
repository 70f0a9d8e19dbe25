package projector

import (
	"hash/maphash"

	"github.com/meridian-id/meridian/region"
	"google.golang.org/protobuf/encoding/protowire"
)

var shardSeed = maphash.MakeSeed()

// shardOf picks the apply goroutine of a message by its identity, so that
// all messages of one identity (key record, GLOBAL and RESIDENT parts)
// are applied by one goroutine in inbox order. The identity comes from the
// subject (key records) or from Event.identity_id read straight off the
// wire, without decoding the event. Messages without one go to shard 0.
func shardOf(m *inMsg, shards int) int {
	id := ""
	if sp, err := region.ParseSubject(m.Subject); err == nil && sp.IdentityID != "" {
		id = sp.IdentityID
	} else {
		id = wireIdentityID(m.Data)
	}
	if id == "" {
		return 0
	}
	return int(maphash.String(shardSeed, id) % uint64(shards))
}

// identityIDField is Event.identity_id.
const identityIDField protowire.Number = 2

// wireIdentityID returns the last top-level identity_id in an encoded
// Event ("" if none or malformed: such a message is quarantined anyway).
func wireIdentityID(b []byte) string {
	id := ""
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == identityIDField && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ""
			}
			id, b = string(v), b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return id
}
