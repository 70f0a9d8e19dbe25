package keystore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func TestCreateCurrentGetKeys(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	const id = "0193a6c2-0000-7000-8000-000000000001"

	if _, ok, err := s.Current(id); err != nil || ok {
		t.Fatalf("Current on empty store = ok %v, err %v; want none", ok, err)
	}
	k1, err := s.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	if k1.Published || k1.ID == "" || k1.Material == ([KeySize]byte{}) {
		t.Fatalf("new key = %+v; want unpublished, with id and material", k1)
	}
	cur, ok, err := s.Current(id)
	if err != nil || !ok || !cur.Equal(k1) {
		t.Fatalf("Current = %+v %v %v; want %+v", cur, ok, err, k1)
	}
	k2, err := s.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	if k2.Material == k1.Material || k2.ID == k1.ID {
		t.Fatal("two keys share id or material")
	}
	if cur, _, _ := s.Current(id); cur.ID != k2.ID {
		t.Fatalf("Current after second Create = %s; want the new key %s", cur.ID, k2.ID)
	}
	got, err := s.Get(id, k1.ID)
	if err != nil || !got.Equal(k1) {
		t.Fatalf("Get = %+v %v; want %+v", got, err, k1)
	}
	keys, err := s.Keys(id)
	if err != nil || len(keys) != 2 {
		t.Fatalf("Keys = %d keys, %v; want 2", len(keys), err)
	}
	if _, err := s.Get(id, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown = %v; want ErrNotFound", err)
	}
	if err := s.MarkPublished(id, k2.ID); err != nil {
		t.Fatal(err)
	}
	if cur, _, _ := s.Current(id); !cur.Published {
		t.Fatal("Current not Published after MarkPublished (stale cache?)")
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	const id = "id-1"
	k, err := s.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	cur, ok, err := s.Current(id)
	if err != nil || !ok || !cur.Equal(k) {
		t.Fatalf("after reopen Current = %+v %v %v; want %+v", cur, ok, err, k)
	}
}

func TestPut(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	const id = "id-put"
	remote := bytes.Repeat([]byte{7}, KeySize)
	if err := s.Put(id, "remote-1", remote); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(id, "remote-1", remote); err != nil {
		t.Fatalf("idempotent Put: %v", err)
	}
	cur, ok, err := s.Current(id)
	if err != nil || !ok || cur.ID != "remote-1" || !cur.Published {
		t.Fatalf("Current after Put = %+v %v %v; want remote-1, published", cur, ok, err)
	}
	// A key that arrives later does not displace the current one.
	if err := s.Put(id, "remote-2", bytes.Repeat([]byte{8}, KeySize)); err != nil {
		t.Fatal(err)
	}
	if cur, _, _ := s.Current(id); cur.ID != "remote-1" {
		t.Fatalf("Current = %s; want remote-1 to stay current", cur.ID)
	}
	if err := s.Put(id, "remote-1", bytes.Repeat([]byte{9}, KeySize)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Put with different material = %v; want ErrInvalid", err)
	}
	if m := s.Metrics(); m.Put != 2 {
		t.Fatalf("Metrics.Put = %d; want 2", m.Put)
	}
}

func TestInvalidArguments(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"empty identity", func() error { _, err := s.Create(""); return err }},
		{"NUL in identity", func() error { _, _, err := s.Current("a\x00b"); return err }},
		{"long identity", func() error { _, err := s.Keys(strings.Repeat("x", maxIDLen+1)); return err }},
		{"empty key id", func() error { return s.Put("id", "", make([]byte, KeySize)) }},
		{"short material", func() error { return s.Put("id", "k", make([]byte, 16)) }},
		{"bad key in a batch", func() error {
			return s.PutMany([]PutKey{{"id", "k", make([]byte, KeySize)}, {"id", "", make([]byte, KeySize)}})
		}},
		{"empty destroy", func() error { _, err := s.Destroy(""); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v; want ErrInvalid", err)
			}
		})
	}
	if _, err := Open(Options{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Open without Dir = %v; want ErrInvalid", err)
	}
}

func TestClosed(t *testing.T) {
	s := openStore(t, t.TempDir())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Create":  func() error { _, err := s.Create("id"); return err }(),
		"Current": func() error { _, _, err := s.Current("id"); return err }(),
		"Put":     s.Put("id", "k", make([]byte, KeySize)),
		"Destroy": func() error { _, err := s.Destroy("id"); return err }(),
		"Close":   s.Close(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v; want ErrClosed", name, err)
		}
	}
}

// Concurrent first writes of one identity must agree on a single key.
func TestCurrentOrCreateConcurrent(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	const id = "id-race"
	var wg sync.WaitGroup
	keys := make([]Key, 32)
	created := make([]bool, len(keys))
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			keys[i], created[i], err = s.CurrentOrCreate(id)
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	n := 0
	for i := range keys {
		if created[i] {
			n++
		}
		if !keys[i].Equal(keys[0]) {
			t.Fatalf("caller %d got key %s; caller 0 got %s", i, keys[i].ID, keys[0].ID)
		}
	}
	if n != 1 {
		t.Fatalf("%d callers created a key; want exactly 1", n)
	}
	if all, _ := s.Keys(id); len(all) != 1 {
		t.Fatalf("store holds %d keys; want 1", len(all))
	}
}

// The shredding filesystem intercepts moves into <Dir>/archive only; a store
// whose own directory is called "archive" must work normally.
func TestDirNamedArchive(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "archive")
	s := openStore(t, dir)
	k, err := s.Create("id")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Destroy("other"); err != nil { // flush + compaction: renames, obsolete files
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	if got, err := s.Get("id", k.ID); err != nil || !got.Equal(k) {
		t.Fatalf("after reopen: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "archive")); !os.IsNotExist(err) {
		t.Errorf("an archive directory was created: %v", err)
	}
}

// A full cache evicts and reloads; answers stay correct, and a disabled
// cache works too (cache_test.go tests the cache itself).
func TestCacheBound(t *testing.T) {
	for _, n := range []int{2, -1} {
		s, err := Open(Options{Dir: t.TempDir(), CacheEntries: n})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]Key{}
		for i := range 5 {
			id := string(rune('a' + i))
			k, created, err := s.CurrentOrCreate(id)
			if err != nil || !created {
				t.Fatalf("CurrentOrCreate(%s) = %v, %v", id, created, err)
			}
			want[id] = k
		}
		for round := range 2 {
			for id, k := range want {
				got, created, err := s.CurrentOrCreate(id)
				if err != nil || created || !got.Equal(k) {
					t.Fatalf("cache %d round %d: %s = %v created=%v err=%v; want %v", n, round, id, got, created, err, k)
				}
			}
		}
		s.Close()
	}
}

// PutMany stores a batch of keys with one write, all or none; with the
// cache on and off, every answer after it (and after Destroy, MarkPublished
// and a reopen) is what Pebble holds.
func TestPutManyAndCache(t *testing.T) {
	for _, entries := range []int{0, -1} {
		dir := t.TempDir()
		s, err := Open(Options{Dir: dir, CacheEntries: entries})
		if err != nil {
			t.Fatal(err)
		}
		m := func(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }
		// A conflict anywhere stores nothing.
		if err := s.Put("a", "a1", m(1)); err != nil {
			t.Fatal(err)
		}
		err = s.PutMany([]PutKey{{"b", "b1", m(2)}, {"a", "a1", m(9)}})
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("cache %d: conflicting PutMany = %v; want ErrInvalid", entries, err)
		}
		if _, err := s.Get("b", "b1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("cache %d: a refused PutMany stored b1: %v", entries, err)
		}
		// Several identities, two keys of one: its first becomes current.
		if err := s.PutMany([]PutKey{{"b", "b1", m(2)}, {"c", "c1", m(3)}, {"b", "b2", m(4)}, {"a", "a1", m(1)}}); err != nil {
			t.Fatal(err)
		}
		if k, ok, err := s.Current("b"); err != nil || !ok || k.ID != "b1" {
			t.Fatalf("cache %d: Current(b) = %v %v %v; want b1", entries, k, ok, err)
		}
		// A key made here is unpublished until marked.
		k, err := s.Create("d")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.MarkPublished("d", k.ID); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := s.CurrentOrCreate("d"); got.ID != k.ID || !got.Published {
			t.Fatalf("cache %d: after MarkPublished: %v", entries, got)
		}
		if err := s.MarkPublished("d", "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("cache %d: MarkPublished of an unknown key = %v", entries, err)
		}
		// Destroyed keys are gone from every answer.
		if n, err := s.Destroy("b"); err != nil || n != 2 {
			t.Fatalf("cache %d: Destroy(b) = %d, %v", entries, n, err)
		}
		if _, ok, _ := s.Current("b"); ok {
			t.Fatalf("cache %d: Current(b) after Destroy", entries)
		}
		if _, err := s.Get("b", "b2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("cache %d: Get(b2) after Destroy = %v", entries, err)
		}
		check := func(s *Store) {
			t.Helper()
			for id, want := range map[string][]byte{"a": m(1), "c": m(3)} {
				k, ok, err := s.Current(id)
				if err != nil || !ok || !bytes.Equal(k.Material[:], want) || !k.Published {
					t.Fatalf("cache %d: Current(%s) = %v %v %v", entries, id, k, ok, err)
				}
				// Keys from the cache seal and open as any key does.
				if pt, err := Unseal(k.Material, k.Seal("r", []byte("x")), "r"); err != nil || string(pt) != "x" {
					t.Fatalf("cache %d: %s's key does not seal: %v", entries, id, err)
				}
			}
		}
		check(s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s, err = Open(Options{Dir: dir, CacheEntries: entries}); err != nil {
			t.Fatal(err)
		}
		check(s)
		if _, ok, _ := s.Current("b"); ok {
			t.Fatalf("cache %d: Current(b) after reopen", entries)
		}
		s.Close()
	}
}

// CurrentOrCreateMany answers as CurrentOrCreate one by one would, with a
// single key per identity however often it is named, also when callers race.
func TestCurrentOrCreateMany(t *testing.T) {
	for _, entries := range []int{0, -1} {
		s, err := Open(Options{Dir: t.TempDir(), CacheEntries: entries})
		if err != nil {
			t.Fatal(err)
		}
		old, _, err := s.CurrentOrCreate("old")
		if err != nil {
			t.Fatal(err)
		}
		ids := []string{"new-1", "old", "new-2", "new-1"}
		var wg sync.WaitGroup
		results := make([][]Key, 4)
		createdBy := make([][]bool, 4)
		for c := range results {
			wg.Go(func() {
				var err error
				if results[c], createdBy[c], err = s.CurrentOrCreateMany(ids); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		made := map[string]int{}
		for c := range results {
			if !results[c][1].Equal(old) || !results[c][0].Equal(results[c][3]) || createdBy[c][1] || createdBy[c][3] {
				t.Fatalf("cache %d, caller %d: %v %v", entries, c, results[c], createdBy[c])
			}
			for i, id := range ids {
				if !results[c][i].Equal(results[0][i]) {
					t.Fatalf("cache %d: callers disagree on %s's key", entries, id)
				}
				if createdBy[c][i] {
					made[id]++
				}
			}
		}
		if made["new-1"] != 1 || made["new-2"] != 1 || len(made) != 2 {
			t.Fatalf("cache %d: keys made %v; want one each for new-1 and new-2", entries, made)
		}
		for _, id := range []string{"new-1", "new-2"} {
			if all, _ := s.Keys(id); len(all) != 1 {
				t.Fatalf("cache %d: %s has %d keys; want 1", entries, id, len(all))
			}
		}
		if _, _, err := s.CurrentOrCreateMany([]string{"ok", ""}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("empty id: %v", err)
		}
		s.Close()
		if _, _, err := s.CurrentOrCreateMany([]string{"old"}); !errors.Is(err, ErrClosed) {
			t.Fatalf("closed: %v", err)
		}
	}
}
