package main

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/meridian-id/meridian/node"
)

// The --pebble-cache flag of serve sizes the room for cached blocks in the
// one Pebble block cache a node's log, read model and key store share
// (node.Config.PebbleCacheBytes; the cache also holds their memtables).
// It is memory outside the Go heap: --memory-limit does not cover it.

const pebbleCacheRule = `bytes with an optional unit (B, KiB, MiB, GiB: powers of 1024; KB, MB, GB: powers of 1000), e.g. 64MiB, at least 1MiB`

// pebbleCacheFlag registers --pebble-cache on fs.
func pebbleCacheFlag(fs *flag.FlagSet) *string {
	return fs.String("pebble-cache", "", fmt.Sprintf("room for cached blocks in the Pebble block cache the node's databases share, beside their memtables (outside the Go heap, not covered by --memory-limit): `size` in %s (default %dMiB)", pebbleCacheRule, node.DefaultPebbleCacheBytes>>20))
}

// parsePebbleCache parses a --pebble-cache value; empty is 0 (the node's
// default). A bad value is a usage error naming the flag and the rule.
func parsePebbleCache(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	bad := func(why string) error {
		return fmt.Errorf("%w: --pebble-cache: %q %s", errUsage, s, why)
	}
	v := strings.TrimSpace(s)
	i := len(v)
	for i > 0 && (v[i-1] < '0' || v[i-1] > '9') && v[i-1] != '.' {
		i--
	}
	num, unit := v[:i], strings.ToLower(strings.TrimSpace(v[i:]))
	mult, ok := map[string]float64{
		"": 1, "b": 1,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
		"kb": 1e3, "mb": 1e6, "gb": 1e9,
	}[unit]
	f, err := strconv.ParseFloat(num, 64)
	if !ok || num == "" || err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, bad("is not a size: want " + pebbleCacheRule)
	}
	b := f * mult
	switch {
	case b >= 1<<40:
		return 0, bad("is too large: want at most 1TiB")
	case b < 1<<20:
		hint := ""
		if unit == "" {
			hint = fmt.Sprintf(" (a number without a unit is bytes: did you mean %sMiB?)", num)
		}
		return 0, bad("is too small: must be at least 1MiB" + hint)
	}
	return int64(b), nil
}
