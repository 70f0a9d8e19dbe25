package writer_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/writer"
	"google.golang.org/protobuf/proto"
)

const crashChildEnv = "MERIDIAN_WRITER_CRASH_CHILD"

// TestCrashChild is the child of TestKillDuringAppends: it appends new
// identities (each creating a data key and sealing resident traits) from 8
// goroutines and prints "ack <event id> <identity>" once each is durable,
// until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("helper process for TestKillDuringAppends")
	}
	zk, _ := hex.DecodeString(os.Getenv(crashChildEnv + "_ZK"))
	l, err := eventlog.Open(eventlog.Options{Dir: filepath.Join(dir, "log"), Stamp: writer.StampSequence})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keystore.Open(keystore.Options{Dir: filepath.Join(dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	copy(key[:], zk)
	w, err := writer.New(writer.Config{
		Region: "eu-west", Node: "n1", Topology: testTopology, Log: l, Keys: ks,
		ZoneKeys: map[string]keystore.ZoneKey{"eu": {ID: "eu-1", Key: key}},
		HashKey:  []byte("0123456789abcdef"),
	})
	if err != nil {
		t.Fatal(err)
	}
	acks := make(chan string, 64)
	for range 8 {
		go func() {
			for i := 0; ; i++ {
				id := newIdentity()
				res, err := w.Append(context.Background(), created(id, "eu-west", &meridianv1.Traits{Email: ptr("crash-" + id + "@example.com")}))
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(3)
				}
				acks <- fmt.Sprintf("ack %s %s", res.EventIDs[0], id)
			}
		}()
	}
	out := bufio.NewWriter(os.Stdout)
	for a := range acks {
		fmt.Fprintln(out, a)
		out.Flush()
	}
}

// A writer process killed with SIGKILL mid-stream loses no acknowledged
// append, and every acknowledged resident record can still be unsealed: its
// data key was durable before the append was acknowledged.
func TestKillDuringAppends(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	zk := make([]byte, 32)
	rand.Read(zk)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashChildEnv+"_ZK="+hex.EncodeToString(zk))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]string{} // event id -> identity
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	defer func() { // on every path: no child left, the reader goroutine ends
		cmd.Process.Kill()
		for range lines {
		}
	}()
	deadline := time.After(60 * time.Second)
	for len(acked) < 300 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("child exited after %d acks: %v", len(acked), cmd.Wait())
			}
			if f := strings.Fields(line); len(f) == 3 && f[0] == "ack" {
				acked[f[1]] = f[2]
			}
		case <-deadline:
			t.Fatalf("only %d acks before the deadline", len(acked))
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for line := range lines { // acks printed before the kill landed
		if f := strings.Fields(line); len(f) == 3 && f[0] == "ack" {
			acked[f[1]] = f[2]
		}
	}
	cmd.Wait()

	l, err := eventlog.Open(eventlog.Options{Dir: filepath.Join(dir, "log"), Stamp: writer.StampSequence})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ks, err := keystore.Open(keystore.Options{Dir: filepath.Join(dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	recs, err := l.Read(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(recs)) != l.LastSeq() || (len(recs) > 0 && recs[0].Seq != 1) {
		t.Fatalf("log not contiguous: %d records, LastSeq %d", len(recs), l.LastSeq())
	}
	seen := map[string]bool{}
	for _, r := range recs {
		ev := &meridianv1.Event{}
		if err := proto.Unmarshal(r.Data, ev); err != nil {
			t.Fatalf("record %d: %v", r.Seq, err)
		}
		if ev.Part != meridianv1.Part_PART_RESIDENT {
			continue
		}
		k, err := ks.Get(ev.IdentityId, ev.Sealed.KeyId)
		if err != nil {
			if _, isAcked := acked[ev.EventId]; isAcked {
				t.Errorf("acknowledged event %s: data key lost: %v", ev.EventId, err)
			}
			continue
		}
		pt, err := k.Unseal(ev.Sealed, writer.RecordID(ev))
		if err != nil {
			t.Fatalf("record %d does not unseal: %v", r.Seq, err)
		}
		inner := &meridianv1.Event{}
		if err := proto.Unmarshal(pt, inner); err != nil || inner.GetIdentityCreated().GetTraits().GetEmail() != "crash-"+ev.IdentityId+"@example.com" {
			t.Fatalf("record %d unseals to %v (%v)", r.Seq, inner, err)
		}
		seen[ev.EventId] = true
	}
	for id := range acked {
		if !seen[id] {
			t.Errorf("acknowledged event %s (identity %s) is not in the log after SIGKILL", id, acked[id])
		}
	}
	t.Logf("%d acknowledged appends survived SIGKILL; log holds %d records", len(acked), len(recs))
}
