package tests

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/client"
	"github.com/meridian-id/meridian/cluster"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

// residencyFixture is what TestResidencyAudit wrote.
type residencyFixture struct {
	// secrets are resident plaintext values by description: none may be
	// stored in plaintext anywhere.
	secrets map[string][]byte
	// markers are GLOBAL values written last in each region: every region
	// must hold them in plaintext, which proves the byte scan sees what
	// the stores hold (and that what was written before them is on disk).
	markers map[string][]byte // by writing region
	// refused are event ids of resident writes sent outside the zone.
	refused []string
	// identities by zone.
	identities map[string][]identity
}

// TestResidencyAudit writes identities of both zones in every region that
// may take their writes, then audits every stream, log and file of every
// region: a zone's resident parts and key records exist only in that zone's
// regions, sealed, and only their read models serve them; every GLOBAL part
// reaches every region; no resident value is stored in plaintext anywhere;
// and a region outside the zone holds neither the zone's ciphertexts nor its
// key ids.
func TestResidencyAudit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := startCluster(t, cluster.Config{Dir: dir})
	rj := connectRegions(t, c)
	fx := writeResidencyFixture(t, c)

	written := readLogs(t, c) // every record the fixture wrote; heartbeats go on
	waitExactlyOnce(t, c, rj, written, convergeTimeout)
	ctx := testCtx(t, 2*convergeTimeout)

	// Read models: every region serves every identity, with its resident
	// fields only inside the identity's zone.
	waitApplied(t, c, written, fx.identities["eu"][0].id)
	for zone, ids := range fx.identities {
		for _, id := range ids {
			for _, r := range allRegions {
				res, err := getIdentity(ctx, c.Node(r).URL(), id.id, "", 0)
				if err != nil {
					t.Fatal(err)
				}
				if res.Status != http.StatusOK {
					t.Errorf("identity %s (zone %s) in %s: %d %s", id.id, zone, r, res.Status, res.Body)
					continue
				}
				inZone := allowedIn(c, zone, r)
				held := !proto.Equal(res.Identity, globalPart(res.Identity))
				switch {
				case held != inZone:
					t.Errorf("identity %s (zone %s): the read model of %s serves resident fields: %v, want %v", id.id, zone, r, held, inZone)
				case inZone && (res.Identity.GetTraits().Email == nil || res.Identity.GetTraits().Name == nil):
					t.Errorf("identity %s (zone %s): %s, in the zone, serves no email or name: %s", id.id, zone, r, res.Body)
				}
				for what, v := range fx.secrets {
					if bytes.Contains(res.Body, v) && !inZone {
						t.Errorf("identity %s (zone %s): %s serves resident value %s", id.id, zone, r, what)
					}
				}
				for _, cr := range res.Identity.GetCredentials() {
					if len(cr.GetMaterial()) > 0 {
						t.Errorf("identity %s: %s serves credential material of %s", id.id, r, cr.GetCredentialId())
					}
				}
			}
		}
	}

	// Every stream of every region, and every log.
	streams := map[string][]record{} // by region: all messages of all its streams
	for _, r := range allRegions {
		names, err := rj.streamNames(ctx, r)
		if err != nil {
			t.Fatalf("list streams of %s: %v", r, err)
		}
		for _, want := range []string{region.OriginStream(r), region.InboxStream(r)} {
			if !slices.Contains(names, want) {
				t.Fatalf("%s has streams %v, no %s", r, names, want)
			}
		}
		for _, name := range names {
			msgs, err := rj.read(ctx, r, name)
			if err != nil {
				t.Fatalf("read %s/%s: %v", r, name, err)
			}
			for _, m := range msgs {
				auditRecord(t, c, fx, r, "stream "+name, m)
			}
			streams[r] = append(streams[r], msgs...)
		}
	}
	logs := readLogs(t, c)
	for r, recs := range logs {
		for _, rec := range recs {
			auditRecord(t, c, fx, r, "log", rec)
		}
	}

	// Per identity: its resident parts and key records are in every region
	// of its zone, and in no other; its GLOBAL parts everywhere.
	for zone, ids := range fx.identities {
		for _, id := range ids {
			for _, r := range allRegions {
				inZone := allowedIn(c, zone, r)
				res, glob := partsOf(inStream(streams[r], region.InboxStream(r)), id.id)
				resAll, _ := partsOf(streams[r], id.id)
				resLog, _ := partsOf(logs[r], id.id)
				switch {
				case inZone && res == 0:
					t.Errorf("identity %s (zone %s): no resident or key record in the inbox of %s", id.id, zone, r)
				case !inZone && resAll+resLog > 0:
					t.Errorf("identity %s (zone %s): %d resident or key records in the streams and %d in the log of %s", id.id, zone, resAll, resLog, r)
				}
				if glob == 0 {
					t.Errorf("identity %s (zone %s): no GLOBAL part in the inbox of %s", id.id, zone, r)
				}
			}
		}
	}
	for origin, recs := range written {
		for _, rec := range recs {
			if rec.Zone() != writer.GlobalZone {
				continue
			}
			for _, r := range allRegions {
				if !hasID(inStream(streams[r], region.InboxStream(r)), rec.ID) {
					t.Errorf("GLOBAL record %s written in %s is not in the inbox of %s", rec.ID, origin, r)
				}
			}
		}
	}
	// The refused writes left nothing behind.
	for _, id := range fx.refused {
		for _, r := range allRegions {
			for _, m := range slices.Concat(streams[r], logs[r]) {
				if m.Event != nil && m.Event.GetEventId() == id {
					t.Errorf("refused event %s is in %s (%s)", id, r, m.Subject)
				}
			}
		}
	}

	// Raw bytes. Restart every node first, so that its Pebble stores
	// (log, key store) flush their WALs into SSTs and the scan covers both.
	for _, r := range allRegions {
		if err := c.StopNode(r); err != nil {
			t.Fatal(err)
		}
		if err := c.StartNode(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// The markers are on disk in every region's JetStream store and in the
	// writing node's data dir: the scan reads what the stores hold.
	eventually(t, convergeTimeout, "markers on disk in every region", func() (bool, string) {
		for _, r := range allRegions {
			files := readFiles(t, c.Embedded.Server(r).StoreDir())
			for origin, m := range fx.markers {
				if len(files.find(m)) == 0 {
					return false, fmt.Sprintf("the marker written in %s is in no JetStream file of %s (%d files, %d bytes)", origin, r, len(files), files.size())
				}
			}
			if own := readFiles(t, c.NodeDir(r)); len(own.find(fx.markers[r])) == 0 {
				return false, fmt.Sprintf("the marker written in %s is in no file of its node dir (%d files, %d bytes)", r, len(own), own.size())
			}
		}
		return true, ""
	})
	all := readFiles(t, dir)
	t.Logf("scanning %d files (%d Pebble SSTs), %d bytes, for %d resident values", len(all), len(all.withSuffix(".sst")), all.size(), len(fx.secrets))
	for what, v := range fx.secrets {
		if found := all.find(v); len(found) > 0 {
			t.Errorf("resident value %s (%q) stored in plaintext in %v", what, v, found)
		}
	}

	// Ciphertexts and key ids of each zone stay in that zone's regions.
	for _, zone := range []string{"eu", "us"} {
		var source string
		for _, r := range allRegions {
			if z, _ := c.Policy.ZoneOf(r); z == zone {
				source = r // the last region of the zone in policy order
			}
		}
		blobs := zoneBlobs(logs[source], zone)
		if len(blobs) == 0 {
			t.Fatalf("the log of %s holds no sealed part or key record of zone %s", source, zone)
		}
		for _, r := range allRegions {
			files := readFiles(t, regionRoots(t, c, r)...)
			for what, b := range blobs {
				found := files.find(b)
				switch inZone := allowedIn(c, zone, r); {
				case inZone && len(found) == 0:
					// The control: the scan does find what the zone holds.
					t.Errorf("%s of zone %s from the log of %s: not found in %s, which must hold it", what, zone, source, r)
				case !inZone && len(found) > 0:
					t.Errorf("%s of zone %s from the log of %s found in %s: %v", what, zone, source, r, found)
				}
			}
		}
	}
}

// writeResidencyFixture writes, for two identities per zone, every kind of
// event with resident data in every region of the zone, GLOBAL-only events
// from every region, and resident writes outside the zone (refused); then
// a GLOBAL marker per region.
func writeResidencyFixture(t *testing.T, c *cluster.Cluster) *residencyFixture {
	t.Helper()
	ctx := testCtx(t, startTimeout)
	fx := &residencyFixture{secrets: map[string][]byte{}, markers: map[string][]byte{}, identities: map[string][]identity{}}
	secret := func(what, format string) string {
		v := fmt.Sprintf(format, randHex(8))
		fx.secrets[what] = []byte(v)
		return v
	}
	clients := map[string]*client.Client{}
	for _, r := range allRegions {
		clients[r] = newClient(t, c.Node(r).URL(), client.WithRetry(1, 10*time.Millisecond, 10*time.Millisecond))
	}
	zoneRegions := map[string][]string{}
	for _, r := range allRegions {
		z, _ := c.Policy.ZoneOf(r)
		zoneRegions[z] = append(zoneRegions[z], r)
	}
	homes := map[string][]string{"eu": {euWest, euCentral}, "us": {usEast, usEast}}
	for _, zone := range []string{"eu", "us"} {
		for i, home := range homes[zone] {
			id := identity{id: newID(), home: home}
			fx.identities[zone] = append(fx.identities[zone], id)
			p := fmt.Sprintf("%s%d.", zone, i)
			mustAppend(t, ctx, clients[home], identityCreated(id.id, home, &meridianv1.Traits{
				Email:    ptr(secret(p+"email", "audit.%s@example."+zone)),
				Username: ptr(secret(p+"username", "user_%s")),
				Name:     ptr(secret(p+"name", "Name %s Surname")),
				Phone:    ptr(secret(p+"phone", "+49-%s")),
				Locale:   ptr("de-DE"),
				Metadata: map[string]string{"note": secret(p+"metadata", "note %s")},
				Address: &meridianv1.Address{
					Line1: secret(p+"address.line1", "%s Street 1"), City: secret(p+"address.city", "City %s"),
					PostalCode: "10115", Country: "DE",
				},
			}))
			ev := &meridianv1.Event{EventId: newEventID(), IdentityId: id.id, HomeRegion: home,
				Body: &meridianv1.Event_EmailVerified{EmailVerified: &meridianv1.EmailVerified{Email: secret(p+"verified_email", "verified.%s@example."+zone)}}}
			mustAppend(t, ctx, clients[home], ev)
			for _, r := range zoneRegions[zone] {
				q := p + r + "."
				mustAppend(t, ctx, clients[r],
					traitsUpdated(id.id, home, &meridianv1.Traits{Name: ptr(secret(q+"name", "Renamed %s")), Phone: ptr(secret(q+"phone", "+33-%s"))}),
					credentialAdded(id.id, home, "cred-"+r, []byte(secret(q+"credential", "$argon2id$material$%s"))),
					sessionIssued(id.id, home, "sess-"+r+"-"+randHex(4), secret(q+"device", "Device %s"), secret(q+"ip", "2001:db8:%s::1")),
				)
			}
			for _, r := range allRegions {
				// GLOBAL-only events are accepted everywhere.
				sid := "sess-global-" + r + "-" + randHex(4)
				mustAppend(t, ctx, clients[r],
					roleGranted(id.id, home, "role-from-"+r),
					sessionIssued(id.id, home, sid, "", ""),
					sessionRevoked(id.id, home, sid),
					loginFailed(id.id, home),
				)
				if allowedIn(c, zone, r) {
					continue
				}
				// Resident data outside the zone is refused and names the
				// home region.
				bad := traitsUpdated(id.id, home, &meridianv1.Traits{Name: ptr(secret(p+r+".refused", "Refused %s"))})
				_, err := clients[r].Append(ctx, bad)
				var apiErr *client.APIError
				if !errors.As(err, &apiErr) || apiErr.Status != http.StatusMisdirectedRequest || apiErr.Code != writer.CodeWrongRegion || apiErr.HomeRegion != home {
					t.Fatalf("resident write of a zone-%s identity in %s: got %v, want 421 %s naming home region %s", zone, r, err, writer.CodeWrongRegion, home)
				}
				fx.refused = append(fx.refused, bad.EventId)
			}
		}
	}
	// Markers last, so that once they are on disk what came before is too.
	for i, r := range allRegions {
		id := fx.identities["eu"][i%2]
		m := "marker-" + r + "-" + randHex(8)
		fx.markers[r] = []byte(m)
		mustAppend(t, ctx, clients[r], traitsUpdated(id.id, id.home, &meridianv1.Traits{Locale: ptr(m)}))
	}
	return fx
}

// auditRecord checks one stored record (stream message or log record) held
// by region r: subject and id agree with the event, a resident part or key
// record is of r's zone and sealed, and it carries no resident value.
func auditRecord(t *testing.T, c *cluster.Cluster, fx *residencyFixture, r, where string, m record) {
	t.Helper()
	for what, v := range fx.secrets {
		if bytes.Contains(m.Data, v) {
			t.Errorf("%s %s seq %d (%s) holds resident value %s in plaintext", r, where, m.Seq, m.Subject, what)
		}
	}
	if m.Event == nil {
		return // not an event (e.g. a claims KV entry)
	}
	e := m.Event
	sp, err := region.ParseSubject(m.Subject)
	if err != nil {
		t.Errorf("%s %s seq %d: %v", r, where, m.Seq, err)
		return
	}
	zone := writer.SubjectZone(e)
	if sp.Zone != zone || sp.Origin != e.GetOriginRegion() || m.Subject != subjectOf(e) {
		t.Errorf("%s %s seq %d: subject %s, but the event is a %s part of zone %s from %s", r, where, m.Seq, m.Subject, e.GetPart(), zone, e.GetOriginRegion())
	}
	if m.ID != writer.RecordID(e) {
		t.Errorf("%s %s seq %d: id %s, but the record id is %s", r, where, m.Seq, m.ID, writer.RecordID(e))
	}
	switch e.GetPart() {
	case meridianv1.Part_PART_RESIDENT, meridianv1.Part_PART_KEY:
		if !allowedIn(c, zone, r) {
			t.Errorf("%s %s seq %d: %s record %s of zone %s stored outside the zone", r, where, m.Seq, e.GetPart(), m.ID, zone)
		}
		if e.GetPart() == meridianv1.Part_PART_RESIDENT && len(e.GetSealed().GetCiphertext()) == 0 {
			t.Errorf("%s %s seq %d: resident record %s is not sealed", r, where, m.Seq, m.ID)
		}
		if e.GetPart() == meridianv1.Part_PART_KEY && len(e.GetDataKey().GetWrappedKey()) == 0 {
			t.Errorf("%s %s seq %d: key record %s holds no wrapped key", r, where, m.Seq, m.ID)
		}
	case meridianv1.Part_PART_GLOBAL:
		if e.GetSealed() != nil {
			t.Errorf("%s %s seq %d: GLOBAL record %s carries a sealed part", r, where, m.Seq, m.ID)
		}
	default:
		t.Errorf("%s %s seq %d: record %s has part %s", r, where, m.Seq, m.ID, e.GetPart())
	}
}

// partsOf counts an identity's resident and key records, and its GLOBAL
// records, among recs.
func partsOf(recs []record, identityID string) (resident, global int) {
	for _, m := range recs {
		if m.Event == nil || m.Event.GetIdentityId() != identityID {
			continue
		}
		if m.Event.GetPart() == meridianv1.Part_PART_GLOBAL {
			global++
		} else {
			resident++
		}
	}
	return resident, global
}

// inStream returns the messages of recs read from stream.
func inStream(recs []record, stream string) []record {
	var out []record
	for _, m := range recs {
		if m.Stream == stream {
			out = append(out, m)
		}
	}
	return out
}

func hasID(recs []record, id string) bool {
	for _, m := range recs {
		if m.ID == id {
			return true
		}
	}
	return false
}

// zoneBlobs returns, from a log, the ciphertexts, wrapped keys and key ids
// of zone's sealed parts and key records, by description.
func zoneBlobs(recs []record, zone string) map[string][]byte {
	out := map[string][]byte{}
	for _, m := range recs {
		e := m.Event
		if e.GetZone() != zone {
			continue
		}
		switch e.GetPart() {
		case meridianv1.Part_PART_RESIDENT:
			out["ciphertext of "+m.ID] = e.GetSealed().GetCiphertext()
			out["data key id "+e.GetSealed().GetKeyId()] = []byte(e.GetSealed().GetKeyId())
		case meridianv1.Part_PART_KEY:
			out["wrapped key of "+m.ID] = e.GetDataKey().GetWrappedKey()
			out["data key id "+e.GetDataKey().GetKeyId()] = []byte(e.GetDataKey().GetKeyId())
		}
	}
	return out
}
