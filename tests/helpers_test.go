package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meridian-id/meridian/client"
	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/node"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

// Regions of the development deployment every suite runs on.
const (
	usEast    = region.DevUSEast
	euWest    = region.DevEUWest
	euCentral = region.DevEUCentral
)

var allRegions = []string{usEast, euWest, euCentral}

const (
	// startTimeout bounds starting a cluster or restarting one of its parts.
	startTimeout = 60 * time.Second
	// convergeTimeout bounds replication after faults. NATS-NOTES: sources
	// catch up ~5 s after a restart, and a source may take 10–20 s to resume
	// after its origin region restarted (a fixed 10 s health check); a
	// source whose consumer could not be created retries after 10 s times
	// its failures (nats-server stream.go calculateRetryBackoff), and up to
	// 36 s was measured here with other suites running.
	convergeTimeout = 90 * time.Second
	// pollEvery is how often a wait re-checks its condition.
	pollEvery = 50 * time.Millisecond
)

// testLogger discards logs unless MERIDIAN_TEST_LOG is set (to a level:
// debug, info, warn, error), then it writes them to stderr.
func testLogger() *slog.Logger {
	lvl := os.Getenv("MERIDIAN_TEST_LOG")
	if lvl == "" {
		return slog.New(slog.DiscardHandler)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(lvl)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// testCtx is a context that ends with the test or after d.
func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startCluster starts the three-region deployment in a fresh temp dir and
// closes it when the test ends.
func startCluster(t testing.TB, cfg cluster.Config) *cluster.Cluster {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	began := time.Now()
	c, err := cluster.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Logf("cluster started in %v (dir %s)", time.Since(began).Round(time.Millisecond), cfg.Dir)
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

// eventually polls cond until it holds or timeout passes, then fails the
// test with cond's last account of what is missing.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v: %s", what, timeout, why)
		}
		<-tick.C
	}
}

// ---- event builders ----------------------------------------------------

func newID() string { return uuid.NewString() }

func newEventID() string {
	u, err := uuid.NewV7()
	if err != nil {
		panic(err)
	}
	return u.String()
}

// randHex returns n random bytes in hex: distinctive needles for byte scans.
func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func ptr[T any](v T) *T { return &v }

func ev(identity, home string) *meridianv1.Event {
	return &meridianv1.Event{EventId: newEventID(), IdentityId: identity, HomeRegion: home}
}

func identityCreated(identity, home string, traits *meridianv1.Traits) *meridianv1.Event {
	e := ev(identity, home)
	e.Body = &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{HomeRegion: home, Traits: traits}}
	return e
}

func traitsUpdated(identity, home string, traits *meridianv1.Traits) *meridianv1.Event {
	e := ev(identity, home)
	e.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{Traits: traits}}
	return e
}

func credentialAdded(identity, home, credID string, material []byte) *meridianv1.Event {
	e := ev(identity, home)
	e.Body = &meridianv1.Event_CredentialAdded{CredentialAdded: &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
		CredentialId: credID, Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH,
		Material: material, CreatedAtUnixMs: time.Now().UnixMilli(),
	}}}
	return e
}

func sessionIssued(identity, home, sessionID, device, ip string) *meridianv1.Event {
	e := ev(identity, home)
	now := time.Now().UnixMilli()
	e.Body = &meridianv1.Event_SessionIssued{SessionIssued: &meridianv1.SessionIssued{Session: &meridianv1.Session{
		SessionId: sessionID, IssuedAtUnixMs: now, ExpiresAtUnixMs: now + int64(time.Hour/time.Millisecond),
		Device: device, Ip: ip,
	}}}
	return e
}

func sessionRevoked(identity, home, sessionID string) *meridianv1.Event {
	e := ev(identity, home)
	e.Body = &meridianv1.Event_SessionRevoked{SessionRevoked: &meridianv1.SessionRevoked{SessionId: sessionID}}
	return e
}

func roleGranted(identity, home, role string) *meridianv1.Event {
	e := ev(identity, home)
	e.Body = &meridianv1.Event_RoleGranted{RoleGranted: &meridianv1.RoleGranted{Role: role}}
	return e
}

func roleRevoked(identity, home, role string) *meridianv1.Event {
	e := ev(identity, home)
	e.Body = &meridianv1.Event_RoleRevoked{RoleRevoked: &meridianv1.RoleRevoked{Role: role}}
	return e
}

func loginFailed(identity, home string) *meridianv1.Event {
	e := ev(identity, home)
	e.Body = &meridianv1.Event_LoginFailed{LoginFailed: &meridianv1.LoginFailed{AtUnixMs: time.Now().UnixMilli()}}
	return e
}

// newClient is a client of one region's HTTP API.
func newClient(t testing.TB, url string, opts ...client.Option) *client.Client {
	t.Helper()
	cl, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// mustAppend appends through the HTTP API and fails the test on any error.
func mustAppend(t testing.TB, ctx context.Context, cl *client.Client, events ...*meridianv1.Event) *client.AppendResult {
	t.Helper()
	res, err := cl.Append(ctx, events...)
	if err != nil {
		t.Fatalf("append %s: %v", describe(events), err)
	}
	return res
}

func describe(events []*meridianv1.Event) string {
	var parts []string
	for _, e := range events {
		parts = append(parts, fmt.Sprintf("%s(%s)", writer.SubjectType(e), e.GetIdentityId()))
	}
	return strings.Join(parts, ", ")
}

// ---- records: what the logs hold and where the policy lets it go --------

// record is one log record or stream message, decoded.
type record struct {
	Region  string // region of the log or stream that holds it
	Stream  string // the stream it was read from; "" for log records
	Seq     uint64 // log or stream sequence
	ID      string // record id (Nats-Msg-Id for stream messages)
	Subject string // the subject it is (or must be) published on
	Event   *meridianv1.Event
	Data    []byte
}

// Zone is the record's subject zone: "global" or the identity's zone.
func (r record) Zone() string { return writer.SubjectZone(r.Event) }

func decodeEvent(data []byte) (*meridianv1.Event, error) {
	var e meridianv1.Event
	if err := proto.Unmarshal(data, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// subjectOf is the subject a record of origin is shipped on (the contract
// of the brief, spelt through region's names).
func subjectOf(e *meridianv1.Event) string {
	zone := writer.SubjectZone(e)
	if e.GetPart() == meridianv1.Part_PART_KEY {
		return region.KeySubject(e.GetOriginRegion(), zone, e.GetIdentityId())
	}
	return region.Subject(e.GetOriginRegion(), zone, writer.SubjectType(e))
}

// readLog returns every record of a node's log.
func readLog(t testing.TB, n *node.Node) []record {
	t.Helper()
	l := n.Log()
	var out []record
	last := l.LastSeq()
	for from := l.FirstSeq(); from <= last && last > 0; {
		recs, err := l.Read(from, 1024)
		if err != nil {
			t.Fatalf("read log of %s from %d: %v", n.Region(), from, err)
		}
		if len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			if rec.Seq > last {
				break
			}
			e, err := decodeEvent(rec.Data)
			if err != nil {
				t.Fatalf("log of %s, seq %d: undecodable record: %v", n.Region(), rec.Seq, err)
			}
			out = append(out, record{Region: n.Region(), Seq: rec.Seq, ID: writer.RecordID(e), Subject: subjectOf(e),
				Event: e, Data: slices.Clone(rec.Data)})
		}
		from = recs[len(recs)-1].Seq + 1
	}
	return out
}

// readLogs reads the log of every region's running node.
func readLogs(t testing.TB, c *cluster.Cluster) map[string][]record {
	t.Helper()
	out := map[string][]record{}
	for _, r := range allRegions {
		n := c.Node(r)
		if n == nil {
			t.Fatalf("node of %s is not running", r)
		}
		out[r] = readLog(t, n)
	}
	return out
}

// allowedIn reports whether the policy lets records of subject zone reach
// region r: GLOBAL parts go everywhere, a zone's parts only to its regions.
func allowedIn(c *cluster.Cluster, zone, r string) bool {
	if zone == writer.GlobalZone {
		return true
	}
	z, ok := c.Policy.ZoneOf(r)
	return ok && z == zone
}

// expectedInbox is what the inbox of r must hold, by record id, given the
// logs of every region.
func expectedInbox(c *cluster.Cluster, logs map[string][]record, r string) map[string]record {
	out := map[string]record{}
	for _, recs := range logs {
		for _, rec := range recs {
			if allowedIn(c, rec.Zone(), r) {
				out[rec.ID] = rec
			}
		}
	}
	return out
}

// ---- streams -------------------------------------------------------------

// regionJS holds a JetStream client of every region's domain, connected to
// that region's own server, that survives server restarts.
type regionJS struct {
	js map[string]jetstream.JetStream
}

func connectRegions(t testing.TB, c *cluster.Cluster) *regionJS {
	t.Helper()
	rj := &regionJS{js: map[string]jetstream.JetStream{}}
	for _, r := range allRegions {
		nc, err := nats.Connect(c.Embedded.ClientURL(r), nats.Name("tests "+r),
			nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
		if err != nil {
			t.Fatalf("connect %s: %v", r, err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.NewWithDomain(nc, c.Embedded.Domain(r))
		if err != nil {
			t.Fatal(err)
		}
		rj.js[r] = js
	}
	return rj
}

// streamNames lists the streams of a region's domain.
func (rj *regionJS) streamNames(ctx context.Context, r string) ([]string, error) {
	l := rj.js[r].StreamNames(ctx)
	var names []string
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// count returns the number of messages in a stream.
func (rj *regionJS) count(ctx context.Context, r, stream string) (uint64, error) {
	s, err := rj.js[r].Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// read returns every message of a stream up to its last sequence at the
// time of the call, decoded (Event is nil for messages that are not events,
// such as KV entries).
func (rj *regionJS) read(ctx context.Context, r, stream string) ([]record, error) {
	s, err := rj.js[r].Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	last := info.State.LastSeq
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	var out []record
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			rec := record{Region: r, Stream: stream, Seq: md.Sequence.Stream, ID: m.Headers().Get(jetstream.MsgIDHeader),
				Subject: m.Subject(), Data: slices.Clone(m.Data())}
			if strings.HasPrefix(rec.Subject, region.SubjectRoot+".") {
				if rec.Event, err = decodeEvent(rec.Data); err != nil {
					return nil, fmt.Errorf("%s/%s seq %d (%s): undecodable: %w", r, stream, rec.Seq, rec.Subject, err)
				}
			}
			out = append(out, rec)
			if rec.Seq >= last {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if got == 0 {
			return nil, fmt.Errorf("%s/%s: read stopped at %d of last sequence %d", r, stream, len(out), last)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// ---- replication checks ------------------------------------------------

// idCounts counts the messages of a stream by Nats-Msg-Id.
func idCounts(msgs []record) map[string]int {
	out := make(map[string]int, len(msgs))
	for _, m := range msgs {
		out[m.ID]++
	}
	return out
}

// missingIDs lists (sorted, at most max) the ids of want not in have.
func missingIDs(want map[string]record, have map[string]int, max int) (n int, sample []string) {
	for id := range want {
		if have[id] == 0 {
			n++
			if len(sample) < max {
				sample = append(sample, id)
			}
		}
	}
	sort.Strings(sample)
	return n, sample
}

// waitExactlyOnce waits until the inbox of every region holds every record
// the policy allows it from logs (a snapshot of every region's log taken
// after the writes), then checks it holds each exactly once and nothing the
// policy forbids: read back against the logs as they are after the inbox
// was read, so that heartbeats appended meanwhile are accounted for. It
// returns the inbox contents by region.
func waitExactlyOnce(t testing.TB, c *cluster.Cluster, rj *regionJS, logs map[string][]record, timeout time.Duration) map[string][]record {
	t.Helper()
	ctx := testCtx(t, timeout+30*time.Second)
	inboxes := map[string][]record{}
	began := time.Now()
	for _, r := range allRegions {
		want := expectedInbox(c, logs, r)
		stream := region.InboxStream(r)
		eventually(t, timeout-time.Since(began), "inbox of "+r+" holds every allowed record", func() (bool, string) {
			n, err := rj.count(ctx, r, stream)
			if err != nil {
				return false, err.Error()
			}
			if n < uint64(len(want)) {
				return false, fmt.Sprintf("%s holds %d messages, %d records expected", stream, n, len(want))
			}
			msgs, err := rj.read(ctx, r, stream)
			if err != nil {
				return false, err.Error()
			}
			if k, sample := missingIDs(want, idCounts(msgs), 5); k > 0 {
				return false, fmt.Sprintf("%s misses %d of %d records, e.g. %v", stream, k, len(want), sample)
			}
			inboxes[r] = msgs
			return true, ""
		})
	}
	t.Logf("every inbox complete (waited %v)", time.Since(began).Round(time.Millisecond))

	after := readLogs(t, c)
	for _, r := range allRegions {
		allowed := expectedInbox(c, after, r)
		checkStream(t, c, r, region.InboxStream(r), inboxes[r], allowed)
	}
	return inboxes
}

// checkStream fails the test for every duplicate in a stream of region r,
// every record the policy forbids in r or that is not in allowed (the
// records of the logs that may be there), and every message whose subject
// or body does not match its record id.
func checkStream(t testing.TB, c *cluster.Cluster, r, stream string, msgs []record, allowed map[string]record) {
	t.Helper()
	seen := map[string]uint64{}
	bad := 0
	fail := func(format string, args ...any) {
		bad++
		if bad <= 10 {
			t.Errorf("%s/%s: "+format, append([]any{r, stream}, args...)...)
		}
	}
	for _, m := range msgs {
		if first, dup := seen[m.ID]; dup {
			fail("record %s twice (stream seq %d and %d)", m.ID, first, m.Seq)
			continue
		}
		seen[m.ID] = m.Seq
		want, ok := allowed[m.ID]
		switch {
		case m.Event == nil:
			fail("seq %d on %s is not an event", m.Seq, m.Subject)
		case !ok && !allowedIn(c, writer.SubjectZone(m.Event), r):
			fail("record %s (%s) is not allowed here: zone %s", m.ID, m.Subject, writer.SubjectZone(m.Event))
		case !ok:
			fail("record %s (%s) is in no log", m.ID, m.Subject)
		case m.Subject != want.Subject:
			fail("record %s on subject %s, want %s", m.ID, m.Subject, want.Subject)
		case writer.RecordID(m.Event) != m.ID:
			fail("message id %s but the event is record %s", m.ID, writer.RecordID(m.Event))
		}
	}
	if bad > 10 {
		t.Errorf("%s/%s: %d problems in all", r, stream, bad)
	}
}

// ---- files -------------------------------------------------------------

// fileSet is the content of every regular file under some roots.
type fileSet map[string][]byte

// readFiles reads every regular file under roots. Files that disappear
// while walking (Pebble recycles WALs) are skipped. Pebble SSTs compress
// their blocks, which can split a plaintext value the raw bytes hold:
// every SST is also read through Pebble's sstable reader, and the keys and
// values of all its point records are added as "<path>#decoded".
func readFiles(t testing.TB, roots ...string) fileSet {
	t.Helper()
	out := fileSet{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			out[path] = b
			if strings.HasSuffix(path, ".sst") {
				dec, err := sstRecords(path)
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("decode %s: %w", path, err)
				}
				out[path+"#decoded"] = dec
			}
			return nil
		})
		if err != nil {
			t.Fatalf("read files under %s: %v", root, err)
		}
	}
	return out
}

// sstRecords returns the keys and values of every point record of an SST
// (each version, not just the live ones), concatenated.
func sstRecords(path string) ([]byte, error) {
	f, err := vfs.Default.Open(path)
	if err != nil {
		return nil, err
	}
	readable, err := sstable.NewSimpleReadable(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	r, err := sstable.NewReader(context.Background(), readable, sstable.ReaderOptions{})
	if err != nil {
		readable.Close()
		return nil, err
	}
	defer r.Close()
	it, err := r.NewIter(sstable.NoTransforms, nil, nil, sstable.AssertNoBlobHandles)
	if err != nil {
		return nil, err
	}
	var out []byte
	for kv := it.First(); kv != nil; kv = it.Next() {
		v, _, err := kv.Value(nil)
		if err != nil {
			it.Close()
			return nil, err
		}
		out = append(append(append(out, kv.K.UserKey...), 0), v...)
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// find returns the files that contain needle, sorted.
func (fs fileSet) find(needle []byte) []string {
	var out []string
	for path, b := range fs {
		if bytes.Contains(b, needle) {
			out = append(out, path)
		}
	}
	sort.Strings(out)
	return out
}

// withSuffix returns the paths that end in suffix.
func (fs fileSet) withSuffix(suffix string) []string {
	var out []string
	for path := range fs {
		if strings.HasSuffix(path, suffix) {
			out = append(out, path)
		}
	}
	return out
}

// size is the total number of bytes.
func (fs fileSet) size() int {
	n := 0
	for _, b := range fs {
		n += len(b)
	}
	return n
}

// regionRoots are the directories holding a region's data: its JetStream
// store and its node's data dir (log, key store).
func regionRoots(t testing.TB, c *cluster.Cluster, r string) []string {
	t.Helper()
	srv := c.Embedded.Server(r)
	if srv == nil {
		t.Fatalf("NATS server of %s is not running", r)
	}
	return []string{srv.StoreDir(), c.NodeDir(r)}
}

// ---- concurrent writers ------------------------------------------------

// regionWriter appends to one region through its HTTP API, retrying each
// request with the same event ids until it is acknowledged: a retry after
// an ambiguous failure may append a record twice to the log, and the
// stream's duplicate window must fold it.
type regionWriter struct {
	region string
	cl     *client.Client

	mu struct {
		sync.Mutex
		acked    []string // acknowledged event ids
		requests int      // answered requests (acknowledged or refused)
		refused  int      // requests refused as writes to an erased identity
		failures int      // failed attempts (node down)
		lastErr  error
	}
}

func newRegionWriter(t testing.TB, c *cluster.Cluster, r string) *regionWriter {
	// One attempt per Append: the retry loop is in append, so that every
	// failure is counted.
	return &regionWriter{region: r, cl: newClient(t, c.Node(r).URL(), client.WithRetry(1, 10*time.Millisecond, 10*time.Millisecond))}
}

// append retries until the events are acknowledged or ctx ends.
func (w *regionWriter) append(ctx context.Context, events ...*meridianv1.Event) error {
	for {
		res, err := w.cl.Append(ctx, events...)
		if err == nil {
			w.mu.Lock()
			w.mu.acked = append(w.mu.acked, res.EventIDs...)
			w.mu.requests++
			w.mu.Unlock()
			return nil
		}
		var apiErr *client.APIError
		if errors.As(err, &apiErr) && apiErr.Code == writer.CodeErased {
			// The region already holds the identity's tombstone: a write
			// racing an erasure is refused, never applied. It is an answer,
			// not a failure; its events were not appended anywhere.
			w.mu.Lock()
			w.mu.refused++
			w.mu.requests++
			w.mu.Unlock()
			return nil
		}
		if errors.As(err, &apiErr) && !apiErr.Temporary() {
			return fmt.Errorf("%s: %w", w.region, err)
		}
		w.mu.Lock()
		w.mu.failures++
		w.mu.lastErr = err
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", w.region, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond): // retry backoff, not synchronisation
		}
	}
}

func (w *regionWriter) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.mu.acked)
}

func (w *regionWriter) requests() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.requests
}

func (w *regionWriter) ackedIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.mu.acked)
}

func (w *regionWriter) failures() (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.failures, w.mu.lastErr
}

// writers runs one regionWriter per region, each writing as many requests
// as it is granted (the k-th request of region r is next(r, k), called from
// r's writer goroutine only): the test decides exactly when writes happen
// relative to its faults, and how many there are.
type writers struct {
	c      *cluster.Cluster
	w      map[string]*regionWriter
	tokens map[string]chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error

	mu struct {
		sync.Mutex
		granted map[string]int
	}
}

func startWriters(t *testing.T, ctx context.Context, c *cluster.Cluster, next func(r string, k int) []*meridianv1.Event) *writers {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	ws := &writers{c: c, w: map[string]*regionWriter{}, tokens: map[string]chan struct{}{}, cancel: cancel, errs: make(chan error, len(allRegions))}
	ws.mu.granted = map[string]int{}
	for _, r := range allRegions {
		w := newRegionWriter(t, c, r)
		tok := make(chan struct{}, 10_000)
		ws.w[r], ws.tokens[r] = w, tok
		ws.wg.Add(1)
		go func() {
			defer ws.wg.Done()
			for k := 0; ; k++ {
				select {
				case <-ctx.Done():
					return
				case <-tok:
				}
				if err := w.append(ctx, next(r, k)...); err != nil {
					if ctx.Err() == nil {
						ws.errs <- err
					}
					return
				}
			}
		}()
	}
	t.Cleanup(func() { ws.cancel(); ws.wg.Wait() })
	return ws
}

// grant lets the writers of regions (default: all) send n more requests.
func (ws *writers) grant(n int, regions ...string) {
	if len(regions) == 0 {
		regions = allRegions
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, r := range regions {
		ws.mu.granted[r] += n
		for range n {
			ws.tokens[r] <- struct{}{}
		}
	}
}

func (ws *writers) granted(r string) int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.mu.granted[r]
}

// waitAcked waits until the writer of r has n requests acknowledged.
func (ws *writers) waitAcked(t *testing.T, r string, n int) {
	t.Helper()
	eventually(t, convergeTimeout, fmt.Sprintf("%d writes acknowledged by %s", n, r), func() (bool, string) {
		select {
		case err := <-ws.errs:
			t.Fatalf("writer: %v", err)
		default:
		}
		got := ws.w[r].requests()
		return got >= n, fmt.Sprintf("%d acknowledged", got)
	})
}

// drain waits until the writers of regions (default: all) have every
// granted request acknowledged.
func (ws *writers) drain(t *testing.T, regions ...string) {
	t.Helper()
	if len(regions) == 0 {
		regions = allRegions
	}
	for _, r := range regions {
		ws.waitAcked(t, r, ws.granted(r))
	}
}

// stop ends the writers and fails the test on a writer error.
func (ws *writers) stop(t *testing.T) {
	t.Helper()
	ws.cancel()
	ws.wg.Wait()
	select {
	case err := <-ws.errs:
		t.Fatalf("writer: %v", err)
	default:
	}
	n := 0
	for _, r := range allRegions {
		n += ws.w[r].ackedCount()
	}
	t.Logf("writers: %d events acknowledged", n)
}

func (ws *writers) all() []*regionWriter {
	var out []*regionWriter
	for _, r := range allRegions {
		out = append(out, ws.w[r])
	}
	return out
}

// checkAckedLogged fails the test for every acknowledged event that no log
// holds a record of: an acknowledged append is never lost.
func checkAckedLogged(t testing.TB, logs map[string][]record, writers []*regionWriter) {
	t.Helper()
	logged := map[string]bool{}
	for _, recs := range logs {
		for _, rec := range recs {
			logged[rec.Event.GetEventId()] = true
		}
	}
	for _, w := range writers {
		lost := 0
		for _, id := range w.ackedIDs() {
			if !logged[id] {
				lost++
				if lost <= 5 {
					t.Errorf("event %s acknowledged by %s is in no log", id, w.region)
				}
			}
		}
		if lost > 5 {
			t.Errorf("%d events acknowledged by %s are in no log", lost, w.region)
		}
	}
}

// workload makes the events one region writes: resident changes only for
// identities of its own zone, GLOBAL-only changes for everyone.
type workload struct {
	c      *cluster.Cluster
	idents map[string][]identity // by zone; read-only once writers run
}

type identity struct{ id, home string }

// next returns the k-th request's events (1 to 3) for region r: the same
// mix in every run. Safe for concurrent use.
func (wl *workload) next(r string, k int) []*meridianv1.Event {
	zone, _ := wl.c.Policy.ZoneOf(r)
	own := wl.idents[zone]
	var other []identity
	for z, ids := range wl.idents {
		if z != zone {
			other = append(other, ids...)
		}
	}
	sort.Slice(other, func(i, j int) bool { return other[i].id < other[j].id })
	pick := func(ids []identity) identity { return ids[k%len(ids)] }
	var out []*meridianv1.Event
	for i := 0; i <= k%3; i++ {
		switch (k + i) % 6 {
		case 0:
			id := pick(own)
			out = append(out, traitsUpdated(id.id, id.home, &meridianv1.Traits{Name: ptr(fmt.Sprintf("name %s %d", r, k)), Locale: ptr("en")}))
		case 1:
			id := pick(other)
			out = append(out, roleGranted(id.id, id.home, fmt.Sprintf("role-%d", k%5)))
		case 2:
			id := pick(own)
			out = append(out, sessionIssued(id.id, id.home, fmt.Sprintf("s-%s-%d", r, k), "device", "192.0.2.1"))
		case 3:
			id := pick(other)
			out = append(out, roleRevoked(id.id, id.home, fmt.Sprintf("role-%d", (k+2)%5)))
		case 4:
			id := pick(own)
			out = append(out, loginFailed(id.id, id.home))
		default:
			id := pick(other)
			out = append(out, sessionRevoked(id.id, id.home, fmt.Sprintf("s-x-%d", k)))
		}
	}
	return out
}

// createIdentities creates n identities homed in each region, each in its
// home region, and returns them by zone.
func createIdentities(t testing.TB, ctx context.Context, c *cluster.Cluster, n int) map[string][]identity {
	t.Helper()
	out := map[string][]identity{}
	for _, r := range allRegions {
		zone, _ := c.Policy.ZoneOf(r)
		cl := newClient(t, c.Node(r).URL())
		for range n {
			id := identity{id: newID(), home: r}
			mustAppend(t, ctx, cl, identityCreated(id.id, r, &meridianv1.Traits{
				Email: ptr("user-" + randHex(6) + "@example.test"), Locale: ptr("en"),
			}))
			out[zone] = append(out[zone], id)
		}
	}
	return out
}

// ---- partitions --------------------------------------------------------

// cutLink cuts region r's link to the hub and waits until r is isolated and
// its leaf remote has redialled once (and been blackholed). It reports
// whether the cut holds; if r reconnected to the hub around its link, the
// test gets an error naming the cause and the caller should skip the checks
// that need isolation.
func cutLink(t testing.TB, c *cluster.Cluster, r string) bool {
	t.Helper()
	link := c.Embedded.Link(r)
	link.Cut()
	others := len(allRegions) - 1
	eventually(t, convergeTimeout, r+" isolated", func() (bool, string) {
		own, hub := c.Embedded.Server(r).NumLeafNodes(), c.Embedded.Hub().NumLeafNodes()
		return own == 0 && hub == others, fmt.Sprintf("%s has %d leaf connections, the hub %d", r, own, hub)
	})
	eventually(t, convergeTimeout, r+" redials its cut link", func() (bool, string) {
		m, n := link.Metrics(), c.Embedded.Server(r).NumLeafNodes()
		return m.Blackholed > 0 || n > 0, fmt.Sprintf("link %+v, %d leaf connections", m, n)
	})
	if n := c.Embedded.Server(r).NumLeafNodes(); n > 0 {
		// region/embedded.go hubOptions: the hub advertises its leafnode
		// URL in INFO (LeafNodeOpts.NoAdvertise unset), the region's leaf
		// remote adds it to its URLs, and its first redial after the cut
		// goes to the hub directly, around the link proxy.
		t.Errorf("%s reconnected to the hub while its link is cut (link %+v, hub has %d leaf connections): "+
			"the leaf remote bypasses the link proxy through the hub's advertised leafnode URL; "+
			"region/embedded.go hubOptions must set LeafNode.NoAdvertise", r, link.Metrics(), c.Embedded.Hub().NumLeafNodes())
		return false
	}
	return true
}

// ---- reads -------------------------------------------------------------

// readResult is the answer of GET /v1/identities/{id}.
type readResult struct {
	Status   int
	Identity *meridianv1.Identity // on 200
	Body     []byte
	Header   http.Header
	Elapsed  time.Duration
	// Error fields on a non-200 answer.
	Code, HomeRegion string
}

// getIdentity reads an identity from a region's query API, with a
// consistency token and a wait bound when they are not empty.
func getIdentity(ctx context.Context, baseURL, id, token string, wait time.Duration) (readResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/v1/identities/"+id, nil)
	if err != nil {
		return readResult{}, err
	}
	if token != "" {
		req.Header.Set(client.TokenHeader, token)
	}
	if wait > 0 {
		req.Header.Set("Meridian-Wait", wait.String())
	}
	// The server answers by the wait bound; the client's own timeout only
	// keeps a hung server from hanging the test.
	hc := &http.Client{Timeout: wait + 10*time.Second}
	began := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return readResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return readResult{}, err
	}
	res := readResult{Status: resp.StatusCode, Body: b, Header: resp.Header, Elapsed: time.Since(began)}
	if resp.StatusCode == http.StatusOK {
		res.Identity = &meridianv1.Identity{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, res.Identity); err != nil {
			return res, fmt.Errorf("decode identity %s: %w (%s)", id, err, b)
		}
		return res, nil
	}
	var e struct {
		Error struct {
			Code       string `json:"code"`
			HomeRegion string `json:"home_region"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err == nil {
		res.Code, res.HomeRegion = e.Error.Code, e.Error.HomeRegion
	}
	return res, nil
}

// ---- read models -------------------------------------------------------

// waitApplied waits until every region has applied everything in logs: it
// reads probe in every region with a token per origin node naming that
// node's last sequence of each subject zone.
func waitApplied(t *testing.T, c *cluster.Cluster, logs map[string][]record, probe string) {
	t.Helper()
	ctx := testCtx(t, convergeTimeout+10*time.Second)
	var tokens []string
	for origin, recs := range logs {
		last := map[string]map[string]uint64{} // node → zone → seq
		for _, rec := range recs {
			n := rec.Event.GetOriginNode()
			if last[n] == nil {
				last[n] = map[string]uint64{}
			}
			last[n][rec.Zone()] = max(last[n][rec.Zone()], rec.Event.GetSequence())
		}
		for n, seqs := range last {
			tokens = append(tokens, writer.EncodeToken(&meridianv1.ConsistencyToken{OriginRegion: origin, OriginNode: n, Sequences: seqs}))
		}
	}
	began := time.Now()
	for _, r := range allRegions {
		for _, tok := range tokens {
			eventually(t, convergeTimeout-time.Since(began), r+" applied every origin", func() (bool, string) {
				res, err := getIdentity(ctx, c.Node(r).URL(), probe, tok, 2*time.Second)
				if err != nil {
					return false, err.Error()
				}
				return res.Status != http.StatusServiceUnavailable, fmt.Sprintf("%d %s", res.Status, res.Body)
			})
		}
	}
	t.Logf("every region applied everything (waited %v)", time.Since(began).Round(time.Millisecond))
}

// globalPart returns a copy of an identity without its RESIDENT fields, as
// the schema's (residency) options mark them.
func globalPart(in *meridianv1.Identity) *meridianv1.Identity {
	out := proto.CloneOf(in)
	stripResident(out.ProtoReflect())
	return out
}

func stripResident(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		res, _ := proto.GetExtension(fd.Options(), meridianv1.E_Residency).(meridianv1.Residency)
		switch {
		case res == meridianv1.Residency_RESIDENCY_RESIDENT:
			m.Clear(fd)
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				stripResident(v.List().Get(i).Message())
			}
		case fd.Message() != nil && !fd.IsMap():
			stripResident(v.Message())
		}
		return true
	})
}

// diff is "" when a and b are equal, else both in text form.
func diff(a, b *meridianv1.Identity) string {
	if proto.Equal(a, b) {
		return ""
	}
	o := prototext.MarshalOptions{Multiline: true}
	return fmt.Sprintf("--- first\n%s\n--- second\n%s", o.Format(a), o.Format(b))
}
