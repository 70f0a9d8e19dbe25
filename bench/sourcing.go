package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// sourcing is the raw ceiling of replication: a stream in one domain
// (eu-west) and a stream in another (eu-central) that sources it the way an
// inbox sources an origin (one filtered source naming the origin's domain).
type sourcing struct {
	pub    jetstream.JetStream // origin side
	remote jetstream.JetStream // sourcing side
	data   []byte
}

// arrivalCounter follows the remote stream from its next sequence and
// records, for each message (indexed by the 8 bytes the publisher put at
// the start of the payload), when it became readable.
type arrivalCounter struct {
	base    time.Time
	at      []atomic.Int64 // ns since base; 0 = not yet
	n       atomic.Int64
	want    int64
	done    chan struct{}
	last    atomic.Int64
	cc      jetstream.ConsumeContext
	badSize atomic.Int64
}

func (s *sourcing) follow(ctx context.Context, n int, base time.Time) (*arrivalCounter, error) {
	st, err := s.remote.Stream(ctx, sourceInbox)
	if err != nil {
		return nil, fmt.Errorf("bench: sourcing: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: sourcing: %w", err)
	}
	cons, err := s.remote.OrderedConsumer(ctx, sourceInbox, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   info.State.LastSeq + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: sourcing: consumer: %w", err)
	}
	a := newArrivalCounter(n, base)
	a.cc, err = cons.Consume(a.handle, jetstream.PullMaxMessages(4096))
	if err != nil {
		return nil, fmt.Errorf("bench: sourcing: consume: %w", err)
	}
	return a, nil
}

func newArrivalCounter(n int, base time.Time) *arrivalCounter {
	return &arrivalCounter{base: base, at: make([]atomic.Int64, n), want: int64(n), done: make(chan struct{})}
}

// handle records the first arrival of the message the payload indexes.
func (a *arrivalCounter) handle(m jetstream.Msg) {
	now := int64(time.Since(a.base))
	d := m.Data()
	if len(d) < 8 {
		a.badSize.Add(1)
		return
	}
	i := binary.BigEndian.Uint64(d)
	if i < uint64(len(a.at)) && a.at[i].CompareAndSwap(0, max(now, 1)) {
		a.last.Store(now)
		if a.n.Add(1) == a.want {
			close(a.done)
		}
	}
}

func (a *arrivalCounter) wait(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("bench: sourcing: %d of %d messages arrived within %s (%d too short)", a.n.Load(), a.want, timeout, a.badSize.Load())
	}
}

func (s *sourcing) message(i int) []byte {
	b := slices.Clone(s.data)
	binary.BigEndian.PutUint64(b, uint64(i))
	return b
}

// throughput publishes n messages asynchronously with message ids (as the
// shipper does) and returns messages/s from the first publish to the last
// arrival in the remote stream.
func (s *sourcing) throughput(ctx context.Context, n int) (float64, error) {
	base := time.Now()
	a, err := s.follow(ctx, n, base)
	if err != nil {
		return 0, err
	}
	defer a.cc.Stop()
	prefix := nuid.Next() + "-"
	stall := jetstream.WithStallWait(time.Minute)
	start := time.Since(base)
	for i := range n {
		if _, err := s.pub.PublishAsync(sourcingSubject, s.message(i), jetstream.WithMsgID(prefix+strconv.Itoa(i)), stall); err != nil {
			return 0, fmt.Errorf("bench: sourcing: publish %d: %w", i, err)
		}
	}
	select {
	case <-s.pub.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if err := a.wait(ctx, time.Minute); err != nil {
		return 0, err
	}
	return float64(n) / (time.Duration(a.last.Load()) - start).Seconds(), nil
}

// latency publishes n messages at rate per second, each acknowledged
// (synchronous publish), and returns the durations from each ack to the
// message becoming readable in the remote stream, sorted.
func (s *sourcing) latency(ctx context.Context, n, rate int) ([]time.Duration, error) {
	base := time.Now()
	a, err := s.follow(ctx, n, base)
	if err != nil {
		return nil, err
	}
	defer a.cc.Stop()
	acked := make([]int64, n)
	prefix := nuid.Next() + "-"
	err = pace(ctx, rate, n, func(ctx context.Context, i int) error {
		if _, err := s.pub.Publish(ctx, sourcingSubject, s.message(i), jetstream.WithMsgID(prefix+strconv.Itoa(i))); err != nil {
			return err
		}
		acked[i] = int64(time.Since(base))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench: sourcing latency: %w", err)
	}
	if err := a.wait(ctx, time.Minute); err != nil {
		return nil, err
	}
	lat := make([]time.Duration, n)
	for i := range lat {
		// An arrival can beat the ack's return to the publisher; that
		// counts as no latency, never as negative.
		lat[i] = time.Duration(max(0, a.at[i].Load()-acked[i]))
	}
	slices.Sort(lat)
	return lat, nil
}

// incompressible payload, like the sealed records the backbone moves.
func benchData(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
