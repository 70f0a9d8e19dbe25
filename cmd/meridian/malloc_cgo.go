//go:build linux && cgo

package main

/*
#include <malloc.h>

// meridian_set_mmap_threshold fixes glibc's mmap threshold (0 where the
// C library has no such setting, as musl).
static int meridian_set_mmap_threshold(int bytes) {
#ifdef M_MMAP_THRESHOLD
	return mallopt(M_MMAP_THRESHOLD, bytes);
#else
	return 0;
#endif
}
*/
import "C"

import "os"

// mmapThreshold is the size from which C allocations get their own
// mapping, which free returns to the system at once.
//
// Pebble allocates its memtables (up to 16 MiB each, see eventlog and
// projector) and block cache entries with C malloc. glibc starts with a
// 128 KiB mmap threshold but raises it to the size of each mmapped block
// freed (up to 32 MiB): after the first memtable is freed, later ones come
// from the per-thread malloc arenas, and a freed one stays resident there
// until the arena's top is trimmed, so RSS outside the Go heap kept
// growing with flushes and closed databases beyond what Pebble holds.
// Fixing the threshold (which also stops its adjustment) keeps every
// memtable of 1 MiB or more in a mapping of its own, returned when Pebble
// frees it (Pebble reuses one flushed memtable per database, so this costs
// no mapping per flush). MALLOC_MMAP_THRESHOLD_ in the environment, read
// by glibc at start, takes precedence.
const mmapThreshold = 1 << 20

func init() {
	if _, set := os.LookupEnv("MALLOC_MMAP_THRESHOLD_"); !set {
		C.meridian_set_mmap_threshold(mmapThreshold)
	}
}
