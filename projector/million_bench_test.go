package projector

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/google/uuid"
	"github.com/meridian-id/meridian/conflict"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
)

// BenchmarkGetMillion measures GET /v1/identities/{id} over a read model
// of a million identities (MERIDIAN_BENCH_IDS overrides the count): a real
// Pebble read model and key store, built through the projector's own
// write path (batch.writeEntries and engine.commit: the deterministic
// state encoding, RESIDENT states sealed under each identity's data key
// from the key store), and read through a Projector opened by New on it,
// exactly as a node opens its model, with the node's defaults (64 MiB
// block cache, key-store cache of 65536 identities).
//
// Each identity is what the writer and the apply step make of an
// IdentityCreated (email, username, name, phone resident; locale and the
// keyed email and username hashes global), 1–3 RoleGranted, a password
// CredentialAdded, a SessionIssued and 0–2 LoginFailed: every event split
// into its GLOBAL and RESIDENT parts as the writer splits them and applied
// with the merger's ApplyInPlace, as the apply step does. What the bulk
// load skips is the inbox: no NATS, no sealed parts to unseal, no
// positions; the model it leaves is the one those events would leave.
//
// Sub-benchmarks (one GET per iteration, one client, keep-alive):
//
//	http_random      GET over a loopback net/http server, uniformly random ids
//	http_sequential  the same in key order (neighbours share Pebble blocks)
//	direct_random    Projector.Get (the read path without HTTP and JSON)
//	direct_sequential
//
// Each reports p50/p99/p999 (µs), the process CPU per GET, the block cache
// size and its hit rate, the key-store cache hit rate and the 1-minute load
// average. MERIDIAN_BENCH_KEY_CACHE sets the key store's CacheEntries
// (default the keystore's, as a node opens it). Building a million takes
// minutes; with MERIDIAN_BENCH_MODEL_DIR set the model and key store are
// kept there and reused by later runs with the same count.
//
//	go test -run '^$' -bench GetMillion -benchtime 200000x -timeout 30m ./projector/
func BenchmarkGetMillion(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("MERIDIAN_BENCH_IDS")); err == nil && v > 0 {
		n = v
	}
	dir := os.Getenv("MERIDIAN_BENCH_MODEL_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else {
		// Named by count and generator version: a cache made by a
		// different benchEvents is not reused.
		dir = filepath.Join(dir, fmt.Sprintf("million-%d-v%d", n, benchModelVersion))
	}
	mdl := ensureMillionModel(b, dir, n)

	// The key store as a node opens it (default cache: 65536 identities)
	// unless MERIDIAN_BENCH_KEY_CACHE sets its CacheEntries.
	keyCache, _ := strconv.Atoi(os.Getenv("MERIDIAN_BENCH_KEY_CACHE"))
	keys, err := keystore.Open(keystore.Options{Dir: mdl.keysDir, CacheEntries: keyCache})
	if err != nil {
		b.Fatal(err)
	}
	defer keys.Close()
	p, err := New(Config{
		Region: projRegion, Zone: testZone, JS: noJS{}, Dir: mdl.modelDir, Keys: keys,
		ZoneKeys: mdl.zones, HashEmail: hashEmail,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()

	// Every identity id, in key order (a scan of the GLOBAL states).
	t0 := time.Now()
	ids := make([]string, 0, n)
	if err := p.eng.store.scan([]byte{pGlobal}, func(k, _ []byte) error {
		ids = append(ids, string(k[1:]))
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	if len(ids) != n {
		b.Fatalf("the model holds %d identities, want %d", len(ids), n)
	}
	b.Logf("model: %d identities, read model %.0f MiB, key store %.0f MiB on disk (built in %v%s); id scan %v; GOMAXPROCS %d",
		n, mib(dirSize(mdl.modelDir)), mib(dirSize(mdl.keysDir)), mdl.built.Round(time.Second),
		map[bool]string{true: ", reused", false: ""}[mdl.reused], time.Since(t0).Round(time.Millisecond), runtime.GOMAXPROCS(0))
	b.Logf("key store cache: %d identities (0: keystore's default, 65536)", keyCache)

	mux := http.NewServeMux()
	p.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	defer client.CloseIdleConnections()
	base := srv.URL + "/v1/identities/"
	ctx := context.Background()

	viaHTTP := func(id string) error {
		resp, err := client.Get(base + id)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || resp.Header.Get(ResidentHeader) != "held") {
			err = fmt.Errorf("GET %s: %s, %s %q", id, resp.Status, ResidentHeader, resp.Header.Get(ResidentHeader))
		}
		return err
	}
	direct := func(id string) error {
		ident, err := p.Get(ctx, id)
		if err == nil && ident.GetTraits().GetEmail() == "" {
			err = fmt.Errorf("identity %s: no resident email", id)
		}
		return err
	}
	// One full answer, checked: the resident traits were unsealed, the
	// credential material stripped.
	checkAnswer(b, client, base+ids[len(ids)/2])

	// Every random walk has its own seed: a walk repeating the warm-up's
	// ids would find them cached.
	var seed uint64
	random := func() func() string {
		seed++
		r := mrand.New(mrand.NewPCG(seed, uint64(time.Now().UnixNano())))
		return func() string { return ids[r.IntN(len(ids))] }
	}
	sequential := func() func() string {
		i := mrand.IntN(len(ids))
		return func() string { i = (i + 1) % len(ids); return ids[i] }
	}

	// Warm up once over random ids (the model is in the OS page cache after
	// the build or the id scan; this fills the block cache and the key-store
	// cache to their steady state, and the client's connection).
	warm := random()
	for range 20_000 {
		if err := viaHTTP(warm()); err != nil {
			b.Fatal(err)
		}
	}

	run := func(name string, get func(string) error, next func() func() string) {
		b.Run(name, func(b *testing.B) {
			pick := next()
			for range 2_000 { // this access pattern's own short warm-up
				if err := get(pick()); err != nil {
					b.Fatal(err)
				}
			}
			bc0 := p.eng.store.db.Metrics().BlockCache
			kh0 := keys.Metrics().CacheHits
			cpu0 := cpuTime()
			lat := make([]time.Duration, 0, 1<<18)
			gets := 0
			for b.Loop() {
				id := pick()
				t := time.Now()
				if err := get(id); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t))
				gets++
			}
			cpu := cpuTime() - cpu0
			bc1 := p.eng.store.db.Metrics().BlockCache
			kh1 := keys.Metrics().CacheHits
			slices.Sort(lat)
			q := func(f float64) float64 {
				return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))].Nanoseconds()) / 1e3
			}
			b.ReportMetric(q(0.50), "p50_us")
			b.ReportMetric(q(0.99), "p99_us")
			b.ReportMetric(q(0.999), "p999_us")
			if hits, misses := bc1.Hits-bc0.Hits, bc1.Misses-bc0.Misses; hits+misses > 0 {
				b.ReportMetric(100*float64(hits)/float64(hits+misses), "blockcache_hit_%")
			}
			// Process CPU (client, server and Pebble together for http_*)
			// per GET: what contention on a shared machine does not inflate.
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(gets), "cpu_us/op")
			b.ReportMetric(100*float64(kh1-kh0)/float64(gets), "keycache_hit_%")
			b.ReportMetric(float64(p.eng.store.cache.(*pebble.Cache).MaxSize())/(1<<20), "blockcache_MiB")
			b.ReportMetric(loadAvg1(), "load1")
		})
	}
	run("http_random", viaHTTP, random)
	run("http_sequential", viaHTTP, sequential)
	run("direct_random", direct, random)
	run("direct_sequential", direct, sequential)
}

// benchModelVersion names what benchEvents and the bulk load make; bump it
// when they change, so cached models are rebuilt.
const benchModelVersion = 1

// noJS satisfies Config.JS for a projector that is never started (its
// queries do not touch JetStream).
type noJS struct{ jetstream.JetStream }

func checkAnswer(b *testing.B, client *http.Client, url string) {
	b.Helper()
	resp, err := client.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	var ident meridianv1.Identity
	if err := protojson.Unmarshal(body, &ident); err != nil {
		b.Fatalf("GET %s: %s: %v: %s", url, resp.Status, err, body)
	}
	creds, sess := ident.GetCredentials(), ident.GetSessions()
	switch {
	case resp.StatusCode != http.StatusOK, ident.GetTraits().GetEmail() == "", ident.GetTraits().GetName() == "",
		len(ident.GetRoles()) == 0, len(sess) != 1 || sess[0].GetDevice() == "", len(creds) != 1:
		b.Fatalf("GET %s: %s: not a whole identity: %s", url, resp.Status, body)
	case len(creds[0].GetMaterial()) > 0:
		b.Fatalf("GET %s: credential material in the answer: %s", url, body)
	}
	b.Logf("answer: %d bytes: %s", len(body), body)
}

type millionModel struct {
	modelDir, keysDir string
	zones             map[string]keystore.ZoneKey
	built             time.Duration
	reused            bool
}

// ensureMillionModel builds the model of n identities in dir, or reuses
// the one a finished earlier build left there (its READY file names n).
func ensureMillionModel(b *testing.B, dir string, n int) millionModel {
	b.Helper()
	m := millionModel{
		modelDir: filepath.Join(dir, "model"), keysDir: filepath.Join(dir, "keys"),
		// The zone key only unwraps key records, which the bulk load does
		// not have: any key does.
		zones: map[string]keystore.ZoneKey{"eu": {ID: "eu-1"}},
	}
	ready := filepath.Join(dir, "READY")
	if v, err := os.ReadFile(ready); err == nil {
		f := strings.Fields(string(v))
		if len(f) == 2 && f[0] == strconv.Itoa(n) {
			d, _ := time.ParseDuration(f[1])
			m.built, m.reused = d, true
			return m
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	bulkLoadIdentities(b, m, n)
	m.built = time.Since(start)
	if err := os.WriteFile(ready, fmt.Appendf(nil, "%d %s\n", n, m.built), 0o644); err != nil {
		b.Fatal(err)
	}
	return m
}

// bulkLoadIdentities writes n identities into a fresh model: their data
// keys into the key store (PutMany, as the projector stores arriving key
// records, one synced write per chunk), their states through the engine's
// commit path (writeEntries on every share, join, commit; not synced, as
// the projector's batches are, with one sync at the end as Rebuild does).
func bulkLoadIdentities(b *testing.B, m millionModel, n int) {
	b.Helper()
	keys, err := keystore.Open(keystore.Options{Dir: m.keysDir})
	if err != nil {
		b.Fatal(err)
	}
	defer keys.Close()
	merger, err := conflict.NewMerger()
	if err != nil {
		b.Fatal(err)
	}
	shards := runtime.GOMAXPROCS(0)
	eng, err := openEngine(engineConfig{
		dir: m.modelDir, keys: keys, merger: merger, zone: testZone, zoneKeys: m.zones,
		now: func() int64 { return testNow }, log: slog.New(slog.DiscardHandler), shards: shards,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer eng.close()

	const chunk = 8192
	gen := &identityGen{merger: merger}
	start, lastLog := time.Now(), time.Now()
	var keyTime time.Duration
	for first := 0; first < n; first += chunk {
		count := min(chunk, n-first)
		ids := make([]string, count)
		put := make([]keystore.PutKey, count)
		for i := range ids {
			ids[i] = uuid.Must(uuid.NewRandom()).String()
			material := make([]byte, keystore.KeySize)
			rand.Read(material)
			put[i] = keystore.PutKey{IdentityID: ids[i], KeyID: uuid.Must(uuid.NewV7()).String(), Material: material}
		}
		t := time.Now()
		if err := keys.PutMany(put); err != nil {
			b.Fatal(err)
		}
		keyTime += time.Since(t)
		batches := make([]*batch, shards)
		for s := range batches {
			batches[s] = newBatch(eng)
		}
		msgs := atomic.Uint64{}
		if err := eng.shardsDo(batches, func(s int, bt *batch) error {
			for i := s; i < count; i += shards {
				id := ids[i]
				g, r, k, err := gen.identity(first+i, id)
				if err != nil {
					return err
				}
				en := bt.entry(id)
				en.global, en.globalLoaded, en.globalDirty = g, true, true
				en.resident, en.residentLoaded, en.residentDirty = r, true, true
				bt.n.messages += uint64(k)
				bt.n.identity += uint64(k)
				msgs.Add(uint64(k))
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		eng.pendingSeq = eng.inboxSeq + msgs.Load()
		err := eng.commitShards(batches)
		for _, bt := range batches {
			bt.close()
		}
		if err != nil {
			b.Fatal(err)
		}
		if time.Since(lastLog) > 15*time.Second {
			lastLog = time.Now()
			done := first + count
			b.Logf("bulk load: %d/%d identities, %v, %.0f/s, load %.2f", done, n, time.Since(start).Round(time.Second),
				float64(done)/time.Since(start).Seconds(), loadAvg1())
		}
	}
	if err := eng.store.db.LogData(nil, pebble.Sync); err != nil {
		b.Fatal(err)
	}
	// Settle the LSM as a model that has run for a while would be: no
	// pending compaction debt to slow the reads under measurement.
	t := time.Now()
	if err := eng.store.db.Compact(context.Background(), []byte{0}, []byte{0xff}, true); err != nil {
		b.Fatal(err)
	}
	b.Logf("bulk load: %d identities (%d state messages) in %v (key store %v, final compaction %v)",
		n, eng.inboxSeq, time.Since(start).Round(time.Second), keyTime.Round(time.Second), time.Since(t).Round(time.Second))
}

// identityGen makes identities' states the way the apply step does: each
// event's GLOBAL and RESIDENT parts (split as the writer splits them, with
// the fields it derives) applied in place by the merger. Safe for
// concurrent use.
type identityGen struct {
	merger *conflict.Merger
	seq    atomic.Uint64 // the origin node's log sequence
}

var (
	benchLocales = []string{"de-DE", "en-GB", "fr-FR", "nl-NL", "pl-PL"}
	benchRoles   = []string{"member", "billing", "support", "admin", "auditor"}
)

// benchEvents are identity number i's events as a service sends them
// (before the writer): created with four resident traits and a locale,
// 1–3 roles, a password credential, a session and 0–2 failed logins.
func benchEvents(i int, id string) []*meridianv1.Event {
	clock := benchClock(i)
	email := fmt.Sprintf("user%07d@example.org", i)
	evs := []*meridianv1.Event{{IdentityId: id, HomeRegion: originRegion, Body: &meridianv1.Event_IdentityCreated{
		IdentityCreated: &meridianv1.IdentityCreated{HomeRegion: originRegion, Traits: &meridianv1.Traits{
			Email: ptr(email), Username: ptr(fmt.Sprintf("user%07d", i)), Name: ptr(fmt.Sprintf("Person Number %d", i)),
			Phone: ptr(fmt.Sprintf("+49 30 %07d", i)), Locale: ptr(benchLocales[i%len(benchLocales)]),
		}},
	}}}
	for r := range 1 + i%3 {
		evs = append(evs, grant(id, benchRoles[(i+r)%len(benchRoles)]))
	}
	evs = append(evs,
		withBody(id, &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
			CredentialId: "pw-" + id[:8], Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH,
			Material:        fmt.Appendf(nil, "$argon2id$v=19$m=65536,t=3,p=4$%022x$%043x", i, i*7919),
			CreatedAtUnixMs: clock,
		}}),
		withBody(id, &meridianv1.SessionIssued{Session: &meridianv1.Session{
			SessionId: uuid.Must(uuid.NewRandom()).String(), ExpiresAtUnixMs: testNow + 86_400_000, IssuedAtUnixMs: clock,
			Device: []string{"phone", "laptop", "tablet"}[i%3], Ip: fmt.Sprintf("192.0.2.%d", i%250+1),
		}}))
	for f := range i % 3 {
		evs = append(evs, withBody(id, &meridianv1.LoginFailed{AtUnixMs: clock + int64(f+1)*60_000}))
	}
	return evs
}

// benchClock spreads the identities' histories over the month before
// testNow.
func benchClock(i int) int64 { return testNow - 30*86_400_000 + int64(i)%(29*86_400_000) }

// benchParts splits an event of benchEvents as the writer does: fields by
// their (residency), keys of set elements into both parts, the keyed
// hashes and LoginFailed's count derived into the GLOBAL part. resident is
// nil when the event has no resident field.
func benchParts(ev *meridianv1.Event) (global, resident *meridianv1.Event) {
	part := func(body any) *meridianv1.Event {
		if c, ok := body.(*meridianv1.IdentityCreated); ok {
			return &meridianv1.Event{IdentityId: ev.IdentityId, Body: &meridianv1.Event_IdentityCreated{IdentityCreated: c}}
		}
		return withBody(ev.IdentityId, body)
	}
	switch b := ev.Body.(type) {
	case *meridianv1.Event_IdentityCreated:
		t := b.IdentityCreated.GetTraits()
		return part(&meridianv1.IdentityCreated{HomeRegion: b.IdentityCreated.GetHomeRegion(), Traits: &meridianv1.Traits{
				Locale: t.Locale, EmailHash: hashEmail(t.GetEmail()), UsernameHash: writer.UsernameHash(testHashKey, t.GetUsername()),
			}}), part(&meridianv1.IdentityCreated{Traits: &meridianv1.Traits{
				Email: t.Email, Username: t.Username, Name: t.Name, Phone: t.Phone,
			}})
	case *meridianv1.Event_CredentialAdded:
		c := b.CredentialAdded.GetCredential()
		return part(&meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
				CredentialId: c.GetCredentialId(), Type: c.GetType(), CreatedAtUnixMs: c.GetCreatedAtUnixMs(),
			}}), part(&meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
				CredentialId: c.GetCredentialId(), Material: c.GetMaterial(),
			}})
	case *meridianv1.Event_SessionIssued:
		s := b.SessionIssued.GetSession()
		return part(&meridianv1.SessionIssued{Session: &meridianv1.Session{
				SessionId: s.GetSessionId(), ExpiresAtUnixMs: s.GetExpiresAtUnixMs(), IssuedAtUnixMs: s.GetIssuedAtUnixMs(),
			}}), part(&meridianv1.SessionIssued{Session: &meridianv1.Session{
				SessionId: s.GetSessionId(), Device: s.GetDevice(), Ip: s.GetIp(),
			}})
	case *meridianv1.Event_LoginFailed:
		return part(&meridianv1.LoginFailed{AtUnixMs: b.LoginFailed.GetAtUnixMs(), Counted: true}), nil
	case *meridianv1.Event_RoleGranted:
		return part(b.RoleGranted), nil
	}
	panic(fmt.Sprintf("benchParts: %T", ev.Body))
}

// identity returns the GLOBAL and RESIDENT states benchEvents(i, id) make
// and how many parts (inbox messages, key record aside) made them.
func (g *identityGen) identity(i int, id string) (global, resident *meridianv1.IdentityState, parts int, err error) {
	return g.apply(id, benchClock(i), benchEvents(i, id))
}

// apply stamps each event's parts as the writer does (one event id and
// HLC for both parts, the origin node's next sequence each) and applies
// them in place, GLOBAL to GLOBAL, RESIDENT to RESIDENT, as the apply step
// does.
func (g *identityGen) apply(id string, clock int64, evs []*meridianv1.Event) (global, resident *meridianv1.IdentityState, parts int, err error) {
	for k, ev := range evs {
		gp, rp := benchParts(ev)
		evID, hlc := uuid.Must(uuid.NewV7()).String(), uint64(conflict.MakeTimestamp(clock+int64(k)*60_000, 0))
		for _, p := range []*meridianv1.Event{gp, rp} {
			if p == nil {
				continue
			}
			p.EventId, p.OriginRegion, p.OriginNode, p.HomeRegion = evID, originRegion, originRegion+"-n1", originRegion
			p.Sequence, p.Hlc, p.Zone = g.seq.Add(1), hlc, testZone
			if p == gp {
				p.Part = meridianv1.Part_PART_GLOBAL
				global, _, err = g.merger.ApplyInPlace(global, p)
			} else {
				p.Part = meridianv1.Part_PART_RESIDENT
				resident, _, err = g.merger.ApplyInPlace(resident, p)
			}
			if err != nil {
				return nil, nil, 0, fmt.Errorf("identity %s: %v part of %T: %w", id, p.Part, ev.Body, err)
			}
			parts++
		}
	}
	return global, resident, parts, nil
}

// TestBenchIdentitiesMatchPipeline checks BenchmarkGetMillion's bulk load
// against the real pipeline: benchEvents of a few identities through the
// writer, the inbox and the projector read the same as the states the
// bulk load makes of them.
func TestBenchIdentitiesMatchPipeline(t *testing.T) {
	w := newWorld(t)
	p := w.start()
	merger, err := conflict.NewMerger()
	if err != nil {
		t.Fatal(err)
	}
	gen := &identityGen{merger: merger}
	for i := range 3 {
		id := newID()
		evs := benchEvents(i, id)
		global, resident, _, err := gen.apply(id, benchClock(i), evs)
		if err != nil {
			t.Fatal(err)
		}
		w.append(evs...)
		w.sync(p)
		got, err := p.Get(testCtx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		// The HLCs differ (the writer stamps its own clock): the rest
		// must not.
		want := merger.View(global, resident)
		got.UpdatedHlc, want.UpdatedHlc = 0, 0
		if !equalIdentity(got, want) {
			t.Errorf("identity %d:\npipeline  %v\nbulk load %v", i, got, want)
		}
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// loadAvg1 is the 1-minute load average (0 where /proc is missing).
func loadAvg1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
