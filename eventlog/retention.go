package eventlog

import (
	"context"
	"fmt"
)

// Trimming removes old records with one range deletion. Automatic
// retention (see Retention) is evaluated by the committer with each batch;
// Trim is the explicit form. Both go through the group commit, so a trim is
// ordered with appends and checkpoints and is durable when it returns.
//
// Reads from below the trimmed point get a *TrimmedError (ErrTrimmed), never
// a silent jump to FirstSeq. LastSeq is unaffected: the sequence is
// remembered (a meta key) even when every record is trimmed.

// Trim durably removes every record with a sequence below below, whatever
// the checkpoints say (an operator's decision). below may be at most
// LastSeq()+1; a bound at or below an earlier trim changes nothing.
func (l *Log) Trim(below uint64) error {
	if last := l.LastSeq(); below > last+1 {
		return argErr("below", fmt.Sprintf("%d is beyond LastSeq+1 (%d)", below, last+1))
	}
	r := newRequest(kindTrim)
	r.seq = below
	_, err := l.submit(context.Background(), r)
	return err
}
