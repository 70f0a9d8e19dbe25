package projector

import (
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// The erased marker path (Projector.Erased: one point read) agrees with the
// state path (the GLOBAL state's tombstone) for identities never seen,
// live, erased after living, erased by their first event, and erased then
// written to; in the live model, in a rebuilt one, in a model of an older
// build (no markers) read-only (fallback) and writable (backfilled on
// open).
func TestErasedMarkerAgreesWithState(t *testing.T) {
	w := newWorld(t)
	live, erasedLater, erasedFirst, erasedThenWritten, unknown, lateErased := newID(), newID(), newID(), newID(), newID(), newID()
	w.append(created(live, "live@example.org", "Live"), created(erasedLater, "later@example.org", "Later"),
		created(erasedThenWritten, "written@example.org", "Written"), created(lateErased, "late@example.org", "Late"))
	w.append(grant(live, "member"), erase(erasedLater))
	w.append(erase(erasedFirst))
	w.append(erase(erasedThenWritten))
	w.append(grant(erasedThenWritten, "member"), withBody(erasedThenWritten, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: ptr("Late")}}))

	cases := []struct {
		name   string
		id     string
		erased bool
	}{
		{"unknown", unknown, false},
		{"live", live, false},
		{"erased after living", erasedLater, true},
		{"erased by its first event", erasedFirst, true},
		{"erased, then written to", erasedThenWritten, true},
		{"live, erased after a restart", lateErased, false},
	}
	// check compares the marker path, the state path and the fallback
	// for every case on the engine e.
	check := func(t *testing.T, where string, e *engine, erased func(id string) (bool, error)) {
		t.Helper()
		for _, c := range cases {
			got, err := erased(c.id)
			if err != nil {
				t.Fatalf("%s: %s: Erased: %v", where, c.name, err)
			}
			g, err := e.store.global(c.id)
			if err != nil {
				t.Fatalf("%s: %s: state: %v", where, c.name, err)
			}
			state := e.merger.Erased(g)
			s := *e.store
			s.markers = false
			fallback, err := s.isErased(c.id)
			if err != nil {
				t.Fatalf("%s: %s: fallback: %v", where, c.name, err)
			}
			if got != c.erased || state != c.erased || fallback != c.erased {
				t.Errorf("%s: %s: marker %v, state %v, fallback %v; want %v", where, c.name, got, state, fallback, c.erased)
			}
		}
	}

	p := w.start()
	w.sync(p)
	if !p.eng.store.markers {
		t.Fatal("a new model has no complete markers")
	}
	check(t, "live model", p.eng, p.Erased)

	// A rebuild applies through the same batch: the same markers.
	dir := filepath.Join(t.TempDir(), "rebuilt")
	if _, err := Rebuild(testCtx(t), RebuildConfig{JS: w.js, Stream: w.stream, Dir: dir, Zone: testZone, Keys: w.keys, ZoneKeys: w.zones, Now: w.now.Load, BatchSize: 2}); err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel(dir, w.keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !m.eng.store.markers {
		t.Fatal("rebuilt model has no complete markers")
	}
	check(t, "rebuilt model", m.eng, m.eng.store.isErased)
	m.Close()

	// A model of an older build: no markers, no metaMarkers.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := openStore(w.dir, false)
	if err != nil {
		t.Fatal(err)
	}
	wb := s.db.NewBatch()
	if err := wb.DeleteRange([]byte{pErased}, []byte{pErased + 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := wb.Delete(metaMarkers, nil); err != nil {
		t.Fatal(err)
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	wb.Close()
	if err := s.close(); err != nil {
		t.Fatal(err)
	}

	// Read-only: nothing to backfill with; answers from the states.
	m, err = OpenModel(w.dir, w.keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.eng.store.markers {
		t.Fatal("read-only model of an older build claims complete markers")
	}
	check(t, "old model, read-only", m.eng, m.eng.store.isErased)
	m.Close()

	// Writable: backfilled on open.
	p = w.start()
	if !p.eng.store.markers {
		t.Fatal("markers not backfilled on open")
	}
	for _, c := range cases {
		_, held, err := p.eng.store.get(erasedKey(c.id))
		if err != nil || held != c.erased {
			t.Fatalf("%s: marker held %v (%v) after backfill, want %v", c.name, held, err, c.erased)
		}
	}
	check(t, "old model, backfilled", p.eng, p.Erased)

	// New erasures after the restart get their marker with the tombstone.
	w.append(erase(lateErased))
	w.sync(p)
	cases[len(cases)-1].erased = true
	check(t, "after a later erasure", p.eng, p.Erased)
}

// stateErased reads the tombstone off the encoding exactly as the decoded
// state shows it.
func TestStateErased(t *testing.T) {
	for _, c := range []struct {
		name string
		st   *meridianv1.IdentityState
		want bool
	}{
		{"empty", &meridianv1.IdentityState{}, false},
		{"live", &meridianv1.IdentityState{IdentityId: newID(), UpdatedHlc: 7}, false},
		{"erased, empty stamp", &meridianv1.IdentityState{IdentityId: newID(), Erased: &meridianv1.Stamp{}}, true},
		{"erased", &meridianv1.IdentityState{IdentityId: newID(), Erased: &meridianv1.Stamp{Hlc: 9}, UpdatedHlc: 9}, true},
	} {
		var e stateEncoder
		b, err := e.encode(nil, c.st)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := stateErased(b)
		if err != nil || got != c.want {
			t.Errorf("%s: stateErased %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	if _, err := stateErased([]byte{0x32, 0x05, 0x01}); err == nil {
		t.Error("truncated state: no error")
	}
}

// BenchmarkErased is the writer's per-append tombstone check: the erased
// marker (Projector.Erased) against what it replaced (Projector.Stored and
// the state's tombstone), over live identities (the common answer, a
// miss) held in the memtable and, after a flush, in an SSTable.
//
//	go test ./projector -run '^$' -bench BenchmarkErased
func BenchmarkErased(b *testing.B) {
	w := newWorld(b)
	ids := make([]string, 512)
	evs := make([]*meridianv1.Event, 0, len(ids))
	for i := range ids {
		ids[i] = newID()
		evs = append(evs, created(ids[i], "", "Bench Person"))
	}
	w.append(evs...)
	p := w.start()
	w.sync(p)
	for _, flushed := range []bool{false, true} {
		if flushed {
			if err := p.eng.store.db.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		where := "memtable"
		if flushed {
			where = "sstable"
		}
		b.Run("path=stored/"+where, func(b *testing.B) {
			b.ReportAllocs()
			for i := range b.N {
				g, _, err := p.Stored(ids[i%len(ids)])
				if err != nil || g.GetErased() != nil {
					b.Fatal(g, err)
				}
			}
		})
		b.Run("path=marker/"+where, func(b *testing.B) {
			b.ReportAllocs()
			for i := range b.N {
				if erased, err := p.Erased(ids[i%len(ids)]); err != nil || erased {
					b.Fatal(erased, err)
				}
			}
		})
	}
}
