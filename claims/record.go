package claims

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/meridian-id/meridian/conflict"
)

// Record is a claim as stored under "<ns>.<hex hash>" (JSON, so that an
// operator can read it with `nats kv get`).
type Record struct {
	IdentityID string `json:"identity_id"`
	// Region and Node took the claim first, at ClaimedAt (unix ms).
	Region    string `json:"region"`
	Node      string `json:"node"`
	ClaimedAt int64  `json:"claimed_at_unix_ms"`
	// Claimants lists, per node, the last time it took or refreshed the
	// claim for an append: the reaper waits until the read model has seen
	// each of those nodes' logs past that time.
	Claimants []Claimant `json:"claimants"`

	// Filled from the key and the entry, not stored.
	Namespace Namespace `json:"-"`
	Hash      []byte    `json:"-"`
	Revision  uint64    `json:"-"`
}

// Claimant is one node that relied on a claim.
type Claimant struct {
	Region string `json:"region"`
	Node   string `json:"node"`
	At     int64  `json:"at_unix_ms"`
}

// touch records that region/node relies on the claim as of at.
func (r *Record) touch(region, node string, at int64) {
	for i := range r.Claimants {
		if r.Claimants[i].Node == node {
			r.Claimants[i].Region = region
			r.Claimants[i].At = max(r.Claimants[i].At, at)
			return
		}
	}
	r.Claimants = append(r.Claimants, Claimant{Region: region, Node: node, At: at})
	slices.SortFunc(r.Claimants, func(a, b Claimant) int {
		switch {
		case a.Node < b.Node:
			return -1
		case a.Node > b.Node:
			return 1
		}
		return 0
	})
}

func decodeRecord(key string, data []byte, rev uint64) (Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("claims: record %s (revision %d): %w", key, rev, err)
	}
	ns, hash, ok := parseClaimKey(key)
	if !ok {
		return r, fmt.Errorf("claims: %q is not a claim key", key)
	}
	r.Namespace, r.Hash, r.Revision = ns, hash, rev
	return r, nil
}

func (r *Record) encode() []byte {
	b, _ := json.Marshal(r) // strings and ints only: cannot fail
	return b
}

// Owner is the per-identity register under "owner.<identity>": the
// identity's current value per namespace, last writer wins by stamp.
type Owner struct {
	IdentityID string                   `json:"identity_id"`
	Values     map[Namespace]OwnedValue `json:"values,omitempty"`
	// Erased: the identity was erased; every later Settle releases.
	Erased bool `json:"erased,omitempty"`

	Revision uint64 `json:"-"`
}

// OwnedValue is one register: the hash (empty when cleared) and the stamp
// of the change that set it.
type OwnedValue struct {
	Hash    string `json:"hash,omitempty"` // hex
	HLC     uint64 `json:"hlc"`
	Node    string `json:"node"`
	EventID string `json:"event_id"`
}

func (v OwnedValue) stamp() conflict.Stamp {
	return conflict.Stamp{HLC: conflict.Timestamp(v.HLC), Node: v.Node, EventID: v.EventID}
}

func (v OwnedValue) hash() []byte {
	b, _ := hex.DecodeString(v.Hash)
	return b
}

func ownedValue(hash []byte, s conflict.Stamp) OwnedValue {
	return OwnedValue{Hash: hex.EncodeToString(hash), HLC: uint64(s.HLC), Node: s.Node, EventID: s.EventID}
}

func decodeOwner(data []byte, rev uint64) (Owner, error) {
	var o Owner
	if err := json.Unmarshal(data, &o); err != nil {
		return o, fmt.Errorf("claims: owner record (revision %d): %w", rev, err)
	}
	o.Revision = rev
	return o, nil
}

func (o *Owner) encode() []byte {
	b, _ := json.Marshal(o)
	return b
}
