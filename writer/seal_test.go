package writer_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"google.golang.org/protobuf/proto"
)

type person struct {
	identity                         string
	email, username, name, phone     string
	street, material, device, ip, md string
}

func newPerson(i int) person {
	return person{
		identity: newIdentity(),
		email:    fmt.Sprintf("Zelda.Sealtest%03d@Example.org", i),
		username: fmt.Sprintf("zelda_sealtest_%03d", i),
		name:     fmt.Sprintf("Zelda Sealtest-%03d", i),
		phone:    fmt.Sprintf("+49-555-%07d", 1000000+i),
		street:   fmt.Sprintf("Sealtest Allee %03d", i),
		material: fmt.Sprintf("$argon2id$sealtest-material-%03d", i),
		device:   fmt.Sprintf("SealtestPhone-%03d", i),
		ip:       fmt.Sprintf("203.0.113.%d", i),
		md:       fmt.Sprintf("sealtest-metadata-%03d", i),
	}
}

func (p person) secrets() []string {
	return []string{p.email, p.username, p.name, p.phone, p.street, p.material, p.device, p.ip, p.md}
}

func (p person) events() []*meridianv1.Event {
	home := "eu-west"
	return []*meridianv1.Event{
		created(p.identity, home, &meridianv1.Traits{
			Email: ptr(p.email), Username: ptr(p.username), Name: ptr(p.name), Phone: ptr(p.phone),
			Locale: ptr("de-DE"), Metadata: map[string]string{"note": p.md},
			Address: &meridianv1.Address{Line1: p.street, City: "Berlin"},
		}),
		{IdentityId: p.identity, HomeRegion: home, Body: &meridianv1.Event_CredentialAdded{CredentialAdded: &meridianv1.CredentialAdded{
			Credential: &meridianv1.Credential{CredentialId: "cred-" + p.identity, Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH, Material: []byte(p.material)},
		}}},
		{IdentityId: p.identity, HomeRegion: home, Body: &meridianv1.Event_SessionIssued{SessionIssued: &meridianv1.SessionIssued{
			Session: &meridianv1.Session{SessionId: "sess-" + p.identity, ExpiresAtUnixMs: testNow + 3600_000, Device: p.device, Ip: p.ip},
		}}},
		{IdentityId: p.identity, HomeRegion: home, Body: &meridianv1.Event_EmailVerified{EmailVerified: &meridianv1.EmailVerified{Email: p.email}}},
	}
}

// grepDir returns the files under dir containing needle.
func grepDir(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, needle) {
			hits = append(hits, filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// The RESIDENT bytes in the log hold no plaintext: search every file of the
// log's Pebble directory for every personal value; then unseal the resident
// records with the key store and get every value back.
func TestSealedAtRest(t *testing.T) {
	e := newEnv(t, "eu-west")
	ctx := context.Background()
	people := make([]person, 12)
	for i := range people {
		people[i] = newPerson(i)
		if _, err := e.w.Append(ctx, people[i].events()...); err != nil {
			t.Fatal(err)
		}
	}
	// A GLOBAL marker proves the scan reads the bytes where records live.
	const marker = "role-visible-in-the-clear-xyz"
	if _, err := e.w.Append(ctx, roleGranted(people[0].identity, "eu-west", marker)); err != nil {
		t.Fatal(err)
	}
	if err := e.log.Close(); err != nil {
		t.Fatal(err)
	}
	logDir := filepath.Join(e.dir, "log")
	if hits := grepDir(t, logDir, []byte(marker)); len(hits) == 0 {
		t.Fatal("the GLOBAL marker is in no file of the log: the scan proves nothing")
	}
	for _, p := range people {
		for _, s := range append(p.secrets(), writer.NormalizeEmail(p.email)) {
			if hits := grepDir(t, logDir, []byte(s)); len(hits) > 0 {
				t.Errorf("plaintext %q found in %v", s, hits)
			}
		}
	}

	// Reopen and unseal.
	l, err := eventlog.Open(eventlog.Options{Dir: logDir, Stamp: writer.StampSequence})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e.log = l
	recs := e.records(t)
	byIdentity := map[string]person{}
	for _, p := range people {
		byIdentity[p.identity] = p
	}
	var resident, keyRecs int
	for _, ev := range recs {
		p, ok := byIdentity[ev.IdentityId]
		if !ok {
			continue
		}
		switch ev.Part {
		case meridianv1.Part_PART_RESIDENT:
			resident++
			k, err := e.keys.Get(ev.IdentityId, ev.Sealed.KeyId)
			if err != nil {
				t.Fatal(err)
			}
			pt, err := keystore.Unseal(k.Material, ev.Sealed, writer.RecordID(ev))
			if err != nil {
				t.Fatal(err)
			}
			inner := &meridianv1.Event{}
			if err := proto.Unmarshal(pt, inner); err != nil {
				t.Fatal(err)
			}
			checkUnsealed(t, p, ev, inner)
		case meridianv1.Part_PART_KEY:
			keyRecs++
			dk := ev.GetDataKey()
			got, err := keystore.Unwrap(e.zones, ev.IdentityId, dk)
			if err != nil {
				t.Fatal(err)
			}
			k, err := e.keys.Get(ev.IdentityId, dk.KeyId)
			if err != nil || k.Material != got {
				t.Fatalf("unwrapped key record differs from the key store's key (%v)", err)
			}
			if writer.SubjectType(ev) != "key" || writer.SubjectZone(ev) != "eu" || writer.RecordID(ev) != dk.KeyId+":k" {
				t.Errorf("key record subject/id = %s %s %s", writer.SubjectZone(ev), writer.SubjectType(ev), writer.RecordID(ev))
			}
		case meridianv1.Part_PART_GLOBAL:
			checkGlobal(t, e, p, ev)
		}
	}
	if resident != 4*len(people) {
		t.Errorf("%d resident records; want %d", resident, 4*len(people))
	}
	if keyRecs != len(people) {
		t.Errorf("%d key records; want one per identity (%d)", keyRecs, len(people))
	}
}

func checkUnsealed(t *testing.T, p person, outer, inner *meridianv1.Event) {
	t.Helper()
	if writer.SubjectType(outer) != writer.SubjectType(inner) {
		t.Errorf("sealed body type %s inside a %s record", writer.SubjectType(inner), writer.SubjectType(outer))
	}
	switch b := inner.Body.(type) {
	case *meridianv1.Event_IdentityCreated:
		tr := b.IdentityCreated.GetTraits()
		if tr.GetEmail() != p.email || tr.GetUsername() != p.username || tr.GetName() != p.name || tr.GetPhone() != p.phone ||
			tr.GetMetadata()["note"] != p.md || tr.GetAddress().GetLine1() != p.street {
			t.Errorf("unsealed traits = %v", tr)
		}
		if tr.Locale != nil || tr.EmailHash != nil || b.IdentityCreated.HomeRegion != "" {
			t.Errorf("GLOBAL fields inside the sealed part: %v", b.IdentityCreated)
		}
		if outer.GetIdentityCreated().GetTraits() != nil {
			t.Errorf("resident record's visible body holds traits: %v", outer.GetIdentityCreated())
		}
	case *meridianv1.Event_CredentialAdded:
		c := b.CredentialAdded.GetCredential()
		if string(c.GetMaterial()) != p.material || c.GetCredentialId() != "cred-"+p.identity || c.GetType() != 0 {
			t.Errorf("unsealed credential = %v", c)
		}
		if vis := outer.GetCredentialAdded().GetCredential(); vis.GetCredentialId() != c.GetCredentialId() || vis.GetMaterial() != nil {
			t.Errorf("resident record's visible credential = %v; want only its key field", vis)
		}
	case *meridianv1.Event_SessionIssued:
		s := b.SessionIssued.GetSession()
		if s.GetDevice() != p.device || s.GetIp() != p.ip || s.GetSessionId() != "sess-"+p.identity || s.GetExpiresAtUnixMs() != 0 {
			t.Errorf("unsealed session = %v", s)
		}
	case *meridianv1.Event_EmailVerified:
		if b.EmailVerified.GetEmail() != p.email || b.EmailVerified.EmailHash != nil {
			t.Errorf("unsealed email_verified = %v", b.EmailVerified)
		}
	default:
		t.Errorf("unexpected sealed body %T", b)
	}
}

func checkGlobal(t *testing.T, e *env, p person, ev *meridianv1.Event) {
	t.Helper()
	if ev.OriginRegion != "eu-west" || ev.OriginNode != "eu-west-n1" || ev.Zone != "eu" || ev.HomeRegion != "eu-west" || ev.Hlc == 0 || ev.Sealed != nil {
		t.Errorf("GLOBAL envelope = %v", ev)
	}
	if writer.SubjectZone(ev) != "global" || writer.RecordID(ev) != ev.EventId+":g" {
		t.Errorf("GLOBAL subject zone %s id %s", writer.SubjectZone(ev), writer.RecordID(ev))
	}
	emailHash := writer.EmailHash(e.hash, p.email)
	switch b := ev.Body.(type) {
	case *meridianv1.Event_IdentityCreated:
		tr := b.IdentityCreated.GetTraits()
		if !bytes.Equal(tr.GetEmailHash(), emailHash) || !bytes.Equal(tr.GetUsernameHash(), writer.UsernameHash(e.hash, p.username)) {
			t.Errorf("hashes missing or wrong: %v", tr)
		}
		if tr.GetLocale() != "de-DE" || tr.Email != nil || tr.Name != nil || b.IdentityCreated.HomeRegion != "eu-west" {
			t.Errorf("GLOBAL traits = %v", b.IdentityCreated)
		}
	case *meridianv1.Event_EmailVerified:
		if !bytes.Equal(b.EmailVerified.EmailHash, emailHash) || b.EmailVerified.Email != "" {
			t.Errorf("GLOBAL email_verified = %v", b.EmailVerified)
		}
	case *meridianv1.Event_CredentialAdded:
		if c := b.CredentialAdded.GetCredential(); c.GetMaterial() != nil || c.GetType() != meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH {
			t.Errorf("GLOBAL credential = %v", c)
		}
	}
}

// One request: its records come global, key (first use of the key), resident;
// the token names the last sequence per subject zone; the caller's events
// are not modified; a later request does not repeat the published key.
func TestAppendRecordsAndToken(t *testing.T) {
	e := newEnv(t, "eu-west")
	ctx := context.Background()
	id := newIdentity()
	ev := created(id, "eu-west", &meridianv1.Traits{Email: ptr(" Alice@Example.COM "), Locale: ptr("en")})
	ev.EventId = newEventID()
	before := proto.Clone(ev)
	res, err := e.w.Append(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(ev, before) {
		t.Error("Append modified the caller's event")
	}
	if len(res.EventIDs) != 1 || res.EventIDs[0] != ev.EventId {
		t.Errorf("EventIDs = %v; want the supplied id", res.EventIDs)
	}
	recs := e.records(t)
	parts := []meridianv1.Part{}
	for _, r := range recs {
		parts = append(parts, r.Part)
	}
	want := []meridianv1.Part{meridianv1.Part_PART_GLOBAL, meridianv1.Part_PART_KEY, meridianv1.Part_PART_RESIDENT}
	if fmt.Sprint(parts) != fmt.Sprint(want) || res.First != 1 || res.Last != 3 {
		t.Fatalf("parts = %v, First/Last %d/%d; want %v, 1/3", parts, res.First, res.Last, want)
	}
	// Normalisation: the hash ignores case and surrounding space.
	if got := recs[0].GetIdentityCreated().GetTraits().GetEmailHash(); !bytes.Equal(got, writer.EmailHash(e.hash, "alice@example.com")) {
		t.Error("email hash is not over the normalised email")
	}
	if recs[2].Sealed.KeyId != recs[1].GetDataKey().KeyId {
		t.Error("resident record sealed under another key than the key record's")
	}
	tok, err := writer.DecodeToken(res.Token)
	if err != nil {
		t.Fatal(err)
	}
	if tok.OriginRegion != "eu-west" || tok.OriginNode != "eu-west-n1" || tok.Sequences["global"] != 1 || tok.Sequences["eu"] != 3 || len(tok.Sequences) != 2 {
		t.Errorf("token = %v", tok)
	}
	k, _, _ := e.keys.Current(id)
	if !k.Published {
		t.Error("key not marked published after the append")
	}

	res2, err := e.w.Append(ctx, traitsUpdated(id, "eu-west", &meridianv1.Traits{Name: ptr("Alice")}))
	if err != nil {
		t.Fatal(err)
	}
	if n := res2.Last - res2.First + 1; n != 2 {
		t.Errorf("second request wrote %d records; want 2 (no repeated key record)", n)
	}
	// Hash cleared with the email.
	if _, err := e.w.Append(ctx, traitsUpdated(id, "eu-west", &meridianv1.Traits{Email: ptr("")})); err != nil {
		t.Fatal(err)
	}
	recs = e.records(t)
	last := recs[len(recs)-2] // global part of the clearing update
	if h := last.GetTraitsUpdated().GetTraits().EmailHash; h == nil || len(h) != 0 {
		t.Errorf("clearing the email should set an empty email_hash, got %v", h)
	}
}

// A key created but never published (a crash between the key store and the
// log) is published with the next append that uses it.
func TestUnpublishedKeyIsPublishedAgain(t *testing.T) {
	e := newEnv(t, "eu-west")
	id := newIdentity()
	k, err := e.keys.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.w.Append(context.Background(), traitsUpdated(id, "eu-west", &meridianv1.Traits{Name: ptr("N")})); err != nil {
		t.Fatal(err)
	}
	var keyRecs int
	for _, r := range e.records(t) {
		if r.Part == meridianv1.Part_PART_KEY {
			keyRecs++
			if r.GetDataKey().KeyId != k.ID {
				t.Errorf("key record for %s; want the existing key %s", r.GetDataKey().KeyId, k.ID)
			}
		}
	}
	if keyRecs != 1 {
		t.Errorf("%d key records; want 1", keyRecs)
	}
	if m := e.w.Metrics(); m.KeysCreated != 0 {
		t.Errorf("writer created %d keys; want 0 (one existed)", m.KeysCreated)
	}
}

func TestHeartbeatAndLogClosed(t *testing.T) {
	e := newEnv(t, "us-east")
	ctx := context.Background()
	res, err := e.w.AppendHeartbeat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recs := e.records(t)
	hb := recs[0]
	if hb.GetHeartbeat().GetSentAtUnixMs() != testNow || writer.SubjectType(hb) != "heartbeat" || writer.SubjectZone(hb) != "global" || res.Sequences["global"] != 1 {
		t.Errorf("heartbeat record = %v", hb)
	}
	if err := e.log.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = e.w.Append(ctx, roleGranted(newIdentity(), "us-east", "r"))
	var we *writer.Error
	if !asWriterError(err, &we) || we.Status != 503 || we.Code != writer.CodeUnavailable {
		t.Fatalf("append after close = %v; want 503 unavailable", err)
	}
	if !isErr(err, writer.ErrUnavailable) || !isErr(err, eventlog.ErrClosed) {
		t.Errorf("error %v should match ErrUnavailable and eventlog.ErrClosed", err)
	}
}

// A request naming many identities (some twice) gets one key record per
// identity, before that identity's first resident record.
func TestManyIdentitiesInOneRequest(t *testing.T) {
	e := newEnv(t, "eu-west")
	var evs []*meridianv1.Event
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = newIdentity()
		evs = append(evs, created(ids[i], "eu-west", &meridianv1.Traits{Email: ptr(fmt.Sprintf("u%d@example.com", i))}))
	}
	for i := range ids {
		evs = append(evs, traitsUpdated(ids[i], "eu-west", &meridianv1.Traits{Name: ptr("again")}))
	}
	res, err := e.w.Append(context.Background(), evs...)
	if err != nil {
		t.Fatal(err)
	}
	if n := res.Last - res.First + 1; n != 100 {
		t.Fatalf("%d records; want 100 (40 global, 20 key, 40 resident)", n)
	}
	keyOf := map[string]string{}
	for _, r := range e.records(t) {
		switch r.Part {
		case meridianv1.Part_PART_KEY:
			if _, dup := keyOf[r.IdentityId]; dup {
				t.Errorf("second key record for %s", r.IdentityId)
			}
			keyOf[r.IdentityId] = r.GetDataKey().KeyId
		case meridianv1.Part_PART_RESIDENT:
			if k, ok := keyOf[r.IdentityId]; !ok || k != r.Sealed.KeyId {
				t.Errorf("resident record of %s before its key record, or under another key", r.IdentityId)
			}
		}
	}
	if len(keyOf) != len(ids) {
		t.Errorf("%d key records; want %d", len(keyOf), len(ids))
	}
}
