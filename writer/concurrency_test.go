package writer_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// 64 goroutines append through one writer: every acknowledged append's
// records are in the log at the acknowledged sequences, sequences are dense
// and unique, and nothing is lost or duplicated.
func TestConcurrentAppends(t *testing.T) {
	e := newEnv(t, "eu-west")
	const goroutines, perG = 64, 25
	ids := make([]string, 16)
	for i := range ids {
		ids[i] = newIdentity()
	}
	type ack struct {
		eventID     string
		first, last uint64
	}
	acks := make([][]ack, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				id := ids[(g+i)%len(ids)]
				ev := roleGranted(id, "eu-west", "r")
				if i%2 == 1 {
					ev = traitsUpdated(id, "eu-west", &meridianv1.Traits{Name: ptr("name"), Locale: ptr("en")})
				}
				res, err := e.w.Append(context.Background(), ev)
				if err != nil {
					t.Error(err)
					return
				}
				acks[g] = append(acks[g], ack{res.EventIDs[0], res.First, res.Last})
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	recs := e.records(t) // also checks each record's stamped sequence
	if uint64(len(recs)) != e.log.LastSeq() {
		t.Fatalf("%d records readable; LastSeq %d", len(recs), e.log.LastSeq())
	}
	var ranges [][2]uint64
	for _, as := range acks {
		for _, a := range as {
			ranges = append(ranges, [2]uint64{a.first, a.last})
			g := recs[a.first-1]
			if g.EventId != a.eventID || g.Part != meridianv1.Part_PART_GLOBAL {
				t.Fatalf("ack %s at seq %d, but the log holds %s (%v)", a.eventID, a.first, g.EventId, g.Part)
			}
			for s := a.first; s <= a.last; s++ {
				if r := recs[s-1]; r.Part != meridianv1.Part_PART_KEY && r.EventId != a.eventID {
					t.Fatalf("seq %d inside the range of %s holds %s", s, a.eventID, r.EventId)
				}
			}
		}
	}
	if len(ranges) != goroutines*perG {
		t.Fatalf("%d acks; want %d", len(ranges), goroutines*perG)
	}
	slices.SortFunc(ranges, func(a, b [2]uint64) int { return int(a[0]) - int(b[0]) })
	next := uint64(1)
	for _, r := range ranges {
		if r[0] != next {
			t.Fatalf("sequence gap or overlap: range %v after %d", r, next-1)
		}
		next = r[1] + 1
	}
	if next-1 != e.log.LastSeq() {
		t.Fatalf("acks cover 1..%d; LastSeq %d", next-1, e.log.LastSeq())
	}
	if m := e.w.Metrics(); m.KeysCreated != uint64(len(ids)) || m.Appends != goroutines*perG {
		t.Errorf("metrics %+v; want one key per identity (%d) and %d appends", m, len(ids), goroutines*perG)
	}
}
