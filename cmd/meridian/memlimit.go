package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// The --memory-limit flag of serve, dev and bench sets the Go runtime's
// soft memory limit (runtime/debug.SetMemoryLimit): the GC runs harder as
// the Go-managed memory of the process nears it, instead of letting the
// heap reach twice its live size (GOGC 100). It bounds garbage, not live
// data: a live heap above the limit is not an error, the GC then runs
// often (at most about half the CPU, the runtime's cap) and memory grows
// past it. Memory outside the Go runtime (Pebble's caches and memtables
// when built with cgo) is not counted.
//
// Precedence: the flag if given; else GOMEMLIMIT if set (the runtime has
// applied it already, and it is left alone); else the command's default:
// none for serve and dev (Go's default, no limit), benchDefaultMemoryLimit
// for bench.

// benchDefaultMemoryLimit is bench's default: room for its three regions'
// live heap at the default --events (about 450 MB at its peak), bounding
// the garbage GOGC 100 would let pile up on top.
const benchDefaultMemoryLimit = 1 << 30

// minMemoryLimit is the smallest limit accepted: below it the GC would run
// all the time, and a value that small is more likely a unit left out
// (--memory-limit 768 is 768 bytes).
const minMemoryLimit = 64 << 20

const memoryLimitRule = `bytes with an optional unit (B, KiB, MiB, GiB, TiB: powers of 1024; KB, MB, GB, TB: powers of 1000), e.g. 768MiB or 1.5GiB, at least 64MiB; or "off" for no limit`

// memoryLimitFlag registers --memory-limit on fs; def names the command's
// default in the help text.
func memoryLimitFlag(fs *flag.FlagSet, def string) *string {
	return fs.String("memory-limit", "", "soft memory `limit` of the Go runtime: "+memoryLimitRule+" (default: GOMEMLIMIT if set, else "+def+")")
}

// applyMemoryLimit sets the process's soft memory limit from the flag's
// value (empty: not given), GOMEMLIMIT or def (negative: none), and
// returns the limit in effect (math.MaxInt64: none). A bad value is a
// usage error naming the flag and changes nothing.
func applyMemoryLimit(value string, def int64) (int64, error) {
	switch {
	case value != "":
		limit, err := parseMemoryLimit(value)
		if err != nil {
			return 0, fmt.Errorf("%w: --memory-limit: %v", errUsage, err)
		}
		debug.SetMemoryLimit(limit)
	case os.Getenv("GOMEMLIMIT") != "":
		// Applied by the runtime at start.
	case def > 0:
		debug.SetMemoryLimit(def)
	}
	return debug.SetMemoryLimit(-1), nil
}

// parseMemoryLimit parses a --memory-limit value: bytes with an optional
// unit, or "off" (math.MaxInt64, the runtime's "no limit").
func parseMemoryLimit(s string) (int64, error) {
	v := strings.TrimSpace(s)
	if strings.EqualFold(v, "off") {
		return math.MaxInt64, nil
	}
	i := len(v)
	for i > 0 && (v[i-1] < '0' || v[i-1] > '9') && v[i-1] != '.' {
		i--
	}
	num, unit := v[:i], strings.ToLower(strings.TrimSpace(v[i:]))
	mult, ok := map[string]float64{
		"": 1, "b": 1,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	}[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("%q: want %s", s, memoryLimitRule)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("%q: want %s", s, memoryLimitRule)
	}
	b := f * mult
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large: want at most 8EiB, or \"off\" for no limit", s)
	}
	if b < minMemoryLimit {
		hint := ""
		if unit == "" {
			hint = fmt.Sprintf(" (a number without a unit is bytes: did you mean %sMiB?)", num)
		}
		return 0, fmt.Errorf("%q is too small: must be at least 64MiB%s, or \"off\" for no limit", s, hint)
	}
	return int64(b), nil
}

// memoryLimitString formats a limit in effect for a log line.
func memoryLimitString(limit int64) string {
	if limit == math.MaxInt64 {
		return "off"
	}
	return fmt.Sprintf("%.0fMiB", float64(limit)/(1<<20))
}
