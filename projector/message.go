package projector

import (
	"strconv"
	"strings"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers the projector reads from inbox messages.
const (
	// SeqHeader carries the record's origin log sequence (set by the
	// shipper; the record itself carries it too, as Event.sequence).
	SeqHeader = eventlog.SeqHeader
	// SourceHeader is added by JetStream to sourced copies:
	// "<origin stream>[:<hash>] <origin stream seq> <filter> ...".
	SourceHeader = "Nats-Stream-Source"
)

// inMsg is one inbox message, reduced to what the apply step reads.
type inMsg struct {
	Seq       uint64 // inbox stream sequence
	TimeNs    int64  // when the inbox stored it (unix ns)
	Subject   string
	MsgID     string // Nats-Msg-Id: the record id
	OriginSeq uint64 // Meridian-Seq; 0 when absent or unparseable
	SrcStream string // origin stream, from Nats-Stream-Source
	SrcSeq    uint64 // origin stream sequence, from Nats-Stream-Source
	Pending   uint64 // messages after this one when it was delivered
	Data      []byte
}

// fromJS reads a consumed message. ok is false only when the message has no
// JetStream metadata (not from a stream), which an ordered consumer never
// hands out.
func fromJS(m jetstream.Msg) (inMsg, bool) {
	md, err := m.Metadata()
	if err != nil {
		return inMsg{}, false
	}
	in := inMsg{
		Seq:     md.Sequence.Stream,
		Pending: md.NumPending,
		TimeNs:  md.Timestamp.UnixNano(),
		Subject: m.Subject(),
		Data:    m.Data(),
	}
	if h := m.Headers(); h != nil {
		in.MsgID = firstHeader(h, jetstream.MsgIDHeader)
		if v := firstHeader(h, SeqHeader); v != "" {
			in.OriginSeq, _ = strconv.ParseUint(v, 10, 64)
		}
		in.SrcStream, in.SrcSeq = parseSource(firstHeader(h, SourceHeader))
	}
	return in, true
}

func firstHeader(h map[string][]string, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseSource reads the origin stream and sequence out of a
// Nats-Stream-Source header; zero values when it is absent or malformed.
func parseSource(v string) (string, uint64) {
	name, rest, ok := strings.Cut(v, " ")
	if !ok {
		return "", 0
	}
	seqStr, _, _ := strings.Cut(rest, " ")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil {
		return "", 0
	}
	name, _, _ = strings.Cut(name, ":") // external sources add ":<hash of the API prefix>"
	return name, seq
}
