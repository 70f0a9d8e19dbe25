package eventlog

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// Every bad Pebble size is an *ArgError naming the field and the rule.
func TestOpenPebbleSizeValidation(t *testing.T) {
	shared := pebble.NewCache(8 << 20)
	defer shared.Unref()
	for _, tc := range []struct {
		name        string
		opts        Options
		field, rule string
	}{
		{"memtable below 1 MiB", Options{MemTableSize: 1 << 19}, "Options.MemTableSize", "must be >= 1 MiB"},
		{"memtable of 4 GiB", Options{MemTableSize: 4 << 30}, "Options.MemTableSize", "must be < 4 GiB"},
		{"memtable below 4 batches", Options{MemTableSize: 15 << 20}, "Options.MaxBatchBytes", "must be <= Options.MemTableSize/4"},
		{"negative cache", Options{BlockCacheSize: -1}, "Options.BlockCacheSize", "must be >= 0"},
		{"cache size beside a shared cache", Options{BlockCache: shared, BlockCacheSize: 1 << 20}, "Options.BlockCacheSize", "must be 0 when Options.BlockCache"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Dir = filepath.Join(t.TempDir(), "log")
			_, err := Open(tc.opts)
			var ae *ArgError
			if !errors.As(err, &ae) || ae.Field != tc.field || !strings.Contains(ae.Rule, tc.rule) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Open = %v, want *ArgError for %s with rule %q", err, tc.field, tc.rule)
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
		{"sizes", Options{MemTableSize: 32 << 20, BlockCacheSize: 1 << 20}, 1 << 20, 64 << 20},
		{"shared cache", Options{BlockCache: shared}, 0, 2 * DefaultMemTableSize},
	} {
		c, m := tc.opts.PebbleBudget()
		if c != tc.cache || m != tc.memTables {
			t.Errorf("%s: PebbleBudget = %d, %d; want %d, %d", tc.name, c, m, tc.cache, tc.memTables)
		}
	}
}

// A log on a shared cache reports its memtables and the cache's blocks,
// and holds its own reference: the cache outlives its creator's.
func TestSharedCache(t *testing.T) {
	shared := pebble.NewCache(64 << 20)
	l, err := Open(Options{Dir: t.TempDir(), BlockCache: shared})
	if err != nil {
		t.Fatal(err)
	}
	shared.Unref() // the log keeps the cache alive
	for range 100 {
		if _, err := l.Append(context.Background(), make([]byte, 1024)); err != nil {
			t.Fatal(err)
		}
	}
	m := l.PebbleMemory()
	if m.MemTables == 0 || m.MemTables > 2*DefaultMemTableSize {
		t.Errorf("PebbleMemory().MemTables = %d, want in (0, %d]", m.MemTables, 2*DefaultMemTableSize)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if m := l.PebbleMemory(); m != (PebbleMemory{}) {
		t.Errorf("PebbleMemory after Close = %+v, want zero", m)
	}
}
