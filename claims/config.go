package claims

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for zero-valued Config fields.
const (
	DefaultBucket  = "claims"
	DefaultTimeout = 2 * time.Second
)

// Config configures Claims.
type Config struct {
	// JS is a JetStream context of the claims domain:
	// jetstream.NewWithDomain(nc, <claims region's domain>). Required.
	JS jetstream.JetStream
	// Bucket is the KV bucket (default "claims", region.ClaimsBucket).
	Bucket string
	// ClaimsRegion names the region hosting the bucket; it appears in
	// *UnavailableError so that an operator knows what cannot be reached.
	// Required.
	ClaimsRegion string
	// Region and Node are who takes claims through this Claims; both are
	// recorded in every claim (the reaper waits for Node's log). Required.
	Region, Node string
	// Create allows creating the bucket when it is missing: only the claims
	// region (or provisioning) sets it; everyone else binds, and reports
	// *UnavailableError until the bucket exists.
	Create bool
	// Replicas of the bucket when created (default 1).
	Replicas int
	// Timeout bounds each operation (a claim, a release, a settle),
	// including the bind on first use (default 2 s). A claims domain that
	// does not answer within it is *UnavailableError.
	Timeout time.Duration
	// Now is the node's clock in unix ms (default: wall clock). It stamps
	// claims; it must be the clock the node's heartbeats carry.
	Now func() int64
	// Logger (default: discarded).
	Logger *slog.Logger
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (c *Config) validate() error {
	var errs []error
	bad := func(field, rule string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: Config.%s: %s", ErrInvalid, field, fmt.Sprintf(rule, args...)))
	}
	if c.JS == nil {
		bad("JS", "required: a JetStream context of the claims domain")
	}
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if !nameRE.MatchString(c.Bucket) {
		bad("Bucket", "%q must match %s", c.Bucket, nameRE)
	}
	if c.ClaimsRegion == "" {
		bad("ClaimsRegion", "required")
	}
	if c.Region == "" {
		bad("Region", "required")
	}
	if c.Node == "" {
		bad("Node", "required")
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		bad("Replicas", "must be 1..5, got %d", c.Replicas)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < 0 {
		bad("Timeout", "must not be negative, got %s", c.Timeout)
	}
	if c.Now == nil {
		c.Now = func() int64 { return time.Now().UnixMilli() }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}
