package keystore

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// scanDir reports which needles occur in any file under dir (raw bytes, so
// WALs, SSTables, manifests and anything Pebble left behind are covered).
func scanDir(t *testing.T, dir string, needles map[string][]byte) map[string][]string {
	t.Helper()
	found := map[string][]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted by Pebble's cleaner during the scan: holds nothing now
		}
		if err != nil {
			return err
		}
		for name, n := range needles {
			if bytes.Contains(b, n) {
				found[name] = append(found[name], filepath.Base(path))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// Destroy must leave no file holding the key bytes, whether the key was only
// in the WAL and memtable, or already flushed into SSTables; a key of another
// identity in the same files must survive (which also proves the scan sees
// keys at all).
func TestDestroyLeavesNoKeyBytesOnDisk(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flush bool // flush the memtable (keys into an SSTable) before Destroy
		churn bool // many other identities' keys around it, several SSTables
	}{
		{name: "wal-only"},
		{name: "flushed", flush: true},
		{name: "flushed-with-churn", flush: true, churn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			const victim, other = "victim-identity", "other-identity"
			if tc.churn {
				for i := range 200 {
					if _, err := s.Create("churn-" + string(rune('a'+i%26)) + string(rune('a'+i/26))); err != nil {
						t.Fatal(err)
					}
				}
				if err := s.db.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			k1, err := s.Create(victim)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Put(victim, "remote", bytes.Repeat([]byte{0xA5, 0x5A, 0x3C, 0xC3}, KeySize/4)); err != nil {
				t.Fatal(err)
			}
			ko, err := s.Create(other)
			if err != nil {
				t.Fatal(err)
			}
			if tc.flush {
				if err := s.db.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			needles := map[string][]byte{
				"victim-local":  k1.Material[:],
				"victim-remote": bytes.Repeat([]byte{0xA5, 0x5A, 0x3C, 0xC3}, KeySize/4),
				"other":         ko.Material[:],
			}
			if found := scanDir(t, dir, needles); len(found["victim-local"]) == 0 {
				t.Fatal("precondition: the victim's key is not on disk before Destroy; the scan proves nothing")
			}

			n, err := s.Destroy(victim)
			if err != nil {
				t.Fatal(err)
			}
			if n != 2 {
				t.Fatalf("Destroy = %d keys; want 2", n)
			}
			if keys, _ := s.Keys(victim); len(keys) != 0 {
				t.Fatalf("Keys after Destroy = %d; want 0", len(keys))
			}
			if _, ok, _ := s.Current(victim); ok {
				t.Fatal("Current after Destroy still finds a key")
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			found := scanDir(t, dir, needles)
			for _, name := range []string{"victim-local", "victim-remote"} {
				if files := found[name]; len(files) > 0 {
					t.Errorf("destroyed key %s still in %v", name, files)
				}
			}
			if len(found["other"]) == 0 {
				t.Error("the other identity's key is in no file: the scan cannot see keys")
			}

			s = openStore(t, dir)
			defer s.Close()
			if got, err := s.Get(other, ko.ID); err != nil || got.Material != ko.Material {
				t.Fatalf("other identity's key after reopen: %v", err)
			}
			if keys, _ := s.Keys(victim); len(keys) != 0 {
				t.Fatalf("victim has %d keys after reopen; want 0", len(keys))
			}
		})
	}
}
