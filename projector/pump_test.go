package projector

import (
	"context"
	"testing"
)

// The handoff keeps the order, wakes the pump once per run, holds a
// producer at a full run until the pump takes it, and lets it go (dropping
// its message) once the context is done.
func TestHandoff(t *testing.T) {
	h := &handoff{max: 3, fill: make([]inMsg, 0, 3), ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for seq := uint64(1); seq <= 3; seq++ {
		h.put(ctx, inMsg{Seq: seq})
	}
	select {
	case <-h.ready:
	default:
		t.Fatal("no wake-up for a filled run")
	}
	put := make(chan struct{})
	go func() {
		h.put(ctx, inMsg{Seq: 4}) // waits: the run is full
		close(put)
	}()
	run := h.take(nil)
	if len(run) != 3 || run[0].Seq != 1 || run[2].Seq != 3 {
		t.Fatalf("first run %+v", run)
	}
	<-put
	<-h.ready // the fourth message started a new run
	if run := h.take(run); len(run) != 1 || run[0].Seq != 4 {
		t.Fatalf("second run %+v", run)
	}
	if run := h.take(nil); len(run) != 0 {
		t.Fatalf("empty take gave %+v", run)
	}

	// A producer held at a full run is let go by the context.
	for seq := uint64(5); seq <= 7; seq++ {
		h.put(ctx, inMsg{Seq: seq})
	}
	<-h.space // drop the token of the takes above
	dropped := make(chan struct{})
	go func() {
		h.put(ctx, inMsg{Seq: 8})
		close(dropped)
	}()
	cancel()
	<-dropped
	if run := h.take(nil); len(run) != 3 || run[2].Seq != 7 {
		t.Fatalf("run after cancel %+v", run)
	}
}
