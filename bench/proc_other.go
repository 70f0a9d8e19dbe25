//go:build !linux && unix

package bench

import (
	"fmt"
	"runtime"
	"syscall"
)

// peakRSSMB is the process's peak resident set from getrusage, in MiB.
func peakRSSMB() (float64, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("bench: peak rss: %w", err)
	}
	if runtime.GOOS == "darwin" {
		return float64(ru.Maxrss) / (1 << 20), nil // bytes
	}
	return float64(ru.Maxrss) / 1024, nil // KiB
}

func rssMB() (float64, error) { return peakRSSMB() }

func loadAvg() float64 { return 0 }
