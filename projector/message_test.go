package projector

import "testing"

// ackMetadata reads what jetstream.Msg.Metadata reads from both forms of
// ack subject, and declines (for Metadata to answer) anything else.
func TestAckMetadata(t *testing.T) {
	for _, tt := range []struct {
		reply        string
		seq, pending uint64
		timeNs       int64
		ok           bool
	}{
		{"$JS.ACK.inbox-eu.c1.1.42.7.1700000000000000000.3", 42, 3, 1700000000000000000, true},
		{"$JS.ACK.eu-central.ABC.inbox-eu.c1.1.42.7.1700000000000000000.3.xyz", 42, 3, 1700000000000000000, true},
		{"$JS.ACK._.ABC.inbox-eu.c1.2.9.9.5.0", 9, 0, 5, true},
		{"$JS.ACK.d.h.s.c.1.9.9.5.0.tok.more", 9, 0, 5, true},
		{"$JS.ACK.inbox-eu.c1.1.42.7.1700000000000000000", 0, 0, 0, false},    // 6 tokens
		{"$JS.ACK.b.inbox-eu.c1.1.42.7.17.3", 0, 0, 0, false},                 // 8 tokens
		{"$JS.ACK.inbox-eu.c1.1.x42.7.1700000000000000000.3", 0, 0, 0, false}, // not a number
		{"$JS.ACK.inbox-eu.c1.1..7.17.3", 0, 0, 0, false},
		{"_INBOX.abc", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		seq, tm, pending, ok := ackMetadata(tt.reply)
		if ok != tt.ok || ok && (seq != tt.seq || tm != tt.timeNs || pending != tt.pending) {
			t.Errorf("ackMetadata(%q) = %d %d %d %v; want %d %d %d %v", tt.reply, seq, tm, pending, ok, tt.seq, tt.timeNs, tt.pending, tt.ok)
		}
	}
}
