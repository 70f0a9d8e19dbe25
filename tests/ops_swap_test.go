package tests

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/node"
	"github.com/meridian-id/meridian/ops"
	"github.com/meridian-id/meridian/projector"
	"github.com/meridian-id/meridian/region"
)

// opsBackgroundWrites creates identities and renames them in every region
// until stop is called, which returns how many identities were created.
func opsBackgroundWrites(t *testing.T, c *cluster.Cluster, tag string) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, errs := 0, []error{}
	for i, home := range allRegions {
		cl := opsClient(t, c, home)
		wg.Go(func() {
			for j := 0; ctx.Err() == nil; j++ {
				id := opsIdentity{ID: opsEventID(), Home: home}
				id.ID = strings.ToLower(id.ID)
				email := fmt.Sprintf("%s-%d-%d-%s@example.test", tag, i, j, opsHex(3))
				wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := cl.Append(wctx, opsCreated(id.ID, home, email, "Background "+email))
				if err == nil {
					mu.Lock()
					created++
					mu.Unlock()
					_, err = cl.Append(wctx, opsRenamed(id.ID, home, "Renamed "+email))
				}
				wcancel()
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", home, err))
					mu.Unlock()
					return
				}
			}
		})
	}
	return func() int {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("background writes: %v", errors.Join(errs...))
		}
		return created
	}
}

// opsBackgroundReads reads identities from a region's node until stopped
// and fails on any answer but 200 or 503 model_switching.
func opsBackgroundReads(t *testing.T, c *cluster.Cluster, r string, ids []opsIdentity) (stop func() (ok, switching int)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var ok, switching int
	var bad []string
	done := make(chan struct{})
	url := c.Node(r).URL()
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/identities/"+ids[i%len(ids)].ID, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					bad = append(bad, err.Error())
				}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusOK:
				ok++
			case resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), node.CodeModelSwitching) && resp.Header.Get("Retry-After") != "":
				switching++
			default:
				bad = append(bad, fmt.Sprintf("%d %s", resp.StatusCode, body))
			}
		}
	}()
	return func() (int, int) {
		cancel()
		<-done
		if len(bad) > 0 {
			t.Errorf("reads during the swap: %d bad answers, e.g. %s", len(bad), bad[0])
		}
		return ok, switching
	}
}

// TestOpsReplaySwapOnline rebuilds eu-central's model while the whole
// deployment keeps writing and the node keeps serving reads, and has the
// running node swap it in: it serves the rebuilt model afterwards, every
// region converges (nothing lost or applied twice), and a clean rebuild
// equals the swapped-in model exactly.
func TestOpsReplaySwapOnline(t *testing.T) {
	c := opsStartCluster(t)
	ctx := opsCtx(t, 150*time.Second)
	d := opsDeployment(t, c)
	ids := opsCreate(t, ctx, c, 30, "swap")
	opsWaitConverged(t, ctx, d, len(ids))

	const r = euCentral
	zone := opsZone(t, c, r)
	js := opsJS(t, ctx, d, r)
	reg, _ := d.Region(r)
	cl, err := ops.NewNodeClient(reg)
	if err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(c.NodeDir(r), "replay")

	// Bad input changes nothing.
	for _, tc := range []struct {
		cfg   ops.ReplayConfig
		field string
	}{
		{ops.ReplayConfig{Region: r, Zone: zone, JS: js, ZoneKeys: c.ZoneKeys(r), Workspace: ws, Swap: true, Node: cl, FromSeq: 5}, "Swap"},
		{ops.ReplayConfig{Region: r, Zone: zone, JS: js, ZoneKeys: c.ZoneKeys(r), Workspace: ws, Swap: true, Node: cl, DataDir: c.NodeDir(r)}, "Swap"},
		{ops.ReplayConfig{Region: r, Zone: zone, JS: js, ZoneKeys: c.ZoneKeys(r), Workspace: ws, Node: cl}, "Node"},
		{ops.ReplayConfig{Region: r, Zone: zone, JS: js, ZoneKeys: c.ZoneKeys(r), Workspace: ws, Swap: true, Node: cl, LiveTimeout: -1}, "LiveTimeout"},
	} {
		_, err := ops.Replay(ctx, tc.cfg)
		var inv *ops.InvalidError
		if !errors.As(err, &inv) || inv.Field != tc.field {
			t.Errorf("%+v: err = %v, want invalid %s", tc.cfg, err, tc.field)
		}
	}
	for _, tc := range []struct {
		body, field string
	}{
		{`{"dir": ""}`, "dir"},
		{`{"dir": "relative/model"}`, "dir"},
		{`{"dir": "` + t.TempDir() + `/model"}`, "dir"}, // no replay workspace
		{`{"dir": "/x", "bogus": 1}`, "body"},
		{`{"dir": "/x", "live_timeout": "soon"}`, "live_timeout"},
		{`not json`, "body"},
	} {
		resp, err := http.Post(c.Node(r).URL()+"/v1/admin/model/swap", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Error struct{ Code, Field string } `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || e.Error.Code != "invalid_argument" || e.Error.Field != tc.field {
			t.Errorf("swap %s: %d %+v, want 400 invalid_argument %s", tc.body, resp.StatusCode, e.Error, tc.field)
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(c.NodeDir(r), "model.*")); len(matches) > 0 {
		t.Fatalf("refused swaps left %v", matches)
	}

	stopWrites := opsBackgroundWrites(t, c, "during")
	stopReads := opsBackgroundReads(t, c, r, ids)
	rep, err := ops.Replay(ctx, ops.ReplayConfig{Region: r, Zone: zone, JS: js, ZoneKeys: c.ZoneKeys(r), Workspace: ws, Swap: true, Node: cl, BatchSize: 64})
	okReads, switchReads := stopReads()
	more := stopWrites()
	if err != nil {
		t.Fatalf("online swap: %v", err)
	}
	o := rep.Online
	t.Logf("online swap: built %d, live %d, caught up %d, paused %d ms, switch %d ms; reads during it: %d ok, %d switching; %d identities written meanwhile",
		o.BuiltSeq, o.LiveSeq, o.CaughtUp, o.PausedMs, o.SwitchMs, okReads, switchReads, more)
	if !rep.Swapped || o.LiveSeq < o.BuiltSeq || o.CaughtUp != o.LiveSeq-o.BuiltSeq || len(o.Verify) != 2 {
		t.Fatalf("report %+v", o)
	}
	if !rep.Verified() {
		t.Fatalf("rebuilt model differs from the live one at the same position: %s", opsReport(o.Verify))
	}
	if okReads == 0 || more == 0 {
		t.Errorf("no reads (%d) or writes (%d) during the swap", okReads, more)
	}
	if opsExists(filepath.Join(ws, ops.ModelDir)) || !opsExists(o.Replaced) || opsExists(filepath.Join(ws, ops.KeysDir)) {
		t.Errorf("after the swap: workspace model %v, replaced %v, scratch keys %v", opsExists(filepath.Join(ws, ops.ModelDir)), opsExists(o.Replaced), opsExists(filepath.Join(ws, ops.KeysDir)))
	}
	// The node consumes on from the swapped-in model; every region agrees.
	late := opsCreate(t, ctx, c, 6, "late")
	opsWaitConverged(t, ctx, d, len(ids)+more+len(late))
	st := c.Node(r).Projector().Status()
	if st.Gaps != 0 || st.LastError != "" {
		t.Errorf("projector after the swap: gaps %d, last error %q", st.Gaps, st.LastError)
	}
	// Exactly what a clean rebuild of the whole inbox gives (heartbeats
	// touch no identity, so positions differing by them exclude nothing).
	clean, err := ops.Replay(ctx, ops.ReplayConfig{Region: r, Zone: zone, JS: js, ZoneKeys: c.ZoneKeys(r), Workspace: t.TempDir(), Live: opsSources(t, d, r)[0]})
	if err != nil {
		t.Fatal(err)
	}
	for _, cmp := range clean.Verify {
		if !cmp.Equal || cmp.Excluded != 0 {
			t.Errorf("%s: swapped-in model vs a clean rebuild: equal %v, %d excluded: %s", cmp.Kind, cmp.Equal, cmp.Excluded, opsReport(cmp.Differences))
		}
	}
}

func opsExists(p string) bool { _, err := os.Stat(p); return err == nil }

const opsSwapChildEnv = "MERIDIAN_OPS_SWAP_CHILD"

// TestOpsReplaySwapCrash kills (SIGKILL) a process in the middle of the
// switch — once after it wrote the marker and closed the live model, once
// after it moved the live model aside — and restarts the node on the
// directories: each time it settles on one whole model (the old one, then
// the rebuilt one), resumes consuming, and converges with the other
// regions, which kept writing.
func TestOpsReplaySwapCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	c := opsStartCluster(t)
	ctx := opsCtx(t, 170*time.Second)
	d := opsDeployment(t, c)
	ids := opsCreate(t, ctx, c, 24, "swapcrash")
	opsWaitConverged(t, ctx, d, len(ids))
	const r = euCentral
	zone := opsZone(t, c, r)
	js := opsJS(t, ctx, d, r)
	dir := c.NodeDir(r)
	ws := filepath.Join(dir, "replay")
	if _, err := ops.Replay(ctx, ops.ReplayConfig{Region: r, Zone: zone, JS: js, ZoneKeys: c.ZoneKeys(r), Workspace: ws, NoVerify: true}); err != nil {
		t.Fatal(err)
	}
	total := len(ids)
	for _, tc := range []struct {
		step        string
		wantRebuilt bool
	}{
		{"closed-live", false}, // marker written, nothing renamed: the old model stays
		{"moved-aside", true},  // live moved aside: the rebuilt model is moved in
	} {
		if err := c.StopNode(r); err != nil {
			t.Fatal(err)
		}
		opsSwapChild(t, c, r, zone, filepath.Join(ws, ops.ModelDir), tc.step)
		if !opsExists(filepath.Join(dir, ops.ModelDir+projector.SwapMarker)) {
			t.Fatalf("%s: the child died without leaving the marker", tc.step)
		}
		// Meanwhile the others write.
		total += len(opsCreateIn(t, ctx, c, 6, "while-down-"+tc.step, usEast, euWest))
		if err := c.StartNode(ctx, r); err != nil {
			t.Fatalf("%s: restart: %v", tc.step, err)
		}
		if err := c.Node(r).WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		aside, _ := filepath.Glob(filepath.Join(dir, ops.ModelDir+".replaced-*"))
		if opsExists(filepath.Join(dir, ops.ModelDir+projector.SwapMarker)) {
			t.Errorf("%s: marker left after the restart", tc.step)
		}
		if got := len(aside) == 1 && !opsExists(filepath.Join(ws, ops.ModelDir)); got != tc.wantRebuilt {
			t.Errorf("%s: rebuilt model in place = %v (aside %v), want %v", tc.step, got, aside, tc.wantRebuilt)
		}
		total += len(opsCreate(t, ctx, c, 3, "after-"+tc.step))
		opsWaitConverged(t, ctx, d, total)
	}
	if st := c.Node(r).Projector().Status(); st.Gaps != 0 {
		t.Errorf("gaps %d", st.Gaps)
	}
}

// opsSwapChild runs a projector on the stopped node's directories in a
// child process, has it swap in the model in built, and kills it with
// SIGKILL when the switch reaches step.
func opsSwapChild(t *testing.T, c *cluster.Cluster, r, zone, built, step string) {
	t.Helper()
	zk := c.ZoneKeys(r)[zone]
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpsSwapCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), opsSwapChildEnv+"=1",
		"CHILD_NATS="+c.Endpoints()[r].NATS, "CHILD_REGION="+r, "CHILD_ZONE="+zone,
		"CHILD_DIR="+c.NodeDir(r), "CHILD_BUILT="+built, "CHILD_STEP="+step,
		"CHILD_ZONEKEY="+zk.ID+":"+hex.EncodeToString(zk.Key[:]))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reached := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), "swap at "); ok {
				cmd.Process.Kill() // SIGKILL
				reached <- s
				break
			}
			if s, ok := strings.CutPrefix(sc.Text(), "swap failed "); ok {
				reached <- "failed: " + s
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case s := <-reached:
		if s != step {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child: %s, want to be killed at %s", s, step)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not reach step %s", step)
	}
	cmd.Wait()
}

// TestOpsSwapCrashChild is the child of TestOpsReplaySwapCrash.
func TestOpsSwapCrashChild(t *testing.T) {
	if os.Getenv(opsSwapChildEnv) == "" {
		t.Skip("child process of TestOpsReplaySwapCrash")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fail := func(err error) {
		fmt.Printf("swap failed %v\n", err)
		os.Stdout.Sync()
		t.Fatal(err)
	}
	zid, zhex, _ := strings.Cut(os.Getenv("CHILD_ZONEKEY"), ":")
	var zk keystore.ZoneKey
	zk.ID = zid
	if b, err := hex.DecodeString(zhex); err != nil || len(b) != len(zk.Key) {
		fail(fmt.Errorf("zone key: %v", err))
	} else {
		copy(zk.Key[:], b)
	}
	dir := os.Getenv("CHILD_DIR")
	keys, err := keystore.Open(keystore.Options{Dir: filepath.Join(dir, ops.KeysDir)})
	if err != nil {
		fail(err)
	}
	nc, err := nats.Connect(os.Getenv("CHILD_NATS"))
	if err != nil {
		fail(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		fail(err)
	}
	r := os.Getenv("CHILD_REGION")
	p, err := projector.New(projector.Config{Region: r, Zone: os.Getenv("CHILD_ZONE"), JS: js, Stream: region.InboxStream(r),
		Dir: filepath.Join(dir, ops.ModelDir), Keys: keys, ZoneKeys: map[string]keystore.ZoneKey{os.Getenv("CHILD_ZONE"): zk}})
	if err != nil {
		fail(err)
	}
	if err := p.Start(ctx); err != nil {
		fail(err)
	}
	step := os.Getenv("CHILD_STEP")
	_, err = p.Swap(ctx, projector.SwapConfig{Dir: os.Getenv("CHILD_BUILT"), Step: func(s string) {
		if s == step {
			fmt.Printf("swap at %s\n", s)
			os.Stdout.Sync()
			time.Sleep(time.Minute) // until SIGKILL
		}
	}})
	if err != nil {
		fail(err)
	}
	fail(errors.New("the swap finished without reaching the step"))
}
