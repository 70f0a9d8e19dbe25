package projector

import (
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// TestObservedPersists: the projector's causal context names, per origin
// node, the newest HLC of the GLOBAL records it applied; it is committed
// with the states and restored on open.
func TestObservedPersists(t *testing.T) {
	w := newWorld(t)
	p := w.start()
	if got := p.Observed(); len(got) != 0 {
		t.Fatalf("empty model observed %v", got)
	}
	id := newID()
	w.append(created(id, "obs@example.org", "Obs"))
	w.append(grant(id, "admin"), grant(id, "viewer"))
	if _, err := w.origin.w.AppendHeartbeat(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	w.ship(w.origin)
	w.sync(p)

	// The newest HLC among the origin's GLOBAL records.
	recs, err := w.origin.log.Read(1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var want uint64
	for _, rec := range recs {
		var ev meridianv1.Event
		if err := proto.Unmarshal(rec.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetPart() == meridianv1.Part_PART_GLOBAL {
			want = max(want, ev.GetHlc())
		}
	}
	got := p.Observed()
	if len(got) != 1 || got[w.origin.node] != want || want == 0 {
		t.Fatalf("Observed() = %v, want {%s: %d}", got, w.origin.node, want)
	}
	got["x"] = 1 // the caller's copy
	if _, ok := p.Observed()["x"]; ok {
		t.Fatal("Observed returned the projector's own map")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := p.Observed(); got != nil {
		t.Fatalf("closed projector observed %v", got)
	}
	var none *Projector
	if got := none.Observed(); got != nil {
		t.Fatalf("nil projector observed %v", got)
	}

	p2 := w.start()
	if got := p2.Observed(); len(got) != 1 || got[w.origin.node] != want {
		t.Fatalf("after reopening, Observed() = %v, want {%s: %d}", got, w.origin.node, want)
	}
}
