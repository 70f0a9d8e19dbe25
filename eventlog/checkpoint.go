package eventlog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"unicode/utf8"

	"github.com/cockroachdb/pebble/v2"
)

// Checkpoints are named positions of consumers (the shipper, say): the
// consumer has processed every record <= the checkpoint. They are written
// through the group commit, so they share fsyncs with appends, and they
// drive retention.

// SetCheckpoint durably records that consumer name has processed every
// record <= seq. seq may move backwards (a consumer re-reading), but not
// past LastSeq().
func (l *Log) SetCheckpoint(name string, seq uint64) error {
	if err := validCheckpointName(name); err != nil {
		return err
	}
	if last := l.LastSeq(); seq > last {
		return argErr("seq", fmt.Sprintf("checkpoint %q at %d is beyond LastSeq %d", name, seq, last))
	}
	r := newRequest(kindSetCheckpoint)
	r.name, r.seq = name, seq
	_, err := l.submit(context.Background(), r)
	return err
}

// DeleteCheckpoint removes a consumer's checkpoint (a consumer that is gone
// would otherwise hold retention back forever). Deleting a missing name is
// not an error.
func (l *Log) DeleteCheckpoint(name string) error {
	if err := validCheckpointName(name); err != nil {
		return err
	}
	r := newRequest(kindDeleteCheckpoint)
	r.name = name
	_, err := l.submit(context.Background(), r)
	return err
}

// Checkpoint returns the checkpoint of consumer name, or 0 if it never set
// one (a consumer that never checkpointed has processed nothing).
func (l *Log) Checkpoint(name string) (uint64, error) {
	if err := validCheckpointName(name); err != nil {
		return 0, err
	}
	if l.isClosed() {
		return 0, ErrClosed
	}
	l.cps.Lock()
	defer l.cps.Unlock()
	return l.cps.m[name], nil
}

// Checkpoints returns every checkpoint by name.
func (l *Log) Checkpoints() (map[string]uint64, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	l.cps.Lock()
	defer l.cps.Unlock()
	return maps.Clone(l.cps.m), nil
}

func (l *Log) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func validCheckpointName(name string) error {
	switch {
	case name == "":
		return argErr("name", "checkpoint name must not be empty")
	case len(name) > maxCheckpointName:
		return argErr("name", fmt.Sprintf("checkpoint name of %d bytes exceeds %d", len(name), maxCheckpointName))
	case !utf8.ValidString(name):
		return argErr("name", "checkpoint name must be valid UTF-8")
	}
	return nil
}

func (l *Log) loadCheckpoints() (map[string]uint64, error) {
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixCheckpoint}, UpperBound: []byte{prefixCheckpoint + 1}})
	if err != nil {
		return nil, err
	}
	m := make(map[string]uint64)
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, errors.Join(err, it.Close())
		}
		seq, ok := getUint64(v)
		if !ok {
			return nil, errors.Join(fmt.Errorf("checkpoint %q: value of %d bytes, want 8", it.Key()[1:], len(v)), it.Close())
		}
		m[string(it.Key()[1:])] = seq
	}
	return m, errors.Join(it.Error(), it.Close())
}
