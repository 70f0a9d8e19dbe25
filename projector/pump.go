package projector

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// errConsumerClosed: the client closed the consume context on its own (the
// stream went away, the connection closed); the caller starts over.
var errConsumerClosed = errors.New("projector: inbox consumer closed")

// pump reads an ordered consumer and hands runs of up to size messages to
// apply, in order. The client's callback reads each message (fromJS) on
// the client's goroutine and appends it to the run being filled; the
// caller's goroutine takes the whole run at once whenever it is ready for
// one, so runs are large under load and a lone message is applied at once
// (the callback wakes the caller when the run goes from empty to not).
// Fetching and reading continue while a run is applied; a full run holds
// the callback until the caller takes it. apply returns stop to end
// pumping early.
func pump(ctx context.Context, cons jetstream.Consumer, size int, log *slog.Logger, apply func([]inMsg) (stop bool, err error)) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := &handoff{max: size, fill: make([]inMsg, 0, size), ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		in, ok := fromJS(m)
		if !ok {
			log.Warn("projector: consumed a message without stream metadata", "subject", m.Subject())
			return
		}
		h.put(cctx, in)
	},
		jetstream.PullMaxMessages(2*size),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			log.Debug("projector: inbox consumer", "err", err)
		}))
	if err != nil {
		return err
	}
	defer cc.Stop()
	defer cancel() // first: unblocks a callback waiting for room

	spare := make([]inMsg, 0, size)
	for {
		select {
		case <-h.ready:
		case <-ctx.Done():
			return ctx.Err()
		case <-cc.Closed():
			return errConsumerClosed
		}
		run := h.take(spare)
		if len(run) == 0 {
			continue // woken for a run taken already
		}
		// Once ctx is done the callback may drop a message and still
		// queue later ones, so a run taken after that could skip a
		// message: never apply it. A run taken before the cancellation
		// holds only contiguous messages.
		if err := ctx.Err(); err != nil {
			return err
		}
		stop, err := apply(run)
		if err != nil || stop {
			return err
		}
		clear(run) // the messages' bytes go with them
		spare = run[:0]
	}
}

// handoff passes messages from the client's callback to the pump in runs:
// one lock and, under load, no wake-up per message.
type handoff struct {
	max   int
	mu    sync.Mutex
	fill  []inMsg       // the run being filled
	ready chan struct{} // a token when fill went from empty to not
	space chan struct{} // a token when the pump took a run
}

// put appends m to the run being filled, waiting while it is full; it
// drops m once ctx is done.
func (h *handoff) put(ctx context.Context, m inMsg) {
	h.mu.Lock()
	for len(h.fill) >= h.max {
		h.mu.Unlock()
		select {
		case <-h.space:
		case <-ctx.Done():
			return
		}
		h.mu.Lock()
	}
	h.fill = append(h.fill, m)
	first := len(h.fill) == 1
	h.mu.Unlock()
	if first {
		select {
		case h.ready <- struct{}{}:
		default: // a token is waiting already
		}
	}
}

// take returns the run filled so far (possibly empty) and fills spare
// from now on.
func (h *handoff) take(spare []inMsg) []inMsg {
	h.mu.Lock()
	run := h.fill
	h.fill = spare[:0]
	h.mu.Unlock()
	select {
	case h.space <- struct{}{}:
	default:
	}
	return run
}
