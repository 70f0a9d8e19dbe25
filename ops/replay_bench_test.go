package ops

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/projector"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/writer"
)

// BenchmarkReplay measures ops.Replay (rebuild, no verification) of an
// inbox filled with real records (written by the writer, sealed, shipped
// by the shipper) next to a raw ordered consume of the same stream, in the
// same run. MERIDIAN_REPLAY_EVENTS sets the number of events (default
// 100000; each is a GLOBAL and a sealed RESIDENT record, plus one data-key
// record per identity; MERIDIAN_REPLAY_IDENTITIES sets how many identities,
// default a tenth of the events; MERIDIAN_REPLAY_BATCH the batch size,
// MERIDIAN_REPLAY_CACHE the state cache's entries). MERIDIAN_REPLAY_INBOX
// names a directory to keep the filled inbox in and reuse on later runs
// (of the same MERIDIAN_REPLAY_EVENTS and identities), so that runs compare
// on the same stream without filling it again; MERIDIAN_REPLAY_CPUPROFILE
// writes a CPU profile of the measured replays alone, without the filling.
// Run it once:
//
//	go test -run XXX -bench Replay -benchtime 1x ./ops/
func BenchmarkReplay(b *testing.B) {
	events := 100_000
	if v, err := strconv.Atoi(os.Getenv("MERIDIAN_REPLAY_EVENTS")); err == nil && v > 0 {
		events = v
	}
	ctx := context.Background()
	dir := b.TempDir()
	inboxDir := dir
	if v := os.Getenv("MERIDIAN_REPLAY_INBOX"); v != "" {
		inboxDir = v
	}
	js, zk := benchInbox(b, ctx, inboxDir, events)
	s, err := js.Stream(ctx, "inbox-"+region.DevEUCentral)
	if err != nil {
		b.Fatal(err)
	}
	msgs := s.CachedInfo().State.Msgs
	batch, _ := strconv.Atoi(os.Getenv("MERIDIAN_REPLAY_BATCH"))
	cache, _ := strconv.Atoi(os.Getenv("MERIDIAN_REPLAY_CACHE"))
	if os.Getenv("GOGC") == "" {
		// As `meridian replay` runs (cmd/meridian/replay.go).
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	if os.Getenv("MERIDIAN_REPLAY_COMPARE") != "" {
		// The settings before the tuning (the live projector's batch and
		// caches, the default GC target), on the same inbox, first.
		old := debug.SetGCPercent(100)
		rep, err := Replay(ctx, ReplayConfig{Region: region.DevEUCentral, Zone: "eu", JS: js, ZoneKeys: zk,
			Workspace: filepath.Join(dir, "ws-before"), NoVerify: true, CompareRaw: true, BatchSize: 2048, CacheEntries: 1 << 16})
		debug.SetGCPercent(old)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("before (batch 2048, caches 65536, GOGC 100): %d messages in %v: %.0f msgs/s, raw consume %.0f msgs/s, ratio %.3f, %.2f s per 1M events",
			rep.Stats.Messages, rep.Stats.Duration, rep.Stats.PerSec, rep.RawConsumePerSec, rep.Stats.PerSec/rep.RawConsumePerSec, rep.Stats.Duration.Seconds()*1e6/float64(events))
	}
	if path := os.Getenv("MERIDIAN_REPLAY_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	b.ResetTimer()
	for i := range b.N {
		// The process's CPU time (the embedded server's included) as well
		// as the rates: on a shared machine it varies less than they do.
		cpu0 := processCPU()
		rep, err := Replay(ctx, ReplayConfig{Region: region.DevEUCentral, Zone: "eu", JS: js, ZoneKeys: zk,
			Workspace: filepath.Join(dir, fmt.Sprintf("ws-%d", i)), NoVerify: true, BatchSize: batch, CacheEntries: cache})
		if err != nil {
			b.Fatal(err)
		}
		cpu1 := processCPU()
		if rep.RawConsumePerSec, err = projector.BenchRawConsume(ctx, js, "inbox-"+region.DevEUCentral); err != nil {
			b.Fatal(err)
		}
		cpu2 := processCPU()
		if rep.Stats.Messages != msgs || rep.Stats.Quarantined != 0 {
			b.Fatalf("replayed %d of %d messages, %d quarantined", rep.Stats.Messages, msgs, rep.Stats.Quarantined)
		}
		b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(msgs), "replay_cpu_us/msg")
		b.ReportMetric(float64((cpu2-cpu1).Microseconds())/float64(msgs), "raw_cpu_us/msg")
		b.ReportMetric(rep.Stats.PerSec, "replay_msgs/s")
		b.ReportMetric(rep.RawConsumePerSec, "raw_consume_msgs/s")
		b.ReportMetric(rep.Stats.PerSec/rep.RawConsumePerSec, "ratio")
		b.ReportMetric(float64(msgs), "messages")
		b.ReportMetric(rep.Stats.Duration.Seconds()*1e6/float64(events), "s_per_1M_events")
	}
}

// processCPU is the user and system CPU time the process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchInbox fills a stream like eu-central's inbox: identities created
// and updated through the writer, shipped into it by the shipper.
func benchInbox(b *testing.B, ctx context.Context, dir string, events int) (jetstream.JetStream, map[string]keystore.ZoneKey) {
	identities := max(1, events/10)
	if v, err := strconv.Atoi(os.Getenv("MERIDIAN_REPLAY_IDENTITIES")); err == nil && v > 0 {
		identities = min(v, events)
	}
	// A kept inbox: its zone key and what it holds, written once filled.
	readyFile := filepath.Join(dir, "bench-inbox.json")
	type ready struct {
		Events, Identities int
		ZoneKey            keystore.ZoneKey
	}
	var have ready
	kept := false
	if raw, err := os.ReadFile(readyFile); err == nil {
		if err := json.Unmarshal(raw, &have); err != nil {
			b.Fatal(err)
		}
		if have.Events != events || have.Identities != identities {
			b.Fatalf("%s holds an inbox of %d events over %d identities, not %d over %d", dir, have.Events, have.Identities, events, identities)
		}
		kept = true
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "js"), NoSigs: true, NoLog: true})
	if err != nil {
		b.Fatal(err)
	}
	srv.Start()
	b.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	stream := "inbox-" + region.DevEUCentral
	if kept {
		return js, map[string]keystore.ZoneKey{"eu": have.ZoneKey}
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"meridian.>"}, Storage: jetstream.FileStorage, Duplicates: time.Minute}); err != nil {
		b.Fatal(err)
	}
	l, err := eventlog.Open(eventlog.Options{Dir: filepath.Join(dir, "log"), Stamp: writer.StampSequence})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	keys, err := keystore.Open(keystore.Options{Dir: filepath.Join(dir, "keys")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { keys.Close() })
	zk := keystore.ZoneKey{ID: "eu-bench"}
	rand.Read(zk.Key[:])
	hash := make([]byte, 32)
	rand.Read(hash)
	zoneKeys := map[string]keystore.ZoneKey{"eu": zk}
	w, err := writer.New(writer.Config{Region: region.DevEUCentral, Node: "eu-central-bench", Topology: region.DefaultDevPolicy(),
		Log: l, Keys: keys, ZoneKeys: zoneKeys, HashKey: hash})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, identities)
	batch := make([]*meridianv1.Event, 0, 500)
	flush := func() {
		if len(batch) > 0 {
			if _, err := w.Append(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for i := range events {
		ev := &meridianv1.Event{HomeRegion: region.DevEUCentral}
		if i < identities {
			ids[i] = uuid.NewString()
			ev.IdentityId = ids[i]
			ev.Body = &meridianv1.Event_IdentityCreated{IdentityCreated: &meridianv1.IdentityCreated{HomeRegion: region.DevEUCentral,
				Traits: &meridianv1.Traits{Name: proto.String("Bench Person " + strconv.Itoa(i)), Locale: proto.String("de-DE")}}}
		} else {
			ev.IdentityId = ids[i%identities]
			ev.Body = &meridianv1.Event_TraitsUpdated{TraitsUpdated: &meridianv1.TraitsUpdated{
				Traits: &meridianv1.Traits{Name: proto.String("Renamed " + strconv.Itoa(i)), Locale: proto.String("fr-FR")}}}
		}
		batch = append(batch, ev)
		if len(batch) == cap(batch) || i == identities-1 {
			flush() // creations first: updates need the identity's key
		}
	}
	flush()
	sh, err := eventlog.NewShipper(eventlog.ShipperConfig{Log: l, JS: js, Stream: stream, Route: routeRecord(region.DevEUCentral)})
	if err != nil {
		b.Fatal(err)
	}
	if err := sh.Start(ctx); err != nil {
		b.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := sh.WaitShipped(wctx, l.LastSeq()); err != nil {
		b.Fatal(err)
	}
	if err := sh.Close(); err != nil {
		b.Fatal(err)
	}
	raw, err := json.Marshal(ready{Events: events, Identities: identities, ZoneKey: zk})
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(readyFile, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	return js, zoneKeys
}
