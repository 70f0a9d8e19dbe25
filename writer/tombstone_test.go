package writer_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
)

// erasedSet is a Tombstones backed by a set (the node backs it with the
// read model).
type erasedSet struct {
	ids map[string]bool
	err error
}

func (s erasedSet) Erased(_ context.Context, id string) (bool, error) { return s.ids[id], s.err }

func TestTombstonesRefuseErasedIdentities(t *testing.T) {
	gone, live := newIdentity(), newIdentity()
	erase := &meridianv1.Event{IdentityId: gone, HomeRegion: "eu-west",
		Body: &meridianv1.Event_IdentityErased{IdentityErased: &meridianv1.IdentityErased{Reason: "gdpr"}}}
	for _, tc := range []struct {
		name   string
		set    erasedSet
		events []*meridianv1.Event
		status int
		code   string
		index  int
	}{
		{"update of an erased identity", erasedSet{ids: map[string]bool{gone: true}},
			[]*meridianv1.Event{traitsUpdated(gone, "eu-west", &meridianv1.Traits{Name: ptr("X")})}, http.StatusGone, writer.CodeErased, 0},
		{"one erased event refuses the whole request", erasedSet{ids: map[string]bool{gone: true}},
			[]*meridianv1.Event{roleGranted(live, "eu-west", "a"), roleGranted(gone, "eu-west", "b")}, http.StatusGone, writer.CodeErased, 1},
		{"tombstone store unavailable", erasedSet{err: errors.New("disk gone")},
			[]*meridianv1.Event{roleGranted(live, "eu-west", "a")}, http.StatusServiceUnavailable, writer.CodeUnavailable, 0},
		{"repeated erasure is allowed", erasedSet{ids: map[string]bool{gone: true}},
			[]*meridianv1.Event{erase}, http.StatusOK, "", 0},
		{"live identity", erasedSet{ids: map[string]bool{gone: true}},
			[]*meridianv1.Event{roleGranted(live, "eu-west", "a")}, http.StatusOK, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "eu-west", func(c *writer.Config) { c.Tombstones = tc.set })
			before := e.log.LastSeq()
			_, err := e.w.Append(context.Background(), tc.events...)
			if tc.status == http.StatusOK {
				if err != nil {
					t.Fatalf("Append: %v", err)
				}
				return
			}
			var we *writer.Error
			if !asWriterError(err, &we) || we.Status != tc.status || we.Code != tc.code || we.Index != tc.index {
				t.Fatalf("Append error = %v (%+v), want status %d code %s index %d", err, we, tc.status, tc.code, tc.index)
			}
			if tc.code == writer.CodeErased && (!errors.Is(err, writer.ErrErased) || we.Field != "identity_id") {
				t.Fatalf("error %v: want ErrErased naming identity_id", err)
			}
			if e.log.LastSeq() != before {
				t.Fatalf("log moved from %d to %d on a refused append", before, e.log.LastSeq())
			}
		})
	}
}
