package projector

// QuarantineRecord is an inbox message that can never be applied. It is
// stored in the read model (in the batch that moves past it), counted and
// skipped: it never blocks the inbox and is never redelivered. Operators
// list the records with Projector.Quarantined; the message itself stays in
// the stream at StreamSeq for inspection.
type QuarantineRecord struct {
	StreamSeq uint64 `json:"stream_seq"`
	Subject   string `json:"subject"`
	MsgID     string `json:"msg_id,omitempty"`
	Origin    string `json:"origin,omitempty"`
	OriginSeq uint64 `json:"origin_seq,omitempty"`
	// Code is one of the Code* constants; Field names the offending field
	// and Reason the rule it breaks.
	Code     string `json:"code"`
	Field    string `json:"field"`
	Reason   string `json:"reason"`
	AtUnixMs int64  `json:"at_unix_ms"`
}
