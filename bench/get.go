package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// getter is the query side measured by get_p50/p99_us
// (*projector.Projector).
type getter interface {
	Get(ctx context.Context, id string) (*meridianv1.Identity, error)
}

// measureGets reads n identities (drawn at random from ids) one after
// another and returns the sorted latencies. Every read must hold the
// RESIDENT name (unsealed on read), so that the figure is a real read of
// merged state and not of an empty answer.
func measureGets(ctx context.Context, g getter, ids []string, n int, seed uint64) ([]time.Duration, error) {
	r := rand.New(rand.NewPCG(seed, 7))
	lat := make([]time.Duration, n)
	for i := range lat {
		id := ids[r.IntN(len(ids))]
		t := time.Now()
		ident, err := g.Get(ctx, id)
		lat[i] = time.Since(t)
		if err != nil {
			return nil, fmt.Errorf("bench: get %s: %w", id, err)
		}
		if ident.GetTraits().GetName() == "" {
			return nil, fmt.Errorf("bench: get %s: no traits.name: the RESIDENT state was not read", id)
		}
	}
	slices.Sort(lat)
	return lat, nil
}
