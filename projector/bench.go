package projector

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BenchRawConsume reads stream from its first to its last sequence (at the
// start) with an ordered consumer, the way the projector reads its inbox,
// doing nothing with the messages, and returns messages per second: the
// ceiling projection and replay rates are read against (meridian bench
// reports it as raw_consume_per_s).
func BenchRawConsume(ctx context.Context, js jetstream.JetStream, stream string) (float64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("projector: bench: stream %s: %w", stream, err)
	}
	state := s.CachedInfo().State
	if state.Msgs == 0 {
		return 0, fmt.Errorf("projector: bench: stream %s is empty", stream)
	}
	start := time.Now()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, fmt.Errorf("projector: bench: consumer: %w", err)
	}
	var n atomic.Uint64
	done := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		c := n.Add(1)
		if c == state.Msgs {
			close(done)
		}
	}, jetstream.PullMaxMessages(2*DefaultBatchSize))
	if err != nil {
		return 0, fmt.Errorf("projector: bench: consume: %w", err)
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return float64(state.Msgs) / time.Since(start).Seconds(), nil
}
