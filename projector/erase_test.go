package projector

import (
	"errors"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// RESIDENT data is sealed at rest in the read model; erasure destroys the
// identity's keys, drops its resident state and index entries, keeps the
// GLOBAL tombstone, and ignores later events — and no file of the read
// model or the key store holds the plaintext or the key afterwards.
func TestResidentSealedAtRestAndErasure(t *testing.T) {
	w := newWorld(t)
	id, other := newID(), newID()
	const email, name = "grace.hopper@example.org", "Grace Brewster Hopper"
	const secret = "argon2id$v=19$super-secret-material"
	w.append(created(id, email, name), session(id, "sess-grace", testNow+3_600_000))
	w.append(withBody(id, &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
		CredentialId: "pw", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH, Material: []byte(secret),
	}}))
	w.append(created(other, "other@example.org", "Other Person"))

	p := w.start()
	w.sync(p)
	got, err := p.Get(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetTraits().GetEmail() != email || got.GetTraits().GetName() != name || string(got.GetCredentials()[0].GetMaterial()) != secret {
		t.Fatalf("resident fields not unsealed on read: %v", got)
	}
	if got.GetSessions()[0].GetDevice() != "phone" {
		t.Fatalf("session device (resident) missing: %v", got.GetSessions())
	}
	keys, err := w.keys.Keys(id)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys of %s in the region's store: %v, %v", id, keys, err)
	}
	needles := map[string][]byte{
		"email": []byte(email), "name": []byte(name), "credential": []byte(secret),
		"data key": keys[0].Material[:],
	}
	// Flush so the states are in SSTables as well as the WAL.
	if err := p.eng.store.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if found := scanDir(t, w.dir, needles); len(found) != 0 {
		t.Fatalf("read model holds plaintext at rest: %v", found)
	}

	// Remove the credential: its material must not stay at rest even sealed.
	w.append(withBody(id, &meridianv1.CredentialRemoved{CredentialId: "pw"}))
	w.sync(p)
	sealed, err := p.eng.store.residentSealed(id)
	if err != nil {
		t.Fatal(err)
	}
	res, err := openResident(w.keys, id, sealed)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.GetSets() {
		for _, e := range s.GetElements() {
			if len(e.GetValue()) > 0 && s.GetName() == "credentials" {
				t.Fatalf("removed credential's payload still in the resident state: %v", e)
			}
		}
	}

	// Erase, then send more for the erased identity: an update (ignored),
	// and a fresh key record (never stored).
	w.append(erase(id))
	w.append(withBody(id, &meridianv1.TraitsUpdated{Traits: &meridianv1.Traits{Name: ptr("Late Update")}}))
	w.sync(p)
	if _, err := p.Get(testCtx(t), id); !errors.Is(err, ErrErased) {
		t.Fatalf("Get after erasure: %v, want ErrErased", err)
	}
	if _, err := p.LookupEmail(hashEmail(email)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("email hash still indexed after erasure: %v", err)
	}
	if _, err := p.Session("sess-grace"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("session of an erased identity: %v", err)
	}
	if ks, err := w.keys.Keys(id); err != nil || len(ks) != 0 {
		t.Fatalf("keys after erasure: %v, %v", ks, err)
	}
	if s, _ := p.eng.store.residentSealed(id); s != nil {
		t.Fatal("resident state kept after erasure")
	}
	if m := p.Metrics(); m.Erasures != 1 || m.Ignored == 0 {
		t.Fatalf("metrics %+v: want one erasure and ignored late events", m)
	}
	if got, err := p.Get(testCtx(t), other); err != nil || got.GetTraits().GetName() != "Other Person" {
		t.Fatalf("another identity was affected: %v, %v", got, err)
	}

	// No file of either store yields the erased person's data or key.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.keys.Close(); err != nil {
		t.Fatal(err)
	}
	if found := scanDir(t, w.keysDir, needles); len(found) != 0 {
		t.Fatalf("key store still holds: %v", found)
	}
	if found := scanDir(t, w.dir, needles); len(found) != 0 {
		t.Fatalf("read model still holds: %v", found)
	}
}
