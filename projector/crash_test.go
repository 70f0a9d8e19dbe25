package projector

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

const crashChildEnv = "PROJECTOR_CRASH_CHILD"

// TestExactlyOnceAcrossCrash runs the projector in a child process, kills
// it with SIGKILL while it is working through the inbox, restarts it on
// the same directories and checks that every message took effect exactly
// once: counters equal the number of events (none skipped), the stored
// quarantine count — a plain counter, not idempotent — equals the number
// of poison messages (none counted twice), the restart resumed at the
// stored sequence + 1, and the model equals a clean rebuild.
func TestExactlyOnceAcrossCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	w := newWorld(t)
	ids := make([]string, 8)
	wantFailed := map[string]uint64{}
	wantRoles := map[string][]string{}
	for i := range ids {
		ids[i] = newID()
		w.append(created(ids[i], fmt.Sprintf("u%d@example.org", i), fmt.Sprintf("User %d", i)))
	}
	poison := 0
	for round := range 40 {
		var evs []*meridianv1.Event
		for j := range 100 {
			id := ids[(round*100+j)%len(ids)]
			if j%5 == 0 {
				role := fmt.Sprintf("r%d", round*100+j)
				evs = append(evs, grant(id, role))
				wantRoles[id] = append(wantRoles[id], role)
			} else {
				evs = append(evs, loginFailed(id))
				wantFailed[id]++
			}
		}
		w.append(evs...)
		w.publishRaw("meridian.eu-central.global.login_failed", []byte{0xde, 0xad}, map[string]string{"Nats-Msg-Id": "poison-" + strconv.Itoa(round)})
		poison++
	}
	last := w.lastSeq()
	w.keys.Close() // the child takes the key store

	ek := w.zones["eu"]
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		crashChildEnv+"=1",
		"CHILD_NATS="+w.srv.ClientURL(), "CHILD_DIR="+w.dir, "CHILD_KEYS="+w.keysDir,
		"CHILD_ZONEKEY="+ek.ID+":"+hex.EncodeToString(ek.Key[:]),
	)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := make(chan uint64, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			seq, ok := strings.CutPrefix(sc.Text(), "applied ")
			if !ok {
				continue
			}
			if n, _ := strconv.ParseUint(seq, 10, 64); n >= last/4 {
				cmd.Process.Kill() // SIGKILL
				killed <- n
				break
			}
		}
		for sc.Scan() {
		}
	}()
	var seenAtKill uint64
	select {
	case seenAtKill = <-killed:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("child made no progress")
	}
	cmd.Wait()

	w.openKeys()
	p, err := New(w.config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	resumeAt := p.eng.inboxSeq
	t.Logf("child killed after reporting inbox seq %d of %d; the stored model was at %d", seenAtKill, last, resumeAt)
	if resumeAt == 0 || resumeAt >= last {
		t.Logf("note: the kill did not land mid-stream this time (stored %d of %d)", resumeAt, last)
	}
	if err := p.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	w.sync(p)

	if m := p.Metrics(); m.Skipped != 0 || m.Messages != last-resumeAt {
		t.Fatalf("restart applied %d messages (skipped %d), want exactly %d from seq %d", m.Messages, m.Skipped, last-resumeAt, resumeAt+1)
	}
	for _, id := range ids {
		got, err := p.Get(testCtx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if got.GetFailedLogins() != wantFailed[id] {
			t.Errorf("%s: failed_logins %d, want %d", id, got.GetFailedLogins(), wantFailed[id])
		}
		want := slices.Sorted(slices.Values(wantRoles[id]))
		if !slices.Equal(got.GetRoles(), want) {
			t.Errorf("%s: %d roles, want %d", id, len(got.GetRoles()), len(want))
		}
	}
	stored, err := p.eng.store.quarantinedCount()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := p.Quarantined()
	if err != nil {
		t.Fatal(err)
	}
	if stored != uint64(poison) || len(recs) != poison {
		t.Fatalf("quarantine count %d, records %d, want %d each", stored, len(recs), poison)
	}

	// The crashed-and-resumed model equals one built in a single pass.
	rdir := filepath.Join(t.TempDir(), "rebuilt")
	if _, err := Rebuild(testCtx(t), RebuildConfig{JS: w.js, Stream: w.stream, Dir: rdir, Zone: testZone, Keys: w.keys, ZoneKeys: w.zones, Now: w.now.Load}); err != nil {
		t.Fatal(err)
	}
	assertSameModel(t, p, rdir, w.keys)
}

// TestCrashChild is the child process of TestExactlyOnceAcrossCrash.
func TestCrashChild(t *testing.T) {
	if os.Getenv(crashChildEnv) == "" {
		t.Skip("only runs as the child of TestExactlyOnceAcrossCrash")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := nats.Connect(os.Getenv("CHILD_NATS"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := keystore.Open(keystore.Options{Dir: os.Getenv("CHILD_KEYS")})
	if err != nil {
		t.Fatal(err)
	}
	zid, zhex, _ := strings.Cut(os.Getenv("CHILD_ZONEKEY"), ":")
	zb, err := hex.DecodeString(zhex)
	if err != nil {
		t.Fatal(err)
	}
	zk := keystore.ZoneKey{ID: zid}
	copy(zk.Key[:], zb)
	p, err := New(Config{
		Region: projRegion, Zone: testZone, JS: js, Dir: os.Getenv("CHILD_DIR"), Keys: keys,
		ZoneKeys: map[string]keystore.ZoneKey{"eu": zk}, BatchSize: 16, Now: func() int64 { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		_, seq, _, next := p.eng.snapshot()
		fmt.Printf("applied %d\n", seq)
		select {
		case <-next:
		case <-ctx.Done():
			return
		}
	}
}

// assertSameModel compares a live projector's model with a model directory.
func assertSameModel(t *testing.T, p *Projector, dir string, keys KeyStore) {
	t.Helper()
	m, err := OpenModel(dir, keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	live := map[string]*meridianv1.IdentityState{}
	if err := p.Range(func(id string, st *meridianv1.IdentityState) error { live[id] = st; return nil }); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = m.Range(func(id string, st *meridianv1.IdentityState) error {
		n++
		if !proto.Equal(live[id], st) {
			return fmt.Errorf("identity %s: GLOBAL state differs", id)
		}
		a, aerr := p.Get(context.Background(), id)
		b, berr := m.Get(context.Background(), id)
		if (aerr == nil) != (berr == nil) || !proto.Equal(a, b) {
			return fmt.Errorf("identity %s: views differ: %v (%v) vs %v (%v)", id, a, aerr, b, berr)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(live) || n == 0 {
		t.Fatalf("rebuilt model has %d identities, live %d", n, len(live))
	}
}
