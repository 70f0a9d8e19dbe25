package projector

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
)

// errConsumerClosed: the client closed the consume context on its own (the
// stream went away, the connection closed); the caller starts over.
var errConsumerClosed = errors.New("projector: inbox consumer closed")

// pump reads an ordered consumer and hands runs of up to size messages to
// apply, in order. The client's callback only queues; the caller's
// goroutine takes everything already waiting as one run, so runs are large
// under load and a lone message is applied at once. Fetching continues
// while a run is applied. apply returns stop to end pumping early.
func pump(ctx context.Context, cons jetstream.Consumer, size int, log *slog.Logger, apply func([]inMsg) (stop bool, err error)) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan jetstream.Msg, 2*size)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case ch <- m:
		case <-cctx.Done():
		}
	},
		jetstream.PullMaxMessages(2*size),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			log.Debug("projector: inbox consumer", "err", err)
		}))
	if err != nil {
		return err
	}
	defer cc.Stop()
	defer cancel() // first: unblocks a callback waiting on a full channel

	buf := make([]inMsg, 0, size)
	for {
		buf = buf[:0]
		select {
		case m := <-ch:
			buf = appendMsg(buf, m, log)
		case <-ctx.Done():
			return ctx.Err()
		case <-cc.Closed():
			return errConsumerClosed
		}
	fill:
		for len(buf) < size {
			select {
			case m := <-ch:
				buf = appendMsg(buf, m, log)
			default:
				break fill
			}
		}
		// Once ctx is done the callback may drop a message and still
		// queue later ones (its select picks at random), so a run filled
		// after that could skip a message: never apply it. A run filled
		// before the cancellation holds only contiguous messages.
		if err := ctx.Err(); err != nil {
			return err
		}
		stop, err := apply(buf)
		if err != nil || stop {
			return err
		}
	}
}

func appendMsg(buf []inMsg, m jetstream.Msg, log *slog.Logger) []inMsg {
	in, ok := fromJS(m)
	if !ok {
		log.Warn("projector: consumed a message without stream metadata", "subject", m.Subject())
		return buf
	}
	return append(buf, in)
}
