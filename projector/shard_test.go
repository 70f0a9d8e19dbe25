package projector

import (
	"fmt"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

// Splitting a batch over goroutines by identity gives the same model as
// applying it on one, including prunes after removals, erasures and
// quarantine records.
func TestShardedBatchEqualsSerial(t *testing.T) {
	w := newWorld(t)
	var ids []string
	var evs []*meridianv1.Event
	for i := range 60 {
		id := newID()
		ids = append(ids, id)
		evs = append(evs, created(id, fmt.Sprintf("s%d@example.org", i), "S"),
			withBody(id, &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{CredentialId: "pw", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH, Material: []byte("m")}}),
			session(id, fmt.Sprintf("sess-%d", i), testNow+1000))
	}
	w.append(evs...)
	split := w.lastSeq()
	// Second batch: GLOBAL-only changes to identities whose resident state
	// is only in the store (so pruning has to load it).
	evs = evs[:0]
	for i, id := range ids {
		evs = append(evs, grant(id, "a"), grant(id, "b"), grant(id, "c"), grant(id, "d"), loginFailed(id))
		switch i % 3 {
		case 0:
			evs = append(evs, withBody(id, &meridianv1.CredentialRemoved{CredentialId: "pw"}), withBody(id, &meridianv1.RoleRevoked{Role: "a"}))
		case 1:
			evs = append(evs, erase(id))
		}
	}
	w.append(evs...)
	w.publishRaw("poison.one", []byte("x"), nil)
	w.append(grant(newID(), "orphan-role"))
	all := fetchAll(t, w)
	i := 0
	for all[i].Seq <= split {
		i++
	}
	first, second := all[:i], all[i:]
	if len(second) < 4*minShardMsgs {
		t.Fatalf("only %d messages: too few to shard", len(second))
	}
	cfg := w.config()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	build := func(shards int) (*engine, string) {
		dir := t.TempDir()
		// No state cache: the second batch must read the store.
		eng, err := openEngine(engineConfig{dir: dir, keys: w.keys, merger: cfg.Merger, zone: testZone, zoneKeys: w.zones, now: cfg.Now, log: cfg.Logger, shards: shards})
		if err != nil {
			t.Fatal(err)
		}
		for _, msgs := range [][]inMsg{first, second} {
			if err := eng.process(msgs); err != nil {
				t.Fatal(err)
			}
		}
		return eng, dir
	}
	serial, _ := build(1)
	defer serial.close()
	// The serial pass destroyed the erased identities' keys; the sharded
	// pass puts them back from the same key records and destroys them at
	// the same erasures, so both see the same keys when it matters.
	sharded, _ := build(4)
	defer sharded.close()
	if serial.c.batches.Load() != 2 || sharded.c.batches.Load() != 2 {
		t.Fatal("expected two batches each")
	}
	if a, b := serial.metrics(), sharded.metrics(); a.Messages != b.Messages || a.Quarantined != b.Quarantined || a.Erasures != b.Erasures {
		t.Fatalf("serial %+v\nsharded %+v", a, b)
	}
	states := map[string]*meridianv1.IdentityState{}
	if err := serial.rangeGlobal(func(id string, st *meridianv1.IdentityState) error { states[id] = st; return nil }); err != nil {
		t.Fatal(err)
	}
	n := 0
	err := sharded.rangeGlobal(func(id string, st *meridianv1.IdentityState) error {
		n++
		a, _, aerr := serial.get(id)
		b, _, berr := sharded.get(id)
		if !equalState(states[id], st) || (aerr == nil) != (berr == nil) || !equalIdentity(a, b) {
			return fmt.Errorf("identity %s differs: %v/%v vs %v/%v", id, a, aerr, b, berr)
		}
		return nil
	})
	if err != nil || n != len(states) {
		t.Fatalf("%v (%d vs %d identities)", err, n, len(states))
	}
	qa, _ := serial.store.quarantined()
	qb, _ := sharded.store.quarantined()
	if len(qa) != 1 || len(qb) != 1 || qa[0].StreamSeq != qb[0].StreamSeq {
		t.Fatalf("quarantine %v vs %v", qa, qb)
	}
	// Removed credentials' material is pruned from the stored resident
	// states in both.
	for _, eng := range []*engine{serial, sharded} {
		sealed, err := eng.store.residentSealed(ids[0])
		if err != nil || sealed == nil {
			t.Fatalf("resident state of %s: %v", ids[0], err)
		}
		res, err := openResident(w.keys, ids[0], sealed)
		if err != nil {
			t.Fatal(err)
		}
		for _, set := range res.GetSets() {
			for _, e := range set.GetElements() {
				if set.GetName() == "credentials" && len(e.GetValue()) > 0 {
					t.Fatalf("shards=%d: removed credential still at rest: %v", eng.shards, e)
				}
			}
		}
	}
}

// parseSubject answers exactly what region.ParseSubject answers.
func TestParseSubjectMatchesRegion(t *testing.T) {
	for _, s := range []string{
		"meridian.eu-west.global.identity_created", "meridian.eu-west.eu.key.id-1", "meridian.eu-west.eu.key",
		"meridian.eu-west.eu.key.", "meridian.eu-west.eu.key.a.b", "meridian.eu-west.eu.traits_updated.x",
		"meridian..eu.x", "meridian.a..x", "meridian.a.b.", "meridian.a.b", "meridian.a", "meridian.", "meridian",
		"other.a.b.c", "", ".", "meridian.a.b.c.", "meridianx.a.b.c", "meridian.a.b.key..",
	} {
		want, wantErr := region.ParseSubject(s)
		got, err := parseSubject(s)
		if got != want || (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Errorf("parseSubject(%q) = %+v, %v; region says %+v, %v", s, got, err, want, wantErr)
		}
	}
}
