package tests

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/ops"
	"github.com/meridian-id/meridian/ops/inspect"
	"github.com/meridian-id/meridian/projector"
)

func opsJS(t *testing.T, ctx context.Context, d *ops.Deployment, r string) jetstream.JetStream {
	t.Helper()
	conns := d.Connect()
	t.Cleanup(conns.Close)
	js, err := conns.JS(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func opsZone(t *testing.T, c *cluster.Cluster, r string) string {
	t.Helper()
	z, ok := c.Policy.ZoneOf(r)
	if !ok {
		t.Fatalf("no zone for %s", r)
	}
	return z
}

// TestOpsReplayEqualsLive rebuilds eu-central's model from its inbox while
// the node runs (interrupted once, then resumed), checks it equals the
// live model, then swaps it into the stopped node and starts it again.
func TestOpsReplayEqualsLive(t *testing.T) {
	c := opsStartCluster(t)
	ctx := opsCtx(t, 120*time.Second)
	d := opsDeployment(t, c)
	ids := opsCreate(t, ctx, c, 30, "replay")
	for _, id := range ids[:6] {
		if _, err := opsClient(t, c, id.Home).Append(ctx, opsRenamed(id.ID, id.Home, id.Name+" renamed")); err != nil {
			t.Fatal(err)
		}
	}
	opsWaitConverged(t, ctx, d, len(ids))

	const r = euCentral
	zone := opsZone(t, c, r)
	js := opsJS(t, ctx, d, r)
	ws := filepath.Join(t.TempDir(), "ws")
	eu := ids[0] // home eu-west: its RESIDENT traits are held in eu-central
	if opsZone(t, c, eu.Home) != zone {
		t.Fatalf("identity 0 should be of zone %s", zone)
	}

	// Interrupted after its first batch...
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	irep, err := ops.Replay(ictx, ops.ReplayConfig{Region: r, Zone: zone, JS: js, ZoneKeys: c.ZoneKeys(r), Workspace: ws, BatchSize: 8,
		Progress: func(p ops.Progress) {
			if p.Phase == "rebuild" && p.Done > 0 {
				cancel()
			}
		}})
	if !errors.Is(err, ops.ErrInterrupted) {
		t.Fatalf("interrupted replay: err = %v, want ErrInterrupted", err)
	}
	t.Logf("interrupted: %v (%+v)", err, irep.Stats)
	// ...and resumed, verified against the running node.
	rep, err := ops.Replay(ctx, ops.ReplayConfig{Region: r, Zone: zone, JS: js, ZoneKeys: c.ZoneKeys(r), Workspace: ws,
		Live: opsSources(t, d, r)[0], Show: []string{eu.ID}, CompareRaw: true})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if irep.Stats.Reached > 0 && (!rep.Stats.Resumed || rep.Stats.FirstSeq != irep.Stats.Reached+1) {
		t.Errorf("replay did not resume after seq %d: %+v", irep.Stats.Reached, rep.Stats)
	}
	if !rep.Verified() {
		t.Fatalf("rebuilt model differs from the live one: %s", opsReport(rep.Verify))
	}
	for _, cmp := range rep.Verify {
		if cmp.Identities["rebuilt"] < len(ids)/3 || cmp.Identities["rebuilt"] != cmp.Identities[r] {
			t.Errorf("%s: rebuilt holds %d identities, live %d", cmp.Kind, cmp.Identities["rebuilt"], cmp.Identities[r])
		}
	}
	if got := rep.Identities[eu.ID].GetTraits().GetName(); got != eu.Name+" renamed" {
		t.Errorf("rebuilt view of %s: name %q, want %q", eu.ID, got, eu.Name+" renamed")
	}
	t.Logf("replay: %d messages at %.0f/s; raw consume %.0f/s", rep.Stats.Messages, rep.Stats.PerSec, rep.RawConsumePerSec)

	// Swap into the stopped node, reusing the workspace (built with a
	// scratch key store while the node ran).
	if err := c.StopNode(r); err != nil {
		t.Fatal(err)
	}
	rep, err = ops.Replay(ctx, ops.ReplayConfig{Region: r, Zone: zone, JS: js, ZoneKeys: c.ZoneKeys(r),
		DataDir: c.NodeDir(r), Workspace: ws, Swap: true})
	if err != nil {
		t.Fatalf("swap replay: %v", err)
	}
	if !rep.Swapped || rep.Replaced == "" || !rep.Verified() {
		t.Fatalf("swap: swapped %v, replaced %q, verify %s (%s)", rep.Swapped, rep.Replaced, opsReport(rep.Verify), rep.VerifyNote)
	}
	if err := c.StartNode(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(r).WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := c.Node(r).Projector().Get(ctx, eu.ID)
	if err != nil || got.GetTraits().GetName() != eu.Name+" renamed" {
		t.Fatalf("swapped-in model: %s = %v (name %q), want name %q", eu.ID, err, got.GetTraits().GetName(), eu.Name+" renamed")
	}
	// The node consumes on from the swapped model.
	late := opsCreate(t, ctx, c, 3, "late")
	opsWaitConverged(t, ctx, d, len(ids)+len(late))
	resp, err := http.Get(c.Node(r).URL() + "/v1/identities/" + late[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s after the swap: %d", late[0].ID, resp.StatusCode)
	}
}

// TestOpsReplayPointInTime rebuilds eu-central's model as of a time and
// checks it equals the model that held exactly the events before it.
func TestOpsReplayPointInTime(t *testing.T) {
	c := opsStartCluster(t)
	ctx := opsCtx(t, 120*time.Second)
	d := opsDeployment(t, c)
	const r = euCentral
	zone := opsZone(t, c, r)

	before := opsCreate(t, ctx, c, 21, "before")
	opsWaitConverged(t, ctx, d, len(before))
	src := opsSources(t, d, r)[0]
	want := map[inspect.Kind]*inspect.Digest{}
	for _, k := range []inspect.Kind{inspect.KindGlobal, inspect.KindResident} {
		dg, err := src.Digest(ctx, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		want[k] = dg
	}
	until := time.Now()

	after := opsCreate(t, ctx, c, 9, "after")
	for _, id := range before[:9] {
		if _, err := opsClient(t, c, id.Home).Append(ctx, opsRenamed(id.ID, id.Home, "changed later"), opsLocale(id.ID, id.Home, "fr-FR")); err != nil {
			t.Fatal(err)
		}
	}
	opsWaitConverged(t, ctx, d, len(before)+len(after))

	ws := t.TempDir()
	rep, err := ops.Replay(ctx, ops.ReplayConfig{Region: r, Zone: zone, JS: opsJS(t, ctx, d, r), ZoneKeys: c.ZoneKeys(r),
		Workspace: ws, Until: until, Live: src, Show: []string{before[0].ID, after[0].ID}})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if !rep.Stats.StoppedAtUntil {
		t.Errorf("replay was not cut short by Until: %+v", rep.Stats)
	}
	// Against the live model only identities untouched since agree.
	if !rep.Verified() {
		t.Errorf("rebuilt model differs from live where both saw the same events: %s", opsReport(rep.Verify))
	}
	if rep.Verify[0].Excluded == 0 {
		t.Errorf("no identity was left out of the verification, but %d changed after the time", len(after)+9)
	}
	if _, ok := rep.ShowErrors[after[0].ID]; !ok {
		t.Errorf("identity created after the time is in the point-in-time model")
	}
	if got := rep.Identities[before[0].ID].GetTraits().GetName(); got != before[0].Name {
		t.Errorf("point-in-time view of %s: name %q, want %q", before[0].ID, got, before[0].Name)
	}

	// Exactly the model of then: same digests, bucket by bucket.
	keys, err := keystore.Open(keystore.Options{Dir: filepath.Join(ws, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()
	m, err := projector.OpenModel(rep.ModelDir, keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for k, w := range want {
		got, err := inspect.Compute(m, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.Root != w.Root || got.Count != w.Count {
			t.Errorf("%s digest of the point-in-time model: %d identities, root %s; the model of then: %d, root %s (buckets differing: %v)",
				k, got.Count, got.Root[:12], w.Count, w.Root[:12], inspect.DifferingBuckets(got, w))
		}
	}
}
