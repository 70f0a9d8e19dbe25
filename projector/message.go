package projector

import (
	"strconv"
	"strings"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/region"
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

	// The subject parsed, once (sharding and the apply step both need it).
	sp     region.SubjectParts
	spErr  error
	parsed bool
}

// subject returns the parsed subject.
func (m *inMsg) subject() (region.SubjectParts, error) {
	if !m.parsed {
		m.sp, m.spErr = parseSubject(m.Subject)
		m.parsed = true
	}
	return m.sp, m.spErr
}

// parseSubject is region.ParseSubject without its allocations for the
// well-formed subjects of every message; anything else goes to it, which
// also makes the errors.
func parseSubject(subject string) (region.SubjectParts, error) {
	if rest, ok := strings.CutPrefix(subject, region.SubjectRoot+"."); ok {
		origin, rest, ok1 := strings.Cut(rest, ".")
		zone, rest, ok2 := strings.Cut(rest, ".")
		if ok1 && ok2 && origin != "" && zone != "" {
			typ, id, hasID := strings.Cut(rest, ".")
			switch {
			case !hasID && typ != "" && typ != region.KeyType:
				return region.SubjectParts{Origin: origin, Zone: zone, Type: typ}, nil
			case hasID && typ == region.KeyType && id != "" && !strings.Contains(id, "."):
				return region.SubjectParts{Origin: origin, Zone: zone, Type: typ, IdentityID: id}, nil
			}
		}
	}
	return region.ParseSubject(subject)
}

// fromJS reads a consumed message. ok is false only when the message has no
// JetStream metadata (not from a stream), which an ordered consumer never
// hands out.
func fromJS(m jetstream.Msg) (inMsg, bool) {
	in := inMsg{Subject: m.Subject(), Data: m.Data()}
	var ok bool
	if in.Seq, in.TimeNs, in.Pending, ok = ackMetadata(m.Reply()); !ok {
		md, err := m.Metadata()
		if err != nil {
			return inMsg{}, false
		}
		in.Seq, in.Pending, in.TimeNs = md.Sequence.Stream, md.NumPending, md.Timestamp.UnixNano()
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

// ackMetadata reads the stream sequence, timestamp and pending count out
// of a JetStream ack subject without allocating, as jetstream.Msg.Metadata
// does (which the caller falls back to when ok is false):
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>...]
func ackMetadata(reply string) (seq uint64, timeNs int64, pending uint64, ok bool) {
	rest, ok := strings.CutPrefix(reply, "$JS.ACK.")
	if !ok {
		return 0, 0, 0, false
	}
	// The tokens after "$JS.ACK.": 7 in the old form, at least 9 in the new.
	n := strings.Count(rest, ".") + 1
	switch {
	case n == 7:
	case n >= 9:
		for range 2 { // domain, account hash
			_, rest, _ = strings.Cut(rest, ".")
		}
	default:
		return 0, 0, 0, false
	}
	var tok [7]string // stream, consumer, delivered, sseq, cseq, tm, pending
	for i := range tok {
		tok[i], rest, _ = strings.Cut(rest, ".")
	}
	num := func(s string) (uint64, bool) {
		if s == "" {
			return 0, false
		}
		var v uint64
		for _, c := range []byte(s) {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + uint64(c-'0')
		}
		return v, true
	}
	seq, ok1 := num(tok[3])
	tm, ok2 := num(tok[5])
	pending, ok3 := num(tok[6])
	return seq, int64(tm), pending, ok1 && ok2 && ok3
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
