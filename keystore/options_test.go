package keystore

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// Every bad option is ErrInvalid naming the field and the rule, and opens
// nothing.
func TestOpenOptionsValidation(t *testing.T) {
	shared := pebble.NewCache(8 << 20)
	defer shared.Unref()
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no dir", Options{}, "Options.Dir: required"},
		{"memtable below 1 MiB", Options{MemTableSize: 1000}, "Options.MemTableSize: must be 0 (default 4194304) or at least 1 MiB, got 1000"},
		{"memtable of 4 GiB", Options{MemTableSize: 4 << 30}, "Options.MemTableSize: must be below 4 GiB"},
		{"negative cache", Options{BlockCacheSize: -1}, "Options.BlockCacheSize: must not be negative, got -1"},
		{"cache size beside a shared cache", Options{BlockCache: shared, BlockCacheSize: 1 << 20}, "Options.BlockCacheSize: must be 0 when BlockCache (a shared cache) is set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			if tc.opts.Dir == "" && tc.name != "no dir" {
				tc.opts.Dir = dir
			}
			s, err := Open(tc.opts)
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestPebbleBudget(t *testing.T) {
	shared := pebble.NewCache(8 << 20)
	defer shared.Unref()
	for _, tc := range []struct {
		name             string
		opts             Options
		cache, memTables int64
	}{
		{"defaults", Options{}, DefaultBlockCacheSize, 2 * DefaultMemTableSize},
		{"sizes", Options{MemTableSize: 2 << 20, BlockCacheSize: 1 << 20}, 1 << 20, 4 << 20},
		{"shared cache", Options{BlockCache: shared}, 0, 2 * DefaultMemTableSize},
	} {
		c, m := tc.opts.PebbleBudget()
		if c != tc.cache || m != tc.memTables {
			t.Errorf("%s: PebbleBudget = %d, %d; want %d, %d", tc.name, c, m, tc.cache, tc.memTables)
		}
	}
}

// A store on a shared cache keeps its own reference and reports its
// memtables; nothing after Close.
func TestSharedBlockCache(t *testing.T) {
	shared := pebble.NewCache(16 << 20)
	s, err := Open(Options{Dir: t.TempDir(), BlockCache: shared})
	if err != nil {
		t.Fatal(err)
	}
	shared.Unref()
	if _, _, err := s.CurrentOrCreate("0193a1b2-0000-7000-8000-000000000001"); err != nil {
		t.Fatal(err)
	}
	if m := s.PebbleMemory(); m.MemTables == 0 || m.MemTables > 2*DefaultMemTableSize {
		t.Errorf("PebbleMemory().MemTables = %d, want in (0, %d]", m.MemTables, 2*DefaultMemTableSize)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if m := s.PebbleMemory(); m != (PebbleMemory{}) {
		t.Errorf("PebbleMemory after Close = %+v", m)
	}
}
