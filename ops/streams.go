package ops

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/eventlog"
)

// StreamMsg is one stream message as the operator tools read it.
type StreamMsg struct {
	Seq       uint64 // stream sequence
	Time      time.Time
	Subject   string
	MsgID     string // Nats-Msg-Id: the record id
	OriginSeq uint64 // Meridian-Seq: the record's origin log sequence; 0 if absent
	// SrcStream and SrcSeq come from Nats-Stream-Source on sourced copies.
	SrcStream string
	SrcSeq    uint64
	Data      []byte // nil with headersOnly
}

// scanRange selects the messages of a scan.
type scanRange struct {
	From, To    uint64   // inclusive; 0: from the first / to the last at the start
	Filters     []string // subject filters; none: every message
	HeadersOnly bool
}

// scanStream calls fn with the messages of a stream in the range, in
// order, through an ordered consumer (the fastest way to read a stream).
// It ends at To, or at the last matching message when the scan started.
func scanStream(ctx context.Context, js jetstream.JetStream, stream string, r scanRange, fn func(StreamMsg) error) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	state := s.CachedInfo().State
	from, to := max(r.From, state.FirstSeq, 1), state.LastSeq
	if r.To > 0 {
		to = min(to, r.To)
	}
	if state.Msgs == 0 || from > to {
		return 0, nil
	}
	// Is there any matching message at all? An ordered consumer with
	// nothing to deliver would wait forever.
	first := uint64(0)
	for _, f := range orAll(r.Filters) {
		m, err := s.GetMsg(ctx, from, jetstream.WithGetMsgSubject(f))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("stream %s: first message of %s from %d: %w", stream, f, from, err)
		}
		if first == 0 || m.Sequence < first {
			first = m.Sequence
		}
	}
	if first == 0 || first > to {
		return 0, nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: first,
		HeadersOnly: r.HeadersOnly,
	}
	if len(r.Filters) > 0 {
		cfg.FilterSubjects = r.Filters
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return 0, fmt.Errorf("stream %s: consumer: %w", stream, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan jetstream.Msg, 4096)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case ch <- m:
		case <-cctx.Done():
		}
	}, jetstream.PullMaxMessages(4096))
	if err != nil {
		return 0, fmt.Errorf("stream %s: consume: %w", stream, err)
	}
	defer cc.Stop()
	defer cancel()
	var n uint64
	for {
		var m jetstream.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return n, ctx.Err()
		case <-cc.Closed():
			return n, fmt.Errorf("stream %s: consumer closed at %d messages", stream, n)
		}
		md, err := m.Metadata()
		if err != nil {
			return n, fmt.Errorf("stream %s: %w", stream, err)
		}
		if md.Sequence.Stream > to {
			return n, nil
		}
		sm := StreamMsg{Seq: md.Sequence.Stream, Time: md.Timestamp, Subject: m.Subject()}
		if !r.HeadersOnly {
			sm.Data = m.Data()
		}
		if h := m.Headers(); h != nil {
			sm.MsgID = h.Get(jetstream.MsgIDHeader)
			if v := h.Get(eventlog.SeqHeader); v != "" {
				sm.OriginSeq, _ = strconv.ParseUint(v, 10, 64)
			}
			sm.SrcStream, sm.SrcSeq = parseSourceHeader(h.Get("Nats-Stream-Source"))
		}
		n++
		if err := fn(sm); err != nil {
			return n, err
		}
		if md.Sequence.Stream >= to || md.NumPending == 0 {
			return n, nil
		}
	}
}

func orAll(filters []string) []string {
	if len(filters) == 0 {
		return []string{">"}
	}
	return filters
}

// parseSourceHeader reads "<stream>[:<hash>] <seq> ..." (Nats-Stream-Source).
func parseSourceHeader(v string) (string, uint64) {
	name, rest, ok := strings.Cut(v, " ")
	if !ok {
		return "", 0
	}
	seqStr, _, _ := strings.Cut(rest, " ")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil {
		return "", 0
	}
	name, _, _ = strings.Cut(name, ":")
	return name, seq
}

// lastSeqOn returns the sequence of the last message of stream on a
// subject filter (0 when none).
func lastSeqOn(ctx context.Context, js jetstream.JetStream, stream, filter string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	m, err := s.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}
