package eventlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// A tiny embedded JetStream server of our own: the region package's
// topology is more than these tests need.

const (
	shipTestStream  = "TEST"
	shipTestSubject = "meridian.test.ev"
)

type shipEnv struct {
	t        testing.TB
	srv      *server.Server
	port     int
	storeDir string
	nc       *nats.Conn
	js       jetstream.JetStream
}

func startShipServer(t testing.TB, port int, storeDir string) *server.Server {
	t.Helper()
	// Fresh options per start (the server keeps a pointer to them).
	srv, err := server.NewServer(&server.Options{
		ServerName: "ship-test",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready within 10s")
	}
	return srv
}

func newShipEnv(t testing.TB) *shipEnv {
	t.Helper()
	e := &shipEnv{t: t, storeDir: t.TempDir()}
	e.srv = startShipServer(t, -1, e.storeDir)
	e.port = e.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() {
		if e.srv != nil {
			e.srv.Shutdown()
			e.srv.WaitForShutdown()
		}
	})
	var err error
	e.nc, err = nats.Connect(e.url(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0),
		// The default handler prints expected disconnect errors to stderr.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	e.js, err = jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	e.createStream(shipTestStream, "meridian.test.>")
	return e
}

func (e *shipEnv) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", e.port) }

func (e *shipEnv) createStream(name, subjects string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       name,
		Subjects:   []string{subjects},
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	}); err != nil {
		e.t.Fatal(err)
	}
}

// restart stops the server and starts a new one on the same port and
// store directory.
func (e *shipEnv) shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.srv = nil
}

func (e *shipEnv) start() {
	e.srv = startShipServer(e.t, e.port, e.storeDir)
}

// streamMsgs is the stream's message count; it retries while the stream is
// briefly offline after a restart.
func (e *shipEnv) streamMsgs(ctx context.Context, name string) (uint64, error) {
	s, err := e.js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.Msgs, nil
}

// waitStreamMsgs polls the stream until it holds at least n messages.
func (e *shipEnv) waitStreamMsgs(name string, n uint64, within time.Duration) uint64 {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		got, err := e.streamMsgs(ctx, name)
		cancel()
		if err == nil && got >= n {
			return got
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("stream %s: %d messages (err %v) after %s, want >= %d", name, got, err, within, n)
		}
		pollPause()
	}
}

// pollPause spaces out polls of state that has no notification; it is not
// a synchronisation (every poll loop has a deadline).
func pollPause() { <-time.After(2 * time.Millisecond) }

type shipStored struct {
	ids     []string
	seqs    []uint64
	data    [][]byte
	subject []string
}

// readStream reads the whole stream in order with an ordered consumer.
func (e *shipEnv) readStream(name string) shipStored {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := e.streamMsgs(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	var out shipStored
	if n == 0 {
		return out
	}
	cons, err := e.js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	for uint64(len(out.ids)) < n {
		batch, err := cons.Fetch(int(min(1000, n-uint64(len(out.ids)))), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		for m := range batch.Messages() {
			h := m.Headers()
			seq, err := strconv.ParseUint(h.Get(SeqHeader), 10, 64)
			if err != nil {
				e.t.Fatalf("message %d: %s header: %v", len(out.ids), SeqHeader, err)
			}
			out.ids = append(out.ids, h.Get(jetstream.MsgIDHeader))
			out.seqs = append(out.seqs, seq)
			out.data = append(out.data, m.Data())
			out.subject = append(out.subject, m.Subject())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			e.t.Fatal(err)
		}
		if ctx.Err() != nil {
			e.t.Fatalf("read %d of %d messages: %v", len(out.ids), n, ctx.Err())
		}
	}
	return out
}

// Test records are "id-<seq-ish>|payload"; the route takes the id from the
// bytes, like the writer's RecordID does from an event.
func shipRoute(rec Record) (string, string, error) {
	id, _, ok := bytes.Cut(rec.Data, []byte("|"))
	if !ok {
		return "", "", errors.New("no '|' separator")
	}
	return shipTestSubject, string(id), nil
}

func shipRec(i int) []byte { return fmt.Appendf(nil, "id-%07d|payload of record %d", i, i) }

// appendShipRecs appends records first..first+n-1 (by shipRec index) in
// batches and returns the log's LastSeq.
func appendShipRecs(t testing.TB, l *Log, first, n int) uint64 {
	t.Helper()
	for i := 0; i < n; {
		k := min(500, n-i)
		recs := make([][]byte, k)
		for j := range recs {
			recs[j] = shipRec(first + i + j)
		}
		if _, err := l.Append(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
		i += k
	}
	return l.LastSeq()
}

func openShipLog(t testing.TB, dir string) *Log {
	t.Helper()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func (e *shipEnv) shipperConfig(l *Log) ShipperConfig {
	return ShipperConfig{
		Log:        l,
		JS:         e.js,
		Stream:     shipTestStream,
		Route:      shipRoute,
		BackoffMin: 5 * time.Millisecond,
		BackoffMax: 100 * time.Millisecond,
	}
}

func newTestShipper(t testing.TB, cfg ShipperConfig) *Shipper {
	t.Helper()
	s, err := NewShipper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func waitShipped(t testing.TB, s *Shipper, seq uint64, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := s.WaitShipped(ctx, seq); err != nil {
		t.Fatalf("wait shipped %d: %v (metrics %+v)", seq, err, s.Metrics())
	}
}

// checkExactlyOnce checks that the stream holds the log's records 1..last,
// each exactly once, with matching ids and payloads; inOrder also requires
// the stream order to be the log order.
func checkExactlyOnce(t testing.TB, e *shipEnv, last uint64, inOrder bool) shipStored {
	t.Helper()
	got := e.readStream(shipTestStream)
	if uint64(len(got.ids)) != last {
		t.Fatalf("stream holds %d messages, log holds %d records", len(got.ids), last)
	}
	seen := make(map[string]bool, len(got.ids))
	bySeq := make(map[uint64]bool, len(got.ids))
	for i, id := range got.ids {
		if seen[id] {
			t.Fatalf("message id %q stored twice", id)
		}
		seen[id] = true
		seq := got.seqs[i]
		if bySeq[seq] {
			t.Fatalf("seq %d stored twice", seq)
		}
		bySeq[seq] = true
		if want := shipRec(int(seq)); !bytes.Equal(got.data[i], want) {
			t.Fatalf("seq %d: data %q, want %q", seq, got.data[i], want)
		}
		if want := fmt.Sprintf("id-%07d", seq); id != want {
			t.Fatalf("seq %d: message id %q, want %q", seq, id, want)
		}
		if got.subject[i] != shipTestSubject {
			t.Fatalf("seq %d: subject %q", seq, got.subject[i])
		}
		if inOrder && seq != uint64(i+1) {
			t.Fatalf("stream message %d carries seq %d: out of order", i+1, seq)
		}
	}
	return got
}

func TestShipperShipsEverythingInOrderOnce(t *testing.T) {
	e := newShipEnv(t)
	l := openShipLog(t, t.TempDir())
	appendShipRecs(t, l, 1, 2000)
	s := newTestShipper(t, e.shipperConfig(l))
	if m := s.Metrics(); m.Backlog != 2000 || m.Shipped != 0 {
		t.Fatalf("before start: %+v", m)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrShipperRunning) {
		t.Fatalf("second Start: %v, want ErrShipperRunning", err)
	}
	// Appends while it runs reach it through the tail.
	last := appendShipRecs(t, l, 2001, 1000)
	waitShipped(t, s, last, 30*time.Second)
	// Caught up, it persists its checkpoint within CheckpointInterval.
	deadline := time.Now().Add(10 * time.Second)
	for cp, _ := l.Checkpoint(DefaultShipperCheckpoint); cp != last; cp, _ = l.Checkpoint(DefaultShipperCheckpoint) {
		if time.Now().After(deadline) {
			t.Fatalf("idle shipper's checkpoint %d, want %d", cp, last)
		}
		pollPause()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrShipperClosed) {
		t.Fatalf("second Close: %v", err)
	}
	checkExactlyOnce(t, e, last, true)
	m := s.Metrics()
	if m.Published != last || m.Acked != last || m.Duplicates != 0 || m.PublishErrs != 0 ||
		m.Shipped != last || m.Persisted != last || m.Backlog != 0 || m.InFlight != 0 || m.Running {
		t.Fatalf("metrics %+v", m)
	}
	if cp, _ := l.Checkpoint(DefaultShipperCheckpoint); cp != last {
		t.Fatalf("checkpoint %d, want %d", cp, last)
	}
}

func TestShipperResumesAtCheckpoint(t *testing.T) {
	e := newShipEnv(t)
	dir := t.TempDir()
	l := openShipLog(t, dir)
	last := appendShipRecs(t, l, 1, 1000)
	s1 := newTestShipper(t, e.shipperConfig(l))
	if err := s1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitShipped(t, s1, last, 30*time.Second)
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen: the checkpoint is durable.
	l = openShipLog(t, dir)
	if cp, _ := l.Checkpoint(DefaultShipperCheckpoint); cp != last {
		t.Fatalf("checkpoint after reopen %d, want %d", cp, last)
	}
	last = appendShipRecs(t, l, 1001, 500)
	s2 := newTestShipper(t, e.shipperConfig(l))
	if m := s2.Metrics(); m.Shipped != 1000 || m.Backlog != 500 {
		t.Fatalf("restarted shipper metrics %+v", m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s2.Run(ctx) }()
	waitShipped(t, s2, last, 30*time.Second)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	// A clean stop persisted everything, so nothing was re-sent.
	if m := s2.Metrics(); m.Published != 500 || m.Duplicates != 0 || m.Persisted != last {
		t.Fatalf("metrics %+v", m)
	}
	checkExactlyOnce(t, e, last, true)
}

func TestShipperWindowAndBacklog(t *testing.T) {
	for _, tc := range []struct{ window, batch int }{{1, 1}, {8, 3}, {64, 512}} {
		t.Run(fmt.Sprintf("window=%d,batch=%d", tc.window, tc.batch), func(t *testing.T) {
			e := newShipEnv(t)
			l := openShipLog(t, t.TempDir())
			last := appendShipRecs(t, l, 1, 600)
			cfg := e.shipperConfig(l)
			cfg.Window, cfg.BatchRead = tc.window, tc.batch
			s := newTestShipper(t, cfg)
			if m := s.Metrics(); m.Backlog != last || m.LastSeq != last {
				t.Fatalf("backlog before start: %+v", m)
			}
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			waitShipped(t, s, last, 30*time.Second)
			m := s.Metrics()
			if m.MaxInFlight < 1 || m.MaxInFlight > tc.window {
				t.Fatalf("max in flight %d, window %d", m.MaxInFlight, tc.window)
			}
			if m.Backlog != 0 {
				t.Fatalf("backlog after shipping: %+v", m)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			checkExactlyOnce(t, e, last, true)
		})
	}
}

// A sequence floor leaves a gap; the shipper crosses it (after draining
// its window) and its checkpoint ends at the last record.
func TestShipperCrossesSequenceGap(t *testing.T) {
	e := newShipEnv(t)
	l := openShipLog(t, t.TempDir())
	appendShipRecs(t, l, 1, 300)
	if err := l.SetSequenceFloor(5000); err != nil {
		t.Fatal(err)
	}
	last := appendShipRecs(t, l, 5001, 300)
	if last != 5300 {
		t.Fatalf("last %d", last)
	}
	cfg := e.shipperConfig(l)
	cfg.Window, cfg.BatchRead = 64, 50
	s := newTestShipper(t, cfg)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitShipped(t, s, last, 30*time.Second)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got := e.readStream(shipTestStream)
	if len(got.seqs) != 600 {
		t.Fatalf("stream holds %d messages, want 600", len(got.seqs))
	}
	for i, seq := range got.seqs {
		want := uint64(i + 1)
		if i >= 300 {
			want = uint64(5001 + i - 300)
		}
		if seq != want || got.ids[i] != fmt.Sprintf("id-%07d", want) {
			t.Fatalf("message %d: seq %d id %q, want seq %d", i, seq, got.ids[i], want)
		}
	}
	if m := s.Metrics(); m.Persisted != last || m.MaxInFlight > 64 {
		t.Fatalf("metrics %+v", m)
	}
}

func TestShipperRouteErrorStops(t *testing.T) {
	for _, tc := range []struct {
		name  string
		route func(Record) (string, string, error)
	}{
		{"route error", shipRoute},
		{"empty subject", func(r Record) (string, string, error) {
			if bytes.HasPrefix(r.Data, []byte("bad")) {
				return "", "x", nil
			}
			return shipRoute(r)
		}},
		{"wildcard subject", func(r Record) (string, string, error) {
			if bytes.HasPrefix(r.Data, []byte("bad")) {
				return "meridian.test.>", "x", nil
			}
			return shipRoute(r)
		}},
		{"empty id", func(r Record) (string, string, error) {
			if bytes.HasPrefix(r.Data, []byte("bad")) {
				return shipTestSubject, "", nil
			}
			return shipRoute(r)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newShipEnv(t)
			l := openShipLog(t, t.TempDir())
			appendShipRecs(t, l, 1, 99)
			if _, err := l.Append(context.Background(), []byte("bad record without separator")); err != nil {
				t.Fatal(err)
			}
			appendShipRecs(t, l, 101, 20)
			cfg := e.shipperConfig(l)
			cfg.Route = tc.route
			s := newTestShipper(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := s.Run(ctx)
			var re *RouteError
			if !errors.As(err, &re) || re.Seq != 100 || !errors.Is(err, ErrUnroutable) {
				t.Fatalf("Run: %v, want *RouteError at seq 100", err)
			}
			if !strings.Contains(err.Error(), "seq 100") {
				t.Fatalf("error does not name the seq: %v", err)
			}
			if cp, _ := l.Checkpoint(DefaultShipperCheckpoint); cp != 99 {
				t.Fatalf("checkpoint %d, want 99", cp)
			}
			if m := s.Metrics(); m.Shipped != 99 || m.Persisted != 99 || !errors.Is(m.LastError, ErrUnroutable) {
				t.Fatalf("metrics %+v", m)
			}
			if err := s.WaitShipped(ctx, 100); !errors.As(err, &re) {
				t.Fatalf("WaitShipped past the bad record: %v", err)
			}
			checkExactlyOnce(t, e, 99, true)
			// It stays stopped at the same record on the next run.
			if err := s.Run(ctx); !errors.As(err, &re) || re.Seq != 100 {
				t.Fatalf("second Run: %v", err)
			}
		})
	}
}

func TestShipperRouteErrorViaStart(t *testing.T) {
	e := newShipEnv(t)
	l := openShipLog(t, t.TempDir())
	appendShipRecs(t, l, 1, 10)
	if _, err := l.Append(context.Background(), []byte("bad")); err != nil {
		t.Fatal(err)
	}
	s := newTestShipper(t, e.shipperConfig(l))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("shipper did not stop on the route error within 30s")
	}
	var re *RouteError
	if err := s.Err(); !errors.As(err, &re) || re.Seq != 11 {
		t.Fatalf("Err: %v", err)
	}
	if err := s.Close(); !errors.As(err, &re) {
		t.Fatalf("Close: %v", err)
	}
}

func TestShipperWrongStreamStops(t *testing.T) {
	e := newShipEnv(t)
	e.createStream("OTHER", "meridian.other.>")
	l := openShipLog(t, t.TempDir())
	appendShipRecs(t, l, 1, 50)
	cfg := e.shipperConfig(l)
	cfg.Route = func(r Record) (string, string, error) {
		subj, id, err := shipRoute(r)
		if r.Seq == 30 {
			subj = "meridian.other.ev"
		}
		return subj, id, err
	}
	s := newTestShipper(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.Run(ctx)
	var we *WrongStreamError
	if !errors.As(err, &we) || we.Seq != 30 || we.Got != "OTHER" || we.Want != shipTestStream || !errors.Is(err, ErrWrongStream) {
		t.Fatalf("Run: %v, want *WrongStreamError at 30", err)
	}
	if cp, _ := l.Checkpoint(DefaultShipperCheckpoint); cp != 29 {
		t.Fatalf("checkpoint %d, want 29", cp)
	}
}

func TestShipperTrimmedLogStops(t *testing.T) {
	e := newShipEnv(t)
	l := openShipLog(t, t.TempDir())
	appendShipRecs(t, l, 1, 50)
	if err := l.Trim(21); err != nil {
		t.Fatal(err)
	}
	s := newTestShipper(t, e.shipperConfig(l))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("Run: %v, want ErrTrimmed", err)
	}
	if n, _ := e.streamMsgs(ctx, shipTestStream); n != 0 {
		t.Fatalf("stream holds %d messages", n)
	}
}

// A stream that does not exist yet: publishes fail (no responders), the
// shipper backs off and retries, and finishes once the stream exists.
func TestShipperWaitsForMissingStream(t *testing.T) {
	e := newShipEnv(t)
	l := openShipLog(t, t.TempDir())
	last := appendShipRecs(t, l, 1, 300)
	cfg := e.shipperConfig(l)
	cfg.Stream = "LATE"
	cfg.Route = func(r Record) (string, string, error) {
		_, id, err := shipRoute(r)
		return "meridian.late.ev", id, err
	}
	s := newTestShipper(t, cfg)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Metrics().Backoffs < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no backoff within 30s: %+v", s.Metrics())
		}
		pollPause()
	}
	e.createStream("LATE", "meridian.late.>")
	waitShipped(t, s, last, 30*time.Second)
	m := s.Metrics()
	if m.PublishErrs == 0 || m.LastError == nil {
		t.Fatalf("metrics %+v", m)
	}
	if n := e.waitStreamMsgs("LATE", last, 10*time.Second); n != last {
		t.Fatalf("stream holds %d, want %d", n, last)
	}
}

// A plain subscriber that never answers: publishes are delivered but never
// acknowledged. The shipper gives the window up after AckTimeout, backs off
// and re-sends, and finishes once a stream captures the subject.
func TestShipperAckTimeout(t *testing.T) {
	e := newShipEnv(t)
	sub, err := e.nc.Subscribe("meridian.sink.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	l := openShipLog(t, t.TempDir())
	last := appendShipRecs(t, l, 1, 200)
	cfg := e.shipperConfig(l)
	cfg.Stream = "SINK"
	cfg.AckTimeout = 100 * time.Millisecond
	cfg.Route = func(r Record) (string, string, error) {
		_, id, err := shipRoute(r)
		return "meridian.sink.ev", id, err
	}
	s := newTestShipper(t, cfg)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Metrics().AckTimeouts < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no ack timeout within 30s: %+v", s.Metrics())
		}
		pollPause()
	}
	if m := s.Metrics(); m.Shipped != 0 || !errors.Is(m.LastError, ErrAckTimeout) {
		t.Fatalf("metrics %+v", m)
	}
	e.createStream("SINK", "meridian.sink.>")
	waitShipped(t, s, last, 30*time.Second)
	if n := e.waitStreamMsgs("SINK", last, 10*time.Second); n != last {
		t.Fatalf("stream holds %d, want %d", n, last)
	}
}

// A closed connection never comes back: a hard stop, not endless retries.
func TestShipperStopsOnClosedConnection(t *testing.T) {
	e := newShipEnv(t)
	nc, err := nats.Connect(e.url())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	l := openShipLog(t, t.TempDir())
	last := appendShipRecs(t, l, 1, 100)
	cfg := e.shipperConfig(l)
	cfg.JS = js
	s := newTestShipper(t, cfg)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitShipped(t, s, last, 30*time.Second)
	nc.Close()
	appendShipRecs(t, l, 101, 10)
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("shipper still running 30s after its connection closed: %+v", s.Metrics())
	}
	if err := s.Err(); !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("Err: %v, want nats.ErrConnectionClosed", err)
	}
	if cp, _ := l.Checkpoint(DefaultShipperCheckpoint); cp != last {
		t.Fatalf("checkpoint %d, want %d", cp, last)
	}
}

func TestShipperSurvivesNATSRestart(t *testing.T) {
	e := newShipEnv(t)
	l := openShipLog(t, t.TempDir())
	appendShipRecs(t, l, 1, 5000)
	cfg := e.shipperConfig(l)
	cfg.AckTimeout = 2 * time.Second
	s := newTestShipper(t, cfg)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitStreamMsgs(shipTestStream, 500, 30*time.Second)
	e.shutdown()
	// The log keeps taking writes while NATS is down.
	last := appendShipRecs(t, l, 5001, 2000)
	deadline := time.Now().Add(30 * time.Second)
	for s.Metrics().Backoffs < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("shipper did not notice the outage within 30s: %+v", s.Metrics())
		}
		pollPause()
	}
	if m := s.Metrics(); m.Shipped >= last {
		t.Fatalf("shipped everything while the server was down: %+v", m)
	}
	e.start()
	waitShipped(t, s, last, 60*time.Second)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	m := s.Metrics()
	if m.PublishErrs == 0 || m.Backoffs == 0 || m.Persisted != last {
		t.Fatalf("metrics %+v", m)
	}
	t.Logf("after restart: %+v", m)
	checkExactlyOnce(t, e, last, false)
}

// Crash: a child process (this test binary) ships and is killed with
// SIGKILL mid-stream; a new shipper in this process finishes the job. The
// stream ends with each record exactly once: the restart re-sends from the
// durable checkpoint and JetStream drops the repeats by message id.
const (
	shipChildDirEnv  = "MERIDIAN_SHIP_CHILD_DIR"
	shipChildURLEnv  = "MERIDIAN_SHIP_CHILD_URL"
	shipChildModeEnv = "MERIDIAN_SHIP_CHILD_MODE"
	shipChildTotal   = 8000
)

func TestShipperCrashRestart(t *testing.T) {
	for _, mode := range []string{
		"prefilled", // everything appended first, checkpoint never persisted before the kill
		"appending", // the child appends while shipping, checkpoints every 2ms
	} {
		t.Run(mode, func(t *testing.T) {
			e := newShipEnv(t)
			dir := filepath.Join(t.TempDir(), "log")
			var out bytes.Buffer
			cmd := exec.Command(os.Args[0], "-test.run=^TestShipperCrashChild$", "-test.v")
			cmd.Env = append(os.Environ(), shipChildDirEnv+"="+dir, shipChildURLEnv+"="+e.url(), shipChildModeEnv+"="+mode)
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			killed := false
			t.Cleanup(func() {
				if !killed {
					_ = cmd.Process.Kill()
					<-exited
				}
			})
			// Kill once a good part, but not all, has been stored.
			var atKill uint64
			deadline := time.Now().Add(60 * time.Second)
			for atKill < 2000 {
				select {
				case err := <-exited:
					killed = true
					t.Fatalf("child exited before the kill (%v):\n%s", err, out.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("stream holds %d messages after 60s, want >= 2000", atKill)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				atKill, _ = e.streamMsgs(ctx, shipTestStream)
				cancel()
				pollPause()
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
				killed = true
			case <-time.After(30 * time.Second):
				t.Fatal("child not reaped within 30s of SIGKILL")
			}
			if atKill >= shipChildTotal {
				t.Fatalf("child shipped everything (%d) before the kill", atKill)
			}

			l := openShipLog(t, dir)
			last := l.LastSeq()
			cp, err := l.Checkpoint(DefaultShipperCheckpoint)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("killed with %d stored, log last %d, durable checkpoint %d", atKill, last, cp)
			if mode == "prefilled" && cp != 0 {
				t.Fatalf("prefilled: checkpoint %d persisted before the kill", cp)
			}
			if cp > last {
				t.Fatalf("checkpoint %d beyond the log's last record %d", cp, last)
			}
			s := newTestShipper(t, e.shipperConfig(l))
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			waitShipped(t, s, last, 60*time.Second)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			m := s.Metrics()
			t.Logf("restarted shipper: %+v", m)
			if m.Published != last-cp {
				t.Fatalf("restart published %d, want %d (from checkpoint %d)", m.Published, last-cp, cp)
			}
			if cp < atKill && m.Duplicates < atKill-cp {
				// Everything stored at the kill above the checkpoint was
				// sent again and dropped as a duplicate.
				t.Fatalf("duplicates %d < %d stored above checkpoint %d at the kill", m.Duplicates, atKill-cp, cp)
			}
			checkExactlyOnce(t, e, last, false)
		})
	}
}

// TestShipperCrashChild is the child of TestShipperCrashRestart; it only
// runs when that test starts it, and ships until it is killed.
func TestShipperCrashChild(t *testing.T) {
	dir := os.Getenv(shipChildDirEnv)
	if dir == "" {
		t.Skip("helper process for TestShipperCrashRestart")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(os.Getenv(shipChildURLEnv))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ShipperConfig{Log: l, JS: js, Stream: shipTestStream, Route: shipRoute, Window: 256}
	mode := os.Getenv(shipChildModeEnv)
	if mode == "prefilled" {
		appendShipRecs(t, l, 1, shipChildTotal)
		cfg.CheckpointInterval = time.Hour
	} else {
		cfg.CheckpointInterval = 2 * time.Millisecond
	}
	s, err := NewShipper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if mode == "appending" {
		for i := 1; i <= shipChildTotal; i += 50 {
			last := appendShipRecs(t, l, i, 50)
			// Stay a little ahead of the shipper so the kill lands mid-stream.
			if last > 500 {
				if err := s.WaitShipped(ctx, last-500); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	<-ctx.Done() // killed long before
	t.Fatal("child was not killed")
}

func TestShipperCheckRoute(t *testing.T) {
	for _, tc := range []struct {
		subject, id string
		ok          bool
	}{
		{"meridian.us-east.global.identity_created", "0190f0e2-7b1c-7c00-8000-000000000001:g", true},
		{"meridian.eu-west.eu.key.abc", "k1:k", true},
		{"a.b*c.d", "x", true}, // '*' inside a token is not a wildcard
		{"", "x", false},
		{"a..b", "x", false},
		{".a", "x", false},
		{"a.", "x", false},
		{"a.*.b", "x", false},
		{"a.>", "x", false},
		{">", "x", false},
		{"a b", "x", false},
		{"a.b", "", false},
		{"a.b", "x\r\nNats-Expected-Stream: other", false},
	} {
		err := checkRoute(tc.subject, tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("checkRoute(%q, %q) = %v, want ok=%v", tc.subject, tc.id, err, tc.ok)
		}
	}
}

func TestShipperConfigValidation(t *testing.T) {
	e := newShipEnv(t)
	l := openShipLog(t, t.TempDir())
	good := e.shipperConfig(l)
	for _, tc := range []struct {
		field string
		edit  func(*ShipperConfig)
	}{
		{"ShipperConfig.Log", func(c *ShipperConfig) { c.Log = nil }},
		{"ShipperConfig.JS", func(c *ShipperConfig) { c.JS = nil }},
		{"ShipperConfig.Stream", func(c *ShipperConfig) { c.Stream = "" }},
		{"ShipperConfig.Route", func(c *ShipperConfig) { c.Route = nil }},
		{"ShipperConfig.Window", func(c *ShipperConfig) { c.Window = -1 }},
		{"ShipperConfig.Window", func(c *ShipperConfig) { c.Window = MaxShipperWindow + 1 }},
		{"ShipperConfig.BatchRead", func(c *ShipperConfig) { c.BatchRead = -5 }},
		{"ShipperConfig.AckTimeout", func(c *ShipperConfig) { c.AckTimeout = -time.Second }},
		{"ShipperConfig.CheckpointInterval", func(c *ShipperConfig) { c.CheckpointInterval = -1 }},
		{"ShipperConfig.BackoffMax", func(c *ShipperConfig) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond }},
		{"ShipperConfig.DrainTimeout", func(c *ShipperConfig) { c.DrainTimeout = -1 }},
		{"ShipperConfig.Checkpoint", func(c *ShipperConfig) { c.Checkpoint = strings.Repeat("x", maxCheckpointName+1) }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			_, err := NewShipper(cfg)
			var ae *ArgError
			if !errors.As(err, &ae) || ae.Field != tc.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("NewShipper: %v, want *ArgError for %s", err, tc.field)
			}
		})
	}
	if _, err := NewShipper(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
}

// Benchmarks: the shipper beside its ceiling, raw async publishes with a
// message id, on the same kind of server and 256-byte payloads. One op is
// one record (message), so -benchtime=100000x ships 100k records; compare
// records/s with msgs/s, or run BenchmarkShipVsRaw, which does both on one
// server and reports the ratio:
//
//	go test -run '^$' -bench 'ShipVsRaw' -benchtime 100000x -count 5 ./eventlog/

const shipBenchIDLen = 24

// shipBenchRecords appends n records: a fixed-width id, then payload bytes,
// 256 bytes in all.
func shipBenchRecords(tb testing.TB, l *Log, n int) {
	tb.Helper()
	payload := benchPayload(benchPayloadBytes - shipBenchIDLen)
	for i := 0; i < n; {
		k := min(4000, n-i)
		recs := make([][]byte, k)
		for j := range recs {
			r := make([]byte, 0, benchPayloadBytes)
			r = fmt.Appendf(r, "%0*d", shipBenchIDLen, i+j)
			recs[j] = append(r, payload...)
		}
		if _, err := l.Append(context.Background(), recs...); err != nil {
			tb.Fatal(err)
		}
		i += k
	}
}

func newShipBenchEnv(b *testing.B) *shipEnv {
	e := newShipEnv(b)
	e.createStream("BENCH", "meridian.bench.>")
	return e
}

// resetBenchStream gives each measurement an empty stream: the server's
// duplicate-window state grows with every id seen within the window, and
// the garbage collector scans it, so a second run into the same stream is
// measurably slower than the first.
func (e *shipEnv) resetBenchStream(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.js.DeleteStream(ctx, "BENCH"); err != nil {
		b.Fatal(err)
	}
	e.createStream("BENCH", "meridian.bench.>")
	runtime.GC()
}

// shipBench ships the b.N records of a freshly filled log into an empty
// BENCH.
func shipBench(b *testing.B, e *shipEnv) ShipBenchResult {
	l := openShipLog(b, b.TempDir())
	shipBenchRecords(b, l, b.N)
	e.resetBenchStream(b)
	window, _ := strconv.Atoi(os.Getenv("SHIP_BENCH_WINDOW"))
	batch, _ := strconv.Atoi(os.Getenv("SHIP_BENCH_BATCH"))
	prefix := nuid.Next() + "-" // ids new to the stream
	b.ResetTimer()
	res, err := BenchShip(context.Background(), ShipperConfig{
		Log: l, JS: e.js, Stream: "BENCH", Window: window, BatchRead: batch,
		Route: func(r Record) (string, string, error) {
			return "meridian.bench.ev", prefix + string(r.Data[:shipBenchIDLen]), nil
		},
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Records != b.N || res.Metrics.Duplicates != 0 {
		b.Fatalf("shipped %d records (%d duplicates), want %d", res.Records, res.Metrics.Duplicates, b.N)
	}
	return res
}

func BenchmarkShip(b *testing.B) {
	e := newShipBenchEnv(b)
	res := shipBench(b, e)
	b.ReportMetric(res.PerSec, "records/s")
}

func BenchmarkRawJSPublishMsgID(b *testing.B) {
	e := newShipBenchEnv(b)
	b.ResetTimer()
	perSec, err := BenchRawJSPublishMsgID(context.Background(), e.js, "meridian.bench.ev", b.N, benchPayloadBytes)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(perSec, "msgs/s")
}

// BenchmarkShipVsRaw measures both on one server, each into an empty
// stream, and reports the ratio ship/raw (the target is >= 0.9) and the
// process CPU time per record of each (client and server together), which
// is less sensitive than the rates to other load on a shared machine.
func BenchmarkShipVsRaw(b *testing.B) {
	e := newShipBenchEnv(b)
	l := openShipLog(b, b.TempDir())
	shipBenchRecords(b, l, b.N)
	window, _ := strconv.Atoi(os.Getenv("SHIP_BENCH_WINDOW"))
	batch, _ := strconv.Atoi(os.Getenv("SHIP_BENCH_BATCH"))

	e.resetBenchStream(b)
	cpu0 := processCPU()
	raw, err := BenchRawJSPublishMsgID(context.Background(), e.js, "meridian.bench.ev", b.N, benchPayloadBytes)
	if err != nil {
		b.Fatal(err)
	}
	rawCPU := processCPU() - cpu0

	e.resetBenchStream(b)
	prefix := nuid.Next() + "-"
	b.ResetTimer()
	cpu0 = processCPU()
	res, err := BenchShip(context.Background(), ShipperConfig{
		Log: l, JS: e.js, Stream: "BENCH", Window: window, BatchRead: batch,
		Route: func(r Record) (string, string, error) {
			return "meridian.bench.ev", prefix + string(r.Data[:shipBenchIDLen]), nil
		},
	})
	shipCPU := processCPU() - cpu0
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Records != b.N {
		b.Fatalf("shipped %d, want %d", res.Records, b.N)
	}
	b.ReportMetric(res.PerSec, "ship/s")
	b.ReportMetric(raw, "raw/s")
	b.ReportMetric(res.PerSec/raw, "ratio")
	b.ReportMetric(float64(shipCPU.Microseconds())/float64(b.N), "ship-cpu-us/rec")
	b.ReportMetric(float64(rawCPU.Microseconds())/float64(b.N), "raw-cpu-us/rec")
}

// processCPU is the user+system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
