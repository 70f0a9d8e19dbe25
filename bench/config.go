package bench

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// Bounds and defaults of Config.
const (
	// DefaultEvents is sized so that a default run finishes in well under
	// two minutes on 2 shared cores.
	DefaultEvents = 15000
	// QuickEvents is the smoke-run size (Config.Quick).
	QuickEvents = 600
	// MinEvents and MaxEvents bound Config.Events.
	MinEvents = 100
	MaxEvents = 10_000_000
	// DefaultPayload is the size of every record (log record, published
	// message) the measurements move, the size the raw ceilings in
	// NATS-NOTES.md were measured at.
	DefaultPayload = 256
	// MinPayload and MaxPayload bound Config.Payload: below MinPayload the
	// envelope of a real event (ids, clock, zone, seal) does not fit; above
	// MaxPayload an event (two records of Payload bytes) nears the writer's
	// 64 KiB event limit.
	MinPayload = 256
	MaxPayload = 16 << 10
	// DefaultReps is the number of measured repetitions after the warm-up.
	DefaultReps = 3
	// DefaultCallers is the number of concurrent appenders (and raw Pebble
	// goroutines) of the throughput measurements.
	DefaultCallers = 64
	// DefaultRate is the paced rate of the latency measurements.
	DefaultRate = 1000
)

// ErrInvalidConfig is wrapped by every *ConfigError.
var ErrInvalidConfig = errors.New("bench: invalid config")

// ConfigError names the Config field that breaks a rule, so that a command
// line can name its flag.
type ConfigError struct {
	Field string // e.g. "Events"
	Rule  string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("bench: Config.%s: %s", e.Field, e.Rule)
}

func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// Config configures Run. The zero value (with Quick or not) runs the
// default benchmark.
type Config struct {
	// Events is the number of operations of each repetition of a
	// throughput measurement: appends, shipped events (two records each),
	// raw commits, raw publishes and sourced messages, end-to-end events
	// (default DefaultEvents, QuickEvents with Quick).
	Events int
	// Payload is the size in bytes of every record and raw message
	// (default DefaultPayload). The benchmark's events are padded so that
	// each of their log records is this size.
	Payload int
	// Quick shrinks every measurement to a CI smoke run of a few seconds.
	Quick bool
	// Reps is the number of measured repetitions after one warm-up
	// (default DefaultReps; at least 3).
	Reps int
	// Callers is the number of concurrent appenders (default 64).
	Callers int
	// Rate is the paced rate of the latency measurements, per second
	// (default 1000).
	Rate int
	// LatencySamples per repetition of a latency measurement (default
	// Events/10 within [500, 3000]; 100 with Quick).
	LatencySamples int
	// Identities is the number of identities the events update (default
	// 1024; 64 with Quick).
	Identities int
	// Gets per repetition of the read measurement (default Events, at most
	// 20000).
	Gets int
	// TempDir is where the run's directory is made (default os.TempDir()).
	TempDir string
	// ProfileDir, if set, receives a CPU profile of each step
	// (<step>.cpu.pprof), a heap profile at its end (<step>.heap.pprof),
	// and a heap profile at the peak of the live heap
	// (live-peak.heap.pprof, rewritten whenever the live heap grows by 10%;
	// step-end profiles miss that peak). It must exist.
	ProfileDir string
	// Progress, if set, receives one line per step.
	Progress io.Writer
	// Timeout bounds the whole run (default 10 minutes).
	Timeout time.Duration
}

func (c *Config) validate() error {
	var errs []error
	bad := func(field, rule string, args ...any) {
		errs = append(errs, &ConfigError{Field: field, Rule: fmt.Sprintf(rule, args...)})
	}
	if c.Events == 0 {
		c.Events = DefaultEvents
		if c.Quick {
			c.Events = QuickEvents
		}
	}
	if c.Payload == 0 {
		c.Payload = DefaultPayload
	}
	if c.Reps == 0 {
		c.Reps = DefaultReps
	}
	if c.Callers == 0 {
		c.Callers = DefaultCallers
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.LatencySamples == 0 {
		c.LatencySamples = min(max(c.Events/10, 500), 3000)
		if c.Quick {
			c.LatencySamples = 100
		}
	}
	if c.Identities == 0 {
		c.Identities = 1024
		if c.Quick {
			c.Identities = 64
		}
	}
	if c.Gets == 0 {
		c.Gets = min(c.Events, 20000)
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.Events < MinEvents || c.Events > MaxEvents {
		bad("Events", "must be in [%d, %d], got %d", MinEvents, MaxEvents, c.Events)
	}
	if c.Payload < MinPayload || c.Payload > MaxPayload {
		bad("Payload", "must be in [%d, %d] bytes, got %d", MinPayload, MaxPayload, c.Payload)
	}
	if c.Reps < 3 {
		bad("Reps", "must be at least 3 (the median of fewer is not robust), got %d", c.Reps)
	}
	if c.Callers < 1 {
		bad("Callers", "must be positive, got %d", c.Callers)
	}
	if c.Rate < 1 || c.Rate > 100000 {
		bad("Rate", "must be in [1, 100000] per second, got %d", c.Rate)
	}
	if c.LatencySamples < 10 {
		bad("LatencySamples", "must be at least 10, got %d", c.LatencySamples)
	}
	if c.Identities < 1 {
		bad("Identities", "must be positive, got %d", c.Identities)
	}
	if c.Gets < 1 {
		bad("Gets", "must be positive, got %d", c.Gets)
	}
	if c.Timeout < 0 {
		bad("Timeout", "must not be negative, got %s", c.Timeout)
	}
	return errors.Join(errs...)
}
