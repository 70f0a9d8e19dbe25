//go:build !unix

package writer_test

import "time"

// cpuTime is not measured here (the benchmarks report 0 CPU per append).
func cpuTime() time.Duration { return 0 }
