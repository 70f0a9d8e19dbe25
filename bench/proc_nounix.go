//go:build !unix

package bench

import (
	"errors"
	"time"
)

var errNoRSS = errors.New("bench: peak rss: not available on this platform")

func peakRSSMB() (float64, error) { return 0, errNoRSS }
func rssMB() (float64, error)     { return 0, errNoRSS }
func loadAvg() float64            { return 0 }
func cpuTime() time.Duration      { return 0 }
