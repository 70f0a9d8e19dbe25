package ops

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/ops/inspect"
	"github.com/meridian-id/meridian/projector"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

func TestGapsAndRanges(t *testing.T) {
	for _, tc := range []struct {
		have   []uint64
		lo, hi uint64
		want   []SeqRange
	}{
		{nil, 1, 5, []SeqRange{{1, 5}}},
		{[]uint64{1, 2, 3}, 1, 3, nil},
		{[]uint64{2, 3, 7}, 1, 9, []SeqRange{{1, 1}, {4, 6}, {8, 9}}},
		{[]uint64{5}, 1, 4, []SeqRange{{1, 4}}},
		{[]uint64{1, 9}, 2, 8, []SeqRange{{2, 8}}},
		{nil, 1, 0, nil},
	} {
		if got := gaps(tc.have, tc.lo, tc.hi); !slices.Equal(got, tc.want) {
			t.Errorf("gaps(%v, %d, %d) = %v, want %v", tc.have, tc.lo, tc.hi, got, tc.want)
		}
	}
	if got := toRanges([]uint64{1, 2, 3, 5, 7, 8, 8}); !slices.Equal(got, []SeqRange{{1, 3}, {5, 5}, {7, 8}}) {
		t.Errorf("toRanges = %v", got)
	}
	if got := FormatRanges([]SeqRange{{1, 3}, {5, 5}}); got != "1-3, 5" {
		t.Errorf("FormatRanges = %q", got)
	}
	var many []SeqRange
	for i := range uint64(30) {
		many = append(many, SeqRange{2 * i, 2 * i})
	}
	if got := FormatRanges(many); len(got) > 80 {
		t.Errorf("30 ranges rendered in %d bytes: %q", len(got), got)
	}
	if RangesLen([]SeqRange{{1, 3}, {5, 5}}) != 4 {
		t.Error("RangesLen")
	}
}

func TestMeter(t *testing.T) {
	var got []Progress
	m := newMeter(func(p Progress) { got = append(got, p) }, "op", "phase", "things", 100)
	m.update(10, "", false)
	m.update(20, "", false) // throttled
	m.update(100, "done", true)
	if len(got) != 2 || got[0].Done != 10 || !got[1].Final || got[1].Done != 100 || got[1].Note != "done" {
		t.Fatalf("reports %+v", got)
	}
	if got[0].Op != "op" || got[0].Phase != "phase" || got[0].Total != 100 || got[0].Unit != "things" {
		t.Errorf("report %+v", got[0])
	}
	var nilMeter *meter
	nilMeter.update(1, "", true) // no callback: no-op
}

func devEndpoints() map[string]Endpoint {
	return map[string]Endpoint{
		region.DevUSEast:    {HTTP: "http://127.0.0.1:1", NATS: "nats://127.0.0.1:2", Zone: "us"},
		region.DevEUWest:    {HTTP: "http://127.0.0.1:3", NATS: "nats://127.0.0.1:4", Zone: "eu"},
		region.DevEUCentral: {HTTP: "http://127.0.0.1:5", NATS: "nats://127.0.0.1:6", Zone: "eu"},
	}
}

func TestDeployment(t *testing.T) {
	p, err := PolicyFromEndpoints(devEndpoints())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.ZoneMembers("eu"), []string{region.DevEUCentral, region.DevEUWest}) {
		t.Errorf("zone eu: %v", p.ZoneMembers("eu"))
	}
	// The streams compiled from it are the dev policy's.
	a, _ := region.Compile(p)
	b, _ := region.Compile(region.DefaultDevPolicy())
	for _, r := range b.Regions {
		ra, _ := a.Region(r.Region)
		if len(ra.Inbox.Sources) != len(r.Inbox.Sources) || ra.Origin.Subjects[0] != r.Origin.Subjects[0] {
			t.Errorf("%s: compiled differently from the dev policy", r.Region)
		}
	}
	d, err := NewDeployment(region.DefaultDevPolicy(), map[string]Endpoint{region.DevEUWest: {HTTP: "http://x:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := d.Region(region.DevEUWest); r.HTTP != "http://x:1" || r.NATS == "" || r.Zone != "eu" {
		t.Errorf("eu-west: %+v", r)
	}
	if _, err := NewDeployment(region.DefaultDevPolicy(), map[string]Endpoint{"mars": {}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown region in endpoints: %v", err)
	}
	bad := devEndpoints()
	bad[region.DevUSEast] = Endpoint{HTTP: "http://x"}
	if _, err := PolicyFromEndpoints(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("endpoint without zone: %v", err)
	}
}

// fakeSource digests a fake model whose states a test can change.
type fakeSource struct {
	name  string
	model *fakeModel
	calls atomic.Int32
	after func(n int32) // called after each digest
}

func (s *fakeSource) Name() string { return s.name }
func (s *fakeSource) Digest(_ context.Context, kind inspect.Kind, buckets []int) (*inspect.Digest, error) {
	d, err := inspect.Compute(s.model, kind, buckets)
	if s.after != nil {
		s.after(s.calls.Add(1))
	}
	return d, err
}

type fakeModel struct {
	mu     sync.Mutex
	states map[string]*meridianv1.IdentityState
}

func (m *fakeModel) set(id string, st *meridianv1.IdentityState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st == nil {
		delete(m.states, id)
		return
	}
	m.states[id] = st
}

func (m *fakeModel) get(id string) *meridianv1.IdentityState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.states[id]
}

func (m *fakeModel) RangeStates(fn projector.StateVisitor) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id := range m.states {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := fn(id, m.states[id], nil, nil); err != nil {
			return 0, err
		}
	}
	return uint64(len(ids)), nil
}

func fakeModelOf(n int) *fakeModel {
	m := &fakeModel{states: map[string]*meridianv1.IdentityState{}}
	for i := range n {
		id := fmt.Sprintf("id-%04d", i)
		m.states[id] = &meridianv1.IdentityState{IdentityId: id, UpdatedHlc: uint64(i)}
	}
	return m
}

func TestCompare(t *testing.T) {
	ctx := context.Background()
	a, b, c := &fakeSource{name: "a", model: fakeModelOf(300)}, &fakeSource{name: "b", model: fakeModelOf(300)}, &fakeSource{name: "c", model: fakeModelOf(300)}
	cmp, err := Compare(ctx, inspect.KindGlobal, []DigestSource{a, b, c}, CompareOptions{})
	if err != nil || !cmp.Equal || cmp.Identities["b"] != 300 {
		t.Fatalf("equal sources: %+v, %v", cmp, err)
	}
	b.model.set("id-0007", &meridianv1.IdentityState{IdentityId: "id-0007", UpdatedHlc: 1000})
	c.model.set("id-0100", nil)
	cmp, err = Compare(ctx, inspect.KindGlobal, []DigestSource{a, b, c}, CompareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cmp.Equal || len(cmp.Differences) != 2 {
		t.Fatalf("differences %+v", cmp.Differences)
	}
	d0, d1 := cmp.Differences[0], cmp.Differences[1]
	if d0.Identity != "id-0007" || !slices.Equal(d0.Odd, []string{"b"}) || d1.Identity != "id-0100" || d1.Digests["c"] != "" || !slices.Equal(d1.Odd, []string{"c"}) {
		t.Errorf("differences %+v", cmp.Differences)
	}

	// A difference that goes away (a write in flight) settles.
	b.after = func(n int32) {
		if n == 2 { // after the entries were fetched once
			b.model.set("id-0007", a.model.get("id-0007"))
			c.model.set("id-0100", a.model.get("id-0100"))
		}
	}
	b.calls.Store(0)
	cmp, err = Compare(ctx, inspect.KindGlobal, []DigestSource{a, b, c}, CompareOptions{Settle: 5 * time.Second, SettleEvery: time.Millisecond})
	if err != nil || !cmp.Equal || cmp.BucketsDiffering != 2 {
		t.Errorf("settled: equal %v, buckets differing %d, differences %+v, err %v", cmp.Equal, cmp.BucketsDiffering, cmp.Differences, err)
	}
}

func TestReplayConfigValidate(t *testing.T) {
	until := time.Now()
	for _, tc := range []struct {
		name  string
		cfg   ReplayConfig
		field string
	}{
		{"no region", ReplayConfig{Zone: "eu", Workspace: "w"}, "Region"},
		{"no workspace", ReplayConfig{Region: "r", Zone: "eu"}, "Workspace"},
		{"swap without data", ReplayConfig{Region: "r", Zone: "eu", Workspace: "w", Swap: true}, "Swap"},
		{"swap partial", ReplayConfig{Region: "r", Zone: "eu", DataDir: "d", Swap: true, FromSeq: 5}, "Swap"},
		{"swap point in time", ReplayConfig{Region: "r", Zone: "eu", DataDir: "d", Swap: true, Until: until}, "Swap"},
		{"workspace is the live model", ReplayConfig{Region: "r", Zone: "eu", DataDir: "d", Workspace: filepath.Join("d", "model")}, "Workspace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.validate()
			var ie *InvalidError
			found := false
			for _, e := range unjoin(err) {
				if errors.As(e, &ie) && ie.Field == tc.field {
					found = true
				}
			}
			if !found {
				t.Errorf("validate: %v, want an error on %s", err, tc.field)
			}
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// TestImporter feeds records out of order and with holes, as a re-sent
// origin stream holds them: each lands at its own sequence.
func TestImporter(t *testing.T) {
	l, err := eventlog.Open(eventlog.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	order := []uint64{3, 4, 5, 9, 10, 11, 12, 20}
	im := &importer{l: l, order: order, buf: map[uint64][]byte{}, nodes: map[string]bool{}}
	ctx := context.Background()
	for _, seq := range []uint64{3, 5, 4, 9, 11, 10, 12, 20} { // a re-sent window
		if err := im.add(ctx, seq, []byte(fmt.Sprint("record ", seq))); err != nil {
			t.Fatal(err)
		}
	}
	if err := im.flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := l.Read(1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, r := range recs {
		seqs = append(seqs, r.Seq)
		if string(r.Data) != fmt.Sprint("record ", r.Seq) {
			t.Errorf("seq %d holds %q", r.Seq, r.Data)
		}
	}
	if !slices.Equal(seqs, order) || im.done != uint64(len(order)) {
		t.Errorf("log holds %v, want %v", seqs, order)
	}
}
