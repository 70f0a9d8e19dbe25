package projector

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// sameStates compares two models' GLOBAL and RESIDENT states.
func sameStates(a, b interface {
	RangeStates(StateVisitor) (uint64, error)
}) error {
	type pair struct{ g, r *meridianv1.IdentityState }
	collect := func(m interface {
		RangeStates(StateVisitor) (uint64, error)
	}) (map[string]pair, uint64, error) {
		out := map[string]pair{}
		seq, err := m.RangeStates(func(id string, g, r *meridianv1.IdentityState, rerr error) error {
			if rerr != nil {
				return fmt.Errorf("%s: %w", id, rerr)
			}
			out[id] = pair{g, r}
			return nil
		})
		return out, seq, err
	}
	sa, qa, err := collect(a)
	if err != nil {
		return err
	}
	sb, qb, err := collect(b)
	if err != nil {
		return err
	}
	if qa != qb {
		return fmt.Errorf("inbox seq %d vs %d", qa, qb)
	}
	if len(sa) != len(sb) || len(sa) == 0 {
		return fmt.Errorf("%d identities vs %d", len(sa), len(sb))
	}
	for id, x := range sa {
		y := sb[id]
		if !proto.Equal(x.g, y.g) || !proto.Equal(x.r, y.r) {
			return fmt.Errorf("identity %s differs", id)
		}
	}
	return nil
}

// TestSwapWhileConsuming swaps a rebuilt model into a running projector
// while events keep arriving: the rebuilt model is caught up to exactly the
// live position (verified equal there), swapped in, and consumption goes on
// from it; the result equals a clean rebuild of the whole inbox.
func TestSwapWhileConsuming(t *testing.T) {
	w := newWorld(t)
	var ids []string
	for i := range 20 {
		id := newID()
		ids = append(ids, id)
		w.append(created(id, fmt.Sprintf("s%d@example.org", i), "S"), grant(id, "a"), loginFailed(id))
	}
	w.append(erase(ids[3]))
	p := w.start()
	w.sync(p)

	built := filepath.Join(t.TempDir(), "ws", "model")
	if _, err := Rebuild(testCtx(t), RebuildConfig{JS: w.js, Stream: w.stream, Dir: built, Zone: testZone, Keys: w.keys, ZoneKeys: w.zones, Now: w.now.Load}); err != nil {
		t.Fatal(err)
	}
	// Writes continue during the swap.
	ctx, stop := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil && i < 200; i++ {
			w.append(loginFailed(ids[i%len(ids)]), grant(ids[(i+1)%len(ids)], fmt.Sprintf("r%d", i)))
		}
	})
	verified := false
	rep, err := p.Swap(testCtx(t), SwapConfig{Dir: built, Verify: func(_ context.Context, m *Model) error {
		if m.InboxSeq() != p.eng.inboxSeqSnapshot() {
			return fmt.Errorf("built at %d, live at %d", m.InboxSeq(), p.eng.inboxSeqSnapshot())
		}
		verified = true
		return sameStates(p, m)
	}})
	stop()
	wg.Wait()
	if err != nil {
		t.Fatalf("swap: %v (%+v)", err, rep)
	}
	t.Logf("swap: %+v", rep)
	if !verified || rep.LiveSeq < rep.BuiltSeq || rep.CaughtUp != rep.LiveSeq-rep.BuiltSeq {
		t.Fatalf("report %+v (verified %v)", rep, verified)
	}
	if exists(built) || !exists(rep.Replaced) || exists(w.dir+SwapMarker) {
		t.Fatalf("after the swap: built %v, replaced %v, marker %v", exists(built), exists(rep.Replaced), exists(w.dir+SwapMarker))
	}
	// Consumption resumed from the swapped model.
	w.append(grant(ids[0], "after"))
	w.sync(p)
	if got, err := p.Get(testCtx(t), ids[0]); err != nil || !containsStr(got.GetRoles(), "after") {
		t.Fatalf("after the swap: %v, %v", got, err)
	}
	if _, err := p.Get(testCtx(t), ids[3]); !errors.Is(err, ErrErased) {
		t.Fatalf("erased identity after the swap: %v", err)
	}
	clean := filepath.Join(t.TempDir(), "clean")
	if _, err := Rebuild(testCtx(t), RebuildConfig{JS: w.js, Stream: w.stream, Dir: clean, Zone: testZone, Keys: w.keys, ZoneKeys: w.zones, Now: w.now.Load}); err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel(clean, w.keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := sameStates(p, m); err != nil {
		t.Fatalf("swapped model vs a clean rebuild: %v", err)
	}
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestSwapBadInput: every bad argument names the field and changes nothing.
func TestSwapBadInput(t *testing.T) {
	w := newWorld(t)
	id := newID()
	w.append(created(id, "bad@example.org", "B"))
	p := w.start()
	w.sync(p)
	notModel := t.TempDir()
	empty := filepath.Join(t.TempDir(), "empty")
	if _, err := Rebuild(testCtx(t), RebuildConfig{JS: w.js, Stream: w.stream, Dir: empty, FromSeq: w.lastSeq() + 1, Zone: testZone, Keys: w.keys, ZoneKeys: w.zones}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, []byte("x"), 0o600)
	for _, tc := range []struct {
		name  string
		cfg   SwapConfig
		field string
	}{
		{"missing", SwapConfig{}, "Dir"},
		{"relative", SwapConfig{Dir: "rel/model"}, "Dir"},
		{"live itself", SwapConfig{Dir: w.dir}, "Dir"},
		{"inside live", SwapConfig{Dir: filepath.Join(w.dir, "x")}, "Dir"},
		{"absent", SwapConfig{Dir: filepath.Join(notModel, "nope")}, "Dir"},
		{"a file", SwapConfig{Dir: file}, "Dir"},
		{"not a model", SwapConfig{Dir: notModel}, "Dir"},
		{"empty model", SwapConfig{Dir: empty}, "Dir"},
		{"aside elsewhere", SwapConfig{Dir: empty, Aside: filepath.Join(notModel, "aside")}, "Aside"},
		{"negative timeout", SwapConfig{Dir: empty, LiveTimeout: -1}, "LiveTimeout"},
	} {
		_, err := p.Swap(testCtx(t), tc.cfg)
		var inv *InvalidError
		if !errors.As(err, &inv) || inv.Field != tc.field {
			t.Errorf("%s: err = %v, want an invalid %s", tc.name, err, tc.field)
		}
	}
	if exists(w.dir+SwapMarker) || !exists(empty) {
		t.Fatal("a refused swap changed files")
	}
	if _, err := p.Get(testCtx(t), id); err != nil {
		t.Fatalf("projector after refused swaps: %v", err)
	}
	w.append(grant(id, "still"))
	w.sync(p)
}

// TestRecoverSwap settles each state a crash can leave.
func TestRecoverSwap(t *testing.T) {
	setup := func(t *testing.T, live, aside, incoming bool) (string, swapMarker) {
		d := t.TempDir()
		m := swapMarker{Live: filepath.Join(d, "model"), Aside: filepath.Join(d, "model.replaced-1"), Incoming: filepath.Join(d, "ws", "model")}
		mk := func(dir, tag string) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, "tag"), []byte(tag), 0o600)
		}
		if live {
			mk(m.Live, "live")
		}
		if aside {
			mk(m.Aside, "old")
		}
		if incoming {
			mk(m.Incoming, "new")
		}
		if err := writeMarker(m.Live+SwapMarker, m); err != nil {
			t.Fatal(err)
		}
		return m.Live, m
	}
	tag := func(dir string) string { b, _ := os.ReadFile(filepath.Join(dir, "tag")); return string(b) }
	for _, tc := range []struct {
		name                   string
		live, aside, incoming  bool
		wantTag, wantOutcome   string
		wantErr, incomingAfter bool
	}{
		{name: "marker only", live: true, incoming: true, wantTag: "live", wantOutcome: "rolled back", incomingAfter: true},
		{name: "moved aside", aside: true, incoming: true, wantTag: "new", wantOutcome: "completed"},
		{name: "moved in", live: true, aside: true, wantTag: "live", wantOutcome: "completed"},
		{name: "nothing", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live, m := setup(t, tc.live, tc.aside, tc.incoming)
			out, err := RecoverSwap(live)
			if tc.wantErr {
				if err == nil || !exists(live+SwapMarker) {
					t.Fatalf("err %v, marker kept %v", err, exists(live+SwapMarker))
				}
				return
			}
			if err != nil || len(out) < len(tc.wantOutcome) || out[:len(tc.wantOutcome)] != tc.wantOutcome {
				t.Fatalf("outcome %q, %v", out, err)
			}
			if got := tag(live); got != tc.wantTag {
				t.Fatalf("live holds %q, want %q", got, tc.wantTag)
			}
			if exists(live+SwapMarker) || exists(m.Incoming) != tc.incomingAfter {
				t.Fatalf("marker %v, incoming %v", exists(live+SwapMarker), exists(m.Incoming))
			}
			if out, err := RecoverSwap(live); out != "" || err != nil {
				t.Fatalf("second recovery: %q, %v", out, err)
			}
		})
	}
}
