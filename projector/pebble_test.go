package projector

import (
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/meridian-id/meridian/keystore"
)

// Bad Pebble sizes in Config and RebuildConfig are *InvalidErrors naming
// the field and the rule.
func TestPebbleSizeValidation(t *testing.T) {
	shared := pebble.NewCache(8 << 20)
	defer shared.Unref()
	cases := []struct {
		name            string
		memTable        uint64
		cache           *pebble.Cache
		cacheSize       int64
		field, wantRule string
	}{
		{"memtable below 1 MiB", 1 << 10, nil, 0, "MemTableSize", "must be 0 (default 16777216) or at least 1 MiB, got 1024"},
		{"memtable of 4 GiB", 4 << 30, nil, 0, "MemTableSize", "must be below 4 GiB"},
		{"negative cache", 0, nil, -1, "BlockCacheSize", "must not be negative, got -1"},
		{"cache size beside a shared cache", 0, shared, 1 << 20, "BlockCacheSize", "must be 0 when BlockCache (a shared cache) is set"},
	}
	check := func(t *testing.T, err error, field, rule string) {
		t.Helper()
		var inv *InvalidError
		if !errors.As(err, &inv) {
			t.Fatalf("validate = %v, want an *InvalidError", err)
		}
		if inv.Field != field || !strings.Contains(inv.Rule, rule) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("validate = %v, want %s: %q", err, field, rule)
		}
	}
	for _, tc := range cases {
		t.Run("Config/"+tc.name, func(t *testing.T) {
			cfg := Config{Region: "eu-west", Zone: "eu", JS: fakeJS{}, Dir: t.TempDir(), Keys: nopKeys{},
				ZoneKeys:     map[string]keystore.ZoneKey{"eu": {ID: "eu-1"}},
				MemTableSize: tc.memTable, BlockCache: tc.cache, BlockCacheSize: tc.cacheSize}
			check(t, cfg.validate(), "Config."+tc.field, tc.wantRule)
		})
		t.Run("RebuildConfig/"+tc.name, func(t *testing.T) {
			cfg := RebuildConfig{JS: fakeJS{}, Stream: "inbox-eu-west", Dir: t.TempDir(), Zone: "eu", Keys: nopKeys{},
				ZoneKeys:     map[string]keystore.ZoneKey{"eu": {ID: "eu-1"}},
				MemTableSize: tc.memTable, BlockCache: tc.cache, BlockCacheSize: tc.cacheSize}
			check(t, cfg.validate(), "RebuildConfig."+tc.field, tc.wantRule)
		})
	}
}

func TestPebbleBudget(t *testing.T) {
	shared := pebble.NewCache(8 << 20)
	defer shared.Unref()
	for _, tc := range []struct {
		name             string
		cfg              Config
		cache, memTables int64
	}{
		{"defaults", Config{}, DefaultBlockCacheSize, 2 * DefaultMemTableSize},
		{"sizes", Config{MemTableSize: 8 << 20, BlockCacheSize: 1 << 20}, 1 << 20, 16 << 20},
		{"shared cache", Config{BlockCache: shared}, 0, 2 * DefaultMemTableSize},
	} {
		if c, m := tc.cfg.PebbleBudget(); c != tc.cache || m != tc.memTables {
			t.Errorf("%s: PebbleBudget = %d, %d; want %d, %d", tc.name, c, m, tc.cache, tc.memTables)
		}
	}
	if c, m := (RebuildConfig{}).PebbleBudget(); c != DefaultBlockCacheSize || m != 2*DefaultMemTableSize {
		t.Errorf("RebuildConfig{}.PebbleBudget = %d, %d", c, m)
	}
}

// A model on a shared cache takes its own reference: it outlives its
// creator's, and closing the model releases it.
func TestStoreSharedCache(t *testing.T) {
	shared := pebble.NewCache(16 << 20)
	s, err := openStoreWith(t.TempDir(), false, storeOptions{cache: shared})
	if err != nil {
		t.Fatal(err)
	}
	shared.Unref()
	if m := s.pebbleMemory(); m.MemTables == 0 || m.MemTables > 2*DefaultMemTableSize {
		t.Errorf("pebbleMemory().MemTables = %d, want in (0, %d]", m.MemTables, 2*DefaultMemTableSize)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
}
