package ops

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/meridian-id/meridian/ops/inspect"
)

// DigestSource is a read model that can be digested: a node over HTTP or
// a model opened here.
type DigestSource interface {
	Name() string
	Digest(ctx context.Context, kind inspect.Kind, buckets []int) (*inspect.Digest, error)
}

// NodeSource digests a running node's model over its admin API.
type NodeSource struct{ Client *NodeClient }

// Name is the node's region.
func (s NodeSource) Name() string { return s.Client.Region }

// Digest asks the node.
func (s NodeSource) Digest(ctx context.Context, kind inspect.Kind, buckets []int) (*inspect.Digest, error) {
	return s.Client.Digest(ctx, kind, buckets)
}

// ModelSource digests a model opened in this process (*projector.Model of
// a stopped node or a rebuilt workspace, or a running *projector.Projector).
type ModelSource struct {
	Label string
	Model inspect.StateRanger
}

// Name is the label.
func (s ModelSource) Name() string { return s.Label }

// Digest computes it here.
func (s ModelSource) Digest(_ context.Context, kind inspect.Kind, buckets []int) (*inspect.Digest, error) {
	d, err := inspect.Compute(s.Model, kind, buckets)
	if err != nil {
		return nil, err
	}
	d.Region = s.Label
	return d, nil
}

// Difference is an identity whose state is not the same in every source.
type Difference struct {
	Identity string `json:"identity"`
	Bucket   int    `json:"bucket"`
	// Digests by source; "" means the source does not hold the identity.
	Digests map[string]string `json:"digests"`
	// Odd lists the sources that disagree with a strict majority, when
	// there is one (the likely culprits).
	Odd []string `json:"odd,omitempty"`
}

// Comparison is the outcome of comparing sources on one kind.
type Comparison struct {
	Kind inspect.Kind `json:"kind"`
	// Scope says which sources were compared ("all regions", "zone eu").
	Scope   string   `json:"scope,omitempty"`
	Sources []string `json:"sources"`
	// Per source: the inbox sequence the (last) digest covered, its root
	// and its number of identities.
	InboxSeq   map[string]uint64 `json:"inbox_seq"`
	Roots      map[string]string `json:"roots"`
	Identities map[string]int    `json:"identities"`
	Equal      bool              `json:"equal"`
	// BucketsDiffering is the number of buckets whose hashes differed at
	// first; Differences what is left after settling and exclusions.
	BucketsDiffering int          `json:"buckets_differing"`
	Differences      []Difference `json:"differences"`
	// Excluded counts differences left out because the sources did not
	// cover the same events for them (replay verification).
	Excluded int `json:"excluded,omitempty"`
}

// CompareOptions tunes Compare.
type CompareOptions struct {
	// Settle, when positive, re-checks differing identities every
	// SettleEvery until they agree or Settle has passed: with writes
	// replicating, regions momentarily disagree on identities in flight.
	Settle      time.Duration
	SettleEvery time.Duration // default 250 ms
}

// Compare digests every source and lists the identities that differ,
// fetching entries only of the buckets whose hashes differ.
func Compare(ctx context.Context, kind inspect.Kind, sources []DigestSource, opts CompareOptions) (*Comparison, error) {
	if len(sources) == 0 {
		return nil, invalidf("sources", "at least one is required")
	}
	if opts.SettleEvery <= 0 {
		opts.SettleEvery = 250 * time.Millisecond
	}
	c := &Comparison{Kind: kind, InboxSeq: map[string]uint64{}, Roots: map[string]string{}, Identities: map[string]int{}, Differences: []Difference{}}
	for _, s := range sources {
		c.Sources = append(c.Sources, s.Name())
	}
	ds, err := digestAll(ctx, sources, kind, nil)
	if err != nil {
		return nil, err
	}
	for i, d := range ds {
		name := sources[i].Name()
		c.InboxSeq[name], c.Roots[name], c.Identities[name] = d.InboxSeq, d.Root, d.Count
	}
	buckets := inspect.DifferingBuckets(ds...)
	c.BucketsDiffering = len(buckets)
	if len(buckets) == 0 {
		c.Equal = true
		return c, nil
	}
	diffs, err := entryDiffs(ctx, c, sources, kind, buckets, nil)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(opts.Settle)
	for len(diffs) > 0 && opts.Settle > 0 && time.Now().Before(deadline) {
		t := time.NewTimer(opts.SettleEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		// Only the identities still in doubt: one that agreed once and
		// changes again is a new write, not a divergence.
		doubt := map[string]bool{}
		var bs []int
		for _, d := range diffs {
			doubt[d.Identity] = true
			if !slices.Contains(bs, d.Bucket) {
				bs = append(bs, d.Bucket)
			}
		}
		slices.Sort(bs)
		if diffs, err = entryDiffs(ctx, c, sources, kind, bs, doubt); err != nil {
			return nil, err
		}
	}
	c.Differences = diffs
	c.Equal = len(diffs) == 0
	return c, nil
}

// digestAll asks every source at once.
func digestAll(ctx context.Context, sources []DigestSource, kind inspect.Kind, buckets []int) ([]*inspect.Digest, error) {
	ds := make([]*inspect.Digest, len(sources))
	errs := make([]error, len(sources))
	var wg sync.WaitGroup
	for i, s := range sources {
		wg.Go(func() {
			ds[i], errs[i] = s.Digest(ctx, kind, buckets)
			if errs[i] == nil && len(ds[i].Buckets) != inspect.NumBuckets {
				errs[i] = fmt.Errorf("ops: digest of %s has %d buckets", s.Name(), len(ds[i].Buckets))
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, &RegionError{Region: sources[i].Name(), Op: "digest " + string(kind), Err: err}
		}
	}
	return ds, nil
}

// entryDiffs fetches the entries of buckets from every source and returns
// the identities (restricted to only, if set) whose digests differ.
func entryDiffs(ctx context.Context, c *Comparison, sources []DigestSource, kind inspect.Kind, buckets []int, only map[string]bool) ([]Difference, error) {
	ds, err := digestAll(ctx, sources, kind, buckets)
	if err != nil {
		return nil, err
	}
	ems := make([]map[string]string, len(ds))
	ids := map[string]bool{}
	for i, d := range ds {
		name := sources[i].Name()
		c.InboxSeq[name] = max(c.InboxSeq[name], d.InboxSeq)
		ems[i] = d.EntryMap()
		for id := range ems[i] {
			if only == nil || only[id] {
				ids[id] = true
			}
		}
	}
	var diffs []Difference
	for _, id := range sortedKeys(ids) {
		d := Difference{Identity: id, Bucket: inspect.BucketOf(id), Digests: map[string]string{}}
		same := true
		for i, m := range ems {
			d.Digests[sources[i].Name()] = m[id]
			if m[id] != ems[0][id] {
				same = false
			}
		}
		if same {
			continue
		}
		d.Odd = oddOnes(d.Digests)
		diffs = append(diffs, d)
	}
	return diffs, nil
}

// oddOnes returns the sources whose digest differs from a strict
// majority's.
func oddOnes(digests map[string]string) []string {
	votes := map[string]int{}
	for _, v := range digests {
		votes[v]++
	}
	for v, n := range votes {
		if 2*n > len(digests) {
			var odd []string
			for src, dv := range digests {
				if dv != v {
					odd = append(odd, src)
				}
			}
			slices.Sort(odd)
			return odd
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
