package projector

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

func TestRebuildEqualsLive(t *testing.T) {
	w := newWorld(t)
	ids := []string{newID(), newID(), newID()}
	for i, id := range ids {
		w.append(created(id, "r"+string(rune('a'+i))+"@example.org", "R"), grant(id, "x"), loginFailed(id),
			session(id, "s-"+id, testNow+60_000))
	}
	w.append(withBody(ids[0], &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{CredentialId: "c", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_WEBAUTHN, Material: []byte("m")}}))
	w.append(erase(ids[1]))
	w.publishRaw("poison.x", []byte("junk"), nil)
	if _, err := w.origin.w.AppendHeartbeat(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	w.ship(w.origin)

	p := w.start()
	w.sync(p)

	dir := filepath.Join(t.TempDir(), "rebuilt")
	var progress []RebuildProgress
	st, err := Rebuild(testCtx(t), RebuildConfig{
		JS: w.js, Stream: w.stream, Dir: dir, Zone: testZone, Keys: w.keys, ZoneKeys: w.zones,
		Now: w.now.Load, BatchSize: 8, Progress: func(p RebuildProgress) { progress = append(progress, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	last := w.lastSeq()
	if st.Reached != last || st.Messages != last || st.LastSeq != last || st.Quarantined != 1 || st.Resumed || st.PerSec <= 0 {
		t.Fatalf("stats %+v, want all %d messages", st, last)
	}
	if len(progress) < 2 || progress[len(progress)-1].Seq != last {
		t.Fatalf("progress %+v", progress)
	}
	assertSameModel(t, p, dir, w.keys)

	// Resuming a finished rebuild applies nothing more.
	st2, err := Rebuild(testCtx(t), RebuildConfig{JS: w.js, Stream: w.stream, Dir: dir, Zone: testZone, Keys: w.keys, ZoneKeys: w.zones})
	if err != nil || !st2.Resumed || st2.Messages != 0 {
		t.Fatalf("resume of a finished rebuild: %+v, %v", st2, err)
	}

	// Bad config names the field.
	_, err = Rebuild(testCtx(t), RebuildConfig{JS: w.js, Dir: dir, Zone: testZone, Keys: w.keys, ZoneKeys: w.zones})
	var inv *InvalidError
	if !errors.As(err, &inv) || inv.Field != "RebuildConfig.Stream" {
		t.Fatalf("missing stream: %v", err)
	}
}

// A point-in-time rebuild equals a model built from exactly the messages
// the stream stored before that time.
func TestRebuildUntil(t *testing.T) {
	w := newWorld(t)
	id := newID()
	w.append(created(id, "pit@example.org", "Before"), grant(id, "early"))
	cut := time.Now()
	// The stream stamps messages with the server's clock; wait until it is
	// past the cut, so everything below lands after it.
	waitFor(t, "the clock to pass the cut", func() bool { return time.Now().After(cut) })
	w.append(withBody(id, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: ptr("After")}}), grant(id, "late"))

	dir := filepath.Join(t.TempDir(), "pit")
	st, err := Rebuild(testCtx(t), RebuildConfig{JS: w.js, Stream: w.stream, Dir: dir, Until: cut, Zone: testZone, Keys: w.keys, ZoneKeys: w.zones})
	if err != nil {
		t.Fatal(err)
	}
	if !st.StoppedAtUntil {
		t.Fatalf("stats %+v: want stopped at until", st)
	}
	m, err := OpenModel(dir, w.keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got, err := m.Get(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetTraits().GetName() != "Before" || len(got.GetRoles()) != 1 || got.GetRoles()[0] != "early" {
		t.Fatalf("point-in-time model %v", got)
	}
}

// A rebuild commits every few batches; one interrupted between commits
// keeps what it applied (committed on the way out), and resuming it gives
// the live model. Every identity is updated in many batches, so a commit
// holds states that several batches changed.
func TestRebuildInterruptedResumes(t *testing.T) {
	w := newWorld(t)
	ids := []string{newID(), newID(), newID(), newID()}
	for i, id := range ids {
		w.append(created(id, "i"+string(rune('a'+i))+"@example.org", "I"))
	}
	for round := range 12 {
		for _, id := range ids {
			w.append(withBody(id, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: ptr("N" + string(rune('a'+round)))}}), grant(id, "r"+string(rune('a'+round))))
		}
	}
	w.append(erase(ids[2]))
	p := w.start()
	w.sync(p)
	last := w.lastSeq()

	dir := filepath.Join(t.TempDir(), "rebuilt")
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	cfg := RebuildConfig{
		JS: w.js, Stream: w.stream, Dir: dir, Zone: testZone, Keys: w.keys, ZoneKeys: w.zones, Now: w.now.Load, BatchSize: 2,
		Progress: func(p RebuildProgress) {
			if p.Messages >= last/2 {
				cancel()
			}
		},
	}
	st, err := Rebuild(ctx, cfg)
	if !errors.Is(err, context.Canceled) || st.Reached == 0 || st.Reached >= last || st.Reached != st.Messages {
		t.Fatalf("interrupted rebuild: %+v, %v; want some of %d messages committed", st, err, last)
	}
	cfg.Progress = nil
	st, err = Rebuild(testCtx(t), cfg)
	if err != nil || !st.Resumed || st.Reached != last {
		t.Fatalf("resumed rebuild: %+v, %v", st, err)
	}
	assertSameModel(t, p, dir, w.keys)
}
