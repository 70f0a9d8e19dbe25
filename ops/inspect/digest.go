package inspect

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/projector"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// A model digest is a two-level Merkle tree: every identity's state is
// hashed (Entry), identities are partitioned into NumBuckets buckets by the
// first byte of sha256(id), a bucket's hash covers its entries in id order,
// and the root covers the bucket hashes. Two regions compare roots, then
// buckets, and fetch entries only of the buckets that differ.
//
// The hashed state is the stored CRDT state, deterministically encoded:
// states are canonical (sorted, deduplicated), so regions that applied the
// same events hold byte-identical states, and equal states mean equal
// views now and after any further event.

// NumBuckets is the number of buckets of a digest.
const NumBuckets = 256

// Kind selects what a digest covers.
type Kind string

// Kinds of digests.
const (
	// KindGlobal covers every identity's GLOBAL state; all regions hold it.
	KindGlobal Kind = "global"
	// KindResident covers the RESIDENT states held (unsealed); only the
	// regions of the identity's zone hold it.
	KindResident Kind = "resident"
)

// ErrKind is returned for an unknown Kind.
var ErrKind = errors.New("inspect: kind must be \"global\" or \"resident\"")

// ParseKind checks a kind name.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindGlobal, KindResident:
		return k, nil
	}
	return "", fmt.Errorf("%w, got %q", ErrKind, s)
}

// Unreadable is the entry digest of a resident state that cannot be
// opened here (its data key is gone, or it does not authenticate).
const Unreadable = "unreadable"

// Entry is one identity's state digest (hex, 128 bits).
type Entry struct {
	ID     string `json:"id"`
	Digest string `json:"digest"`
}

// Bucket is one bucket's hash (hex) and number of entries.
type Bucket struct {
	Hash  string `json:"hash"`
	Count int    `json:"count"`
}

// Digest is a model's digest of one kind.
type Digest struct {
	Region string `json:"region,omitempty"`
	Kind   Kind   `json:"kind"`
	// InboxSeq is the inbox sequence of the snapshot the digest was taken
	// from: it covers exactly the effects of the inbox up to it.
	InboxSeq uint64   `json:"inbox_seq"`
	Root     string   `json:"root"`
	Count    int      `json:"count"`
	Buckets  []Bucket `json:"buckets"`
	// Entries holds the entries of the buckets asked for, by bucket.
	Entries map[int][]Entry `json:"entries,omitempty"`
}

// StateRanger is a read model (*projector.Projector, *projector.Model).
type StateRanger interface {
	RangeStates(fn projector.StateVisitor) (uint64, error)
}

// BucketOf returns the bucket of an identity id.
func BucketOf(id string) int {
	h := sha256.Sum256([]byte(id))
	return int(h[0])
}

// Compute digests the model m. Entries are returned for the buckets in
// want (none when want is empty).
func Compute(m StateRanger, kind Kind, want []int) (*Digest, error) {
	if _, err := ParseKind(string(kind)); err != nil {
		return nil, err
	}
	wanted := map[int]bool{}
	for _, b := range want {
		if b < 0 || b >= NumBuckets {
			return nil, fmt.Errorf("inspect: bucket %d: must be in [0, %d)", b, NumBuckets)
		}
		wanted[b] = true
	}
	d := &Digest{Kind: kind, Buckets: make([]Bucket, NumBuckets)}
	if len(wanted) > 0 {
		d.Entries = map[int][]Entry{}
	}
	hashers := make([]hash.Hash, NumBuckets)
	for i := range hashers {
		hashers[i] = sha256.New()
	}
	enc := proto.MarshalOptions{Deterministic: true}
	var buf []byte
	seq, err := m.RangeStates(func(id string, global, resident *meridianv1.IdentityState, rerr error) error {
		var digest string
		switch {
		case kind == KindGlobal && global == nil:
			return nil
		case kind == KindGlobal:
			b, err := enc.MarshalAppend(buf[:0], global)
			if err != nil {
				return fmt.Errorf("inspect: encode state of %s: %w", id, err)
			}
			buf, digest = b, stateDigest(b)
		case rerr != nil:
			digest = Unreadable
		case resident == nil:
			return nil
		default:
			b, err := enc.MarshalAppend(buf[:0], resident)
			if err != nil {
				return fmt.Errorf("inspect: encode resident state of %s: %w", id, err)
			}
			buf, digest = b, stateDigest(b)
		}
		bk := BucketOf(id)
		h := hashers[bk]
		h.Write([]byte(id))
		h.Write([]byte{0})
		h.Write([]byte(digest))
		h.Write([]byte{0})
		d.Buckets[bk].Count++
		d.Count++
		if wanted[bk] {
			d.Entries[bk] = append(d.Entries[bk], Entry{ID: id, Digest: digest})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.InboxSeq = seq
	root := sha256.New()
	for i, h := range hashers {
		sum := h.Sum(nil)
		d.Buckets[i].Hash = hex.EncodeToString(sum)
		root.Write(sum)
	}
	d.Root = hex.EncodeToString(root.Sum(nil))
	for b := range wanted {
		if d.Entries[b] == nil {
			d.Entries[b] = []Entry{}
		}
	}
	return d, nil
}

func stateDigest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// DifferingBuckets lists the buckets whose hashes are not the same in
// every digest, in order.
func DifferingBuckets(ds ...*Digest) []int {
	var out []int
	for b := range NumBuckets {
		for _, d := range ds[1:] {
			if d.Buckets[b].Hash != ds[0].Buckets[b].Hash {
				out = append(out, b)
				break
			}
		}
	}
	return out
}

// EntryMap flattens a digest's entries: id -> digest.
func (d *Digest) EntryMap() map[string]string {
	m := map[string]string{}
	for _, es := range d.Entries {
		for _, e := range es {
			m[e.ID] = e.Digest
		}
	}
	return m
}

// Check reports a malformed digest (from another process).
func (d *Digest) Check() error {
	if len(d.Buckets) != NumBuckets {
		return fmt.Errorf("inspect: digest of %s has %d buckets, want %d", d.Region, len(d.Buckets), NumBuckets)
	}
	for b, es := range d.Entries {
		if b < 0 || b >= NumBuckets {
			return fmt.Errorf("inspect: digest of %s has entries for bucket %d", d.Region, b)
		}
		if !slices.IsSortedFunc(es, func(x, y Entry) int {
			switch {
			case x.ID < y.ID:
				return -1
			case x.ID > y.ID:
				return 1
			}
			return 0
		}) {
			return fmt.Errorf("inspect: digest of %s: bucket %d entries are not in id order", d.Region, b)
		}
	}
	return nil
}
