package eventlog

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a child (TestCrashChild,
// selected by the environment) that appends from several goroutines and
// prints every acknowledged append; the parent kills it with SIGKILL after
// some acknowledgements and checks the reopened log. Two rounds: the second
// child recovers the first one's log and continues it.

const (
	crashChildEnv   = "EVENTLOG_CRASH_CHILD_DIR"
	crashRoundEnv   = "EVENTLOG_CRASH_ROUND"
	crashWriters    = 8
	crashAcksBefore = 300 // acknowledgements the parent waits for before the kill
)

func TestCrashDurability(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child")
	}
	dir := t.TempDir()
	type ack struct {
		round, w, i, k int
		first          uint64
	}
	var acks []ack
	for round := 1; round <= 2; round++ {
		lines, stderr := runCrashChild(t, dir, round)
		for _, ln := range lines {
			var a ack
			if _, err := fmt.Sscanf(ln, "ack %d %d %d %d %d", &a.first, &a.round, &a.w, &a.i, &a.k); err != nil {
				t.Fatalf("round %d: bad child line %q: %v\nstderr:\n%s", round, ln, err, stderr)
			}
			acks = append(acks, a)
		}
		t.Logf("round %d: %d acknowledged appends before SIGKILL", round, len(lines))
	}

	l := openLog(t, Options{Dir: dir})
	if l.FirstSeq() != 1 {
		t.Fatalf("FirstSeq = %d, want 1", l.FirstSeq())
	}
	// Contiguous 1..LastSeq, every record stamped with its own sequence.
	type id struct{ round, w, i int }
	groups := map[id][]uint64{} // append -> sequences of its records, by j
	r := l.NewReader(1)
	defer r.Close()
	want := uint64(1)
	for r.Next() {
		rec := r.Record()
		if rec.Seq != want {
			t.Fatalf("record %d follows %d: log not contiguous", rec.Seq, want-1)
		}
		want++
		var g id
		var j, k int
		var stamped uint64
		if _, err := fmt.Sscanf(string(rec.Data), "r%d-w%d-i%d-j%d/%d@%d", &g.round, &g.w, &g.i, &j, &k, &stamped); err != nil || stamped != rec.Seq {
			t.Fatalf("seq %d holds %q (stamp %d, %v)", rec.Seq, rec.Data, stamped, err)
		}
		if len(groups[g]) != j {
			t.Fatalf("seq %d: record j=%d of append %v out of order (have %d)", rec.Seq, j, g, len(groups[g]))
		}
		groups[g] = append(groups[g], rec.Seq)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if want-1 != l.LastSeq() {
		t.Fatalf("read up to %d, LastSeq %d", want-1, l.LastSeq())
	}
	// Every acknowledged append is there, whole, where it was acknowledged.
	for _, a := range acks {
		seqs := groups[id{a.round, a.w, a.i}]
		if len(seqs) != a.k || seqs[0] != a.first {
			t.Fatalf("acknowledged append %+v: found at %v", a, seqs)
		}
	}
	// Appends in flight at the kill are all or nothing, and contiguous.
	for g, seqs := range groups {
		for j := 1; j < len(seqs); j++ {
			if seqs[j] != seqs[0]+uint64(j) {
				t.Fatalf("append %v split: %v", g, seqs)
			}
		}
		if k := g.i%3 + 1; len(seqs) != k {
			t.Fatalf("append %v has %d of its %d records", g, len(seqs), k)
		}
	}
	t.Logf("%d acknowledged appends verified; log holds %d records", len(acks), l.LastSeq())
}

// runCrashChild starts a child, waits for crashAcksBefore acks, kills it
// with SIGKILL and returns every ack line it printed.
func runCrashChild(t *testing.T, dir string, round int) ([]string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var acks []string
	deadline := time.After(testDeadline)
	for len(acks) < crashAcksBefore {
		select {
		case ln, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("child ended after %d acks\nstderr:\n%s", len(acks), stderr.String())
			}
			if strings.HasPrefix(ln, "ack ") {
				acks = append(acks, ln)
			}
		case <-deadline:
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("only %d acks before the deadline\nstderr:\n%s", len(acks), stderr.String())
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	// Everything printed before the kill is an acknowledgement too.
	for ln := range lines {
		if strings.HasPrefix(ln, "ack ") && strings.Count(ln, " ") == 5 {
			acks = append(acks, ln)
		}
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child exit: %v, want killed\nstderr:\n%s", err, stderr.String())
	}
	return acks, stderr.String()
}

// TestCrashChild is the child of TestCrashDurability; it runs until killed
// (or gives up after the test deadline, should the parent be gone).
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("only run as the child of TestCrashDurability")
	}
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	l, err := Open(Options{Dir: dir, Stamp: func(seq uint64, rec []byte) []byte {
		return fmt.Appendf(rec[:len(rec):len(rec)], "@%d", seq)
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*testDeadline)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				k := i%3 + 1
				recs := make([][]byte, k)
				for j := range recs {
					recs[j] = fmt.Appendf(nil, "r%d-w%d-i%d-j%d/%d", round, w, i, j, k)
				}
				first, err := l.Append(ctx, recs...)
				if err != nil {
					return
				}
				line := fmt.Appendf(nil, "ack %d %d %d %d %d\n", first, round, w, i, k)
				mu.Lock()
				_, err = os.Stdout.Write(line)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	t.Fatal("child was not killed")
}
