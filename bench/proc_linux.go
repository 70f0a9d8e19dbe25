//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// peakRSSMB is the process's peak resident set (VmHWM), in MiB.
func peakRSSMB() (float64, error) { return procStatusMB("VmHWM:") }

// rssMB is the process's resident set now (VmRSS), in MiB.
func rssMB() (float64, error) { return procStatusMB("VmRSS:") }

func procStatusMB(field string) (float64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("bench: peak rss: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == field {
			kb, err := strconv.ParseFloat(string(f[1]), 64)
			if err != nil {
				return 0, fmt.Errorf("bench: peak rss: %s %q: %w", field, f[1], err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("bench: peak rss: no %s in /proc/self/status", field)
}

// loadAvg is the 1-minute load average (0 when unknown).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(string(f[0]), 64)
	return v
}
