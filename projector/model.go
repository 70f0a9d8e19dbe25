package projector

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/meridian-id/meridian/conflict"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// Model is a read-only handle on a read model directory that no projector
// has open (a rebuilt model before it is swapped in), for verification.
type Model struct {
	eng *engine
}

// OpenModel opens the read model in dir read-only. keys unseal resident
// states; merger defaults to conflict.NewMerger().
func OpenModel(dir string, keys KeyStore, merger *conflict.Merger) (*Model, error) {
	if dir == "" || keys == nil {
		return nil, invalidf("dir/keys", "required")
	}
	if merger == nil {
		m, err := conflict.NewMerger()
		if err != nil {
			return nil, fmt.Errorf("projector: merger: %w", err)
		}
		merger = m
	}
	eng, err := openEngine(engineConfig{dir: dir, keys: keys, merger: merger, log: slog.New(slog.DiscardHandler), readOnly: true})
	if err != nil {
		return nil, err
	}
	return &Model{eng: eng}, nil
}

// Get is Projector.Get on the model.
func (m *Model) Get(_ context.Context, id string) (*meridianv1.Identity, error) {
	ident, _, err := m.eng.get(id)
	return ident, err
}

// InboxSeq is the last inbox sequence the model holds.
func (m *Model) InboxSeq() uint64 { return m.eng.inboxSeq }

// Range calls fn with every identity's GLOBAL state, in id order.
func (m *Model) Range(fn func(id string, global *meridianv1.IdentityState) error) error {
	return m.eng.rangeGlobal(fn)
}

// Close closes the model.
func (m *Model) Close() error { return m.eng.close() }

// Range calls fn with every identity's GLOBAL state, in id order, as of a
// consistent point (batches committing meanwhile are not seen).
func (p *Projector) Range(fn func(id string, global *meridianv1.IdentityState) error) error {
	if err := p.open(); err != nil {
		return err
	}
	defer p.mu.RUnlock()
	return p.eng.rangeGlobal(fn)
}

func (e *engine) rangeGlobal(fn func(id string, global *meridianv1.IdentityState) error) error {
	snap := e.store.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(nil)
	if err != nil {
		return fmt.Errorf("projector: range: %w", err)
	}
	defer it.Close()
	lo := []byte{pGlobal}
	for it.SeekGE(lo); it.Valid() && it.Key()[0] == pGlobal; it.Next() {
		st := &meridianv1.IdentityState{}
		if err := proto.Unmarshal(it.Value(), st); err != nil {
			return fmt.Errorf("projector: range: state of %s: %w", it.Key()[1:], err)
		}
		if err := fn(string(it.Key()[1:]), st); err != nil {
			return err
		}
	}
	return it.Error()
}
