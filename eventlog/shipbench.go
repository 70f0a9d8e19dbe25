package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Shipping benchmark helpers, shared by the Go benchmarks and `meridian
// bench`, so that the shipper and its ceiling (raw async publishes with a
// message id) are measured the same way, on the same server and payloads,
// in one run.

// ShipBenchResult is the outcome of BenchShip.
type ShipBenchResult struct {
	Records int
	Elapsed time.Duration
	PerSec  float64 // records acknowledged by JetStream per second
	Metrics ShipperMetrics
}

// BenchShip runs a new Shipper with cfg from its checkpoint until every
// record the log held at the call is acknowledged by JetStream, and returns
// records/s (timed from Start to the last acknowledgement). The log and the
// stream are prepared by the caller; for a meaningful figure the records'
// message ids must be new to the stream (duplicates are cheaper).
func BenchShip(ctx context.Context, cfg ShipperConfig) (ShipBenchResult, error) {
	s, err := NewShipper(cfg)
	if err != nil {
		return ShipBenchResult{}, err
	}
	from := s.Metrics().Shipped
	target := cfg.Log.LastSeq()
	if target <= from {
		return ShipBenchResult{}, argErr("ShipperConfig.Log", fmt.Sprintf("holds nothing above checkpoint %q (%d) to ship", s.cfg.Checkpoint, from))
	}
	start := time.Now()
	if err := s.Start(ctx); err != nil {
		return ShipBenchResult{}, err
	}
	werr := s.WaitShipped(ctx, target)
	elapsed := time.Since(start)
	cerr := s.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return ShipBenchResult{}, fmt.Errorf("eventlog: bench ship: %w", err)
	}
	// Records, not sequences: a sequence floor may leave gaps.
	m := s.Metrics()
	n := int(m.Acked - m.Duplicates)
	return ShipBenchResult{Records: n, Elapsed: elapsed, PerSec: float64(n) / elapsed.Seconds(), Metrics: m}, nil
}

// BenchRawJSPublishMsgID publishes n messages of payload bytes (the same
// incompressible payload as the log benchmarks) to subject with
// js.PublishAsync, each with a fresh Nats-Msg-Id, waits for every ack and
// returns messages/s. It checks afterwards that the subject's stream grew
// by n, so that a failed publish cannot inflate the figure.
func BenchRawJSPublishMsgID(ctx context.Context, js jetstream.JetStream, subject string, n, payload int) (perSec float64, err error) {
	if n < 1 || payload < 0 {
		return 0, argErr("bench", fmt.Sprintf("n=%d payload=%d: need n >= 1, payload >= 0", n, payload))
	}
	name, err := js.StreamNameBySubject(ctx, subject)
	if err != nil {
		return 0, fmt.Errorf("eventlog: bench raw publish: stream of %q: %w", subject, err)
	}
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("eventlog: bench raw publish: %w", err)
	}
	before := stream.CachedInfo().State.Msgs
	data := benchPayload(payload)
	prefix := nuid.Next() + "-"
	// A long stall wait: the client's default (200 ms) errors out when the
	// server falls behind, which would measure the error path.
	stall := jetstream.WithStallWait(time.Minute)
	start := time.Now()
	for i := range n {
		if _, err := js.PublishAsync(subject, data, jetstream.WithMsgID(prefix+strconv.Itoa(i)), stall); err != nil {
			return 0, fmt.Errorf("eventlog: bench raw publish %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, fmt.Errorf("eventlog: bench raw publish: waiting for acks: %w", ctx.Err())
	}
	elapsed := time.Since(start)
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("eventlog: bench raw publish: %w", err)
	}
	if got := info.State.Msgs - before; got != uint64(n) {
		return 0, fmt.Errorf("eventlog: bench raw publish: stream %s grew by %d messages, want %d", name, got, n)
	}
	return float64(n) / elapsed.Seconds(), nil
}
