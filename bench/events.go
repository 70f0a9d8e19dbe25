package bench

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"google.golang.org/protobuf/proto"
)

// workload makes the benchmark's events: a TraitsUpdated of an existing
// identity setting a RESIDENT trait (name, sealed) and a GLOBAL one
// (locale), so that every append splits into two records, a GLOBAL part and
// a sealed RESIDENT part. Both traits are padded so that each stored record
// is Payload bytes, the size the raw operations move.
type workload struct {
	home            string
	name, locale    string
	globalBytes     int // stored size of the GLOBAL record
	residentBytes   int // stored size of the sealed RESIDENT record
	recordsPerEvent int
}

func newIdentityID() string { return uuid.NewString() }

func (wl *workload) created(id string) *meridianv1.Event {
	return &meridianv1.Event{
		IdentityId: id,
		HomeRegion: wl.home,
		Body: &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{
			HomeRegion: wl.home,
			Traits:     &meridianv1.Traits{Name: proto.String("Bench Person"), Locale: proto.String("de-DE")},
		}},
	}
}

func (wl *workload) update(id string) *meridianv1.Event {
	return &meridianv1.Event{
		IdentityId: id,
		HomeRegion: wl.home,
		Body: &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{
			Traits: &meridianv1.Traits{Name: proto.String(wl.name), Locale: proto.String(wl.locale)},
		}},
	}
}

// batchEvents is how many events one Append may carry within the writer's
// request limit.
func (wl *workload) batchEvents() int {
	per := wl.globalBytes + wl.residentBytes
	return max(1, min(500, (writer.DefaultMaxRequestBytes/2)/max(per, 1)))
}

// createIdentities creates n identities through w (which also creates
// their data keys), in batches, and returns their ids and the last
// sequence per subject zone written.
func (wl *workload) createIdentities(ctx context.Context, w *writer.Writer, n int) ([]string, map[string]uint64, error) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = newIdentityID()
	}
	last, err := appendBatched(ctx, w, n, 200, func(i int) *meridianv1.Event { return wl.created(ids[i]) })
	return ids, last, err
}

// appendBatched appends n events made by ev in Appends of up to per events
// and returns the last sequence per subject zone written.
func appendBatched(ctx context.Context, w *writer.Writer, n, per int, ev func(i int) *meridianv1.Event) (map[string]uint64, error) {
	last := map[string]uint64{}
	evs := make([]*meridianv1.Event, 0, per)
	for i := 0; i < n; {
		evs = evs[:0]
		for ; i < n && len(evs) < per; i++ {
			evs = append(evs, ev(i))
		}
		res, err := w.Append(ctx, evs...)
		if err != nil {
			return nil, fmt.Errorf("bench: append: %w", err)
		}
		for z, s := range res.Sequences {
			last[z] = max(last[z], s)
		}
	}
	return last, nil
}

// calibrate pads the workload's traits so that both records of an update
// are payload bytes as stored, measuring the real records a scratch writer
// stores (sizes are linear in the padding, give or take a varint byte, so
// a few rounds converge).
func calibrate(ctx context.Context, s *scratch, home string, payload int) (*workload, error) {
	wl := &workload{home: home, name: "N", locale: "l", recordsPerEvent: 2}
	id := newIdentityID()
	if _, err := s.w.Append(ctx, wl.created(id)); err != nil {
		return nil, fmt.Errorf("bench: calibrate: %w", err)
	}
	for round := 0; ; round++ {
		res, err := s.w.Append(ctx, wl.update(id))
		if err != nil {
			return nil, fmt.Errorf("bench: calibrate: %w", err)
		}
		recs, err := s.log.Read(res.First, int(res.Last-res.First+1))
		if err != nil {
			return nil, fmt.Errorf("bench: calibrate: %w", err)
		}
		if len(recs) != wl.recordsPerEvent {
			return nil, fmt.Errorf("bench: calibrate: an update made %d records, want %d", len(recs), wl.recordsPerEvent)
		}
		for _, r := range recs {
			ev := &meridianv1.Event{}
			if err := proto.Unmarshal(r.Data, ev); err != nil {
				return nil, fmt.Errorf("bench: calibrate: record %d: %w", r.Seq, err)
			}
			switch ev.GetPart() {
			case meridianv1.Part_PART_GLOBAL:
				wl.globalBytes = len(r.Data)
			case meridianv1.Part_PART_RESIDENT:
				wl.residentBytes = len(r.Data)
			default:
				return nil, fmt.Errorf("bench: calibrate: unexpected %s record", ev.GetPart())
			}
		}
		if round == 0 && (wl.globalBytes > payload || wl.residentBytes > payload) {
			return nil, &ConfigError{Field: "Payload", Rule: fmt.Sprintf(
				"must be at least %d bytes: the smallest records of the benchmark's event are %d (GLOBAL) and %d (RESIDENT) bytes",
				max(wl.globalBytes, wl.residentBytes), wl.globalBytes, wl.residentBytes)}
		}
		dg, dr := payload-wl.globalBytes, payload-wl.residentBytes
		if (dg == 0 && dr == 0) || round == 4 {
			return wl, nil
		}
		wl.locale = pad(wl.locale, dg)
		wl.name = pad(wl.name, dr)
	}
}

// pad grows or shrinks s by d bytes (keeping at least one).
func pad(s string, d int) string {
	n := max(1, len(s)+d)
	if n <= len(s) {
		return s[:n]
	}
	return s + strings.Repeat("x", n-len(s))
}
