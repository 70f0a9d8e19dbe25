package tests

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/ops"
	"github.com/meridian-id/meridian/ops/inspect"
	"github.com/meridian-id/meridian/projector"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// TestOpsEraseLeavesNoPlaintext erases an identity while every region
// keeps updating it, then searches every file of the deployment (logs, read
// models, key stores, JetStream message blocks; SSTs also decoded) for its
// plaintext, its data keys and its wrapped data keys.
func TestOpsEraseLeavesNoPlaintext(t *testing.T) {
	c := opsStartCluster(t)
	ctx := opsCtx(t, 150*time.Second)
	d := opsDeployment(t, c)
	others := opsCreate(t, ctx, c, 9, "bystander")

	// The person: RESIDENT traits and credential material, distinctive.
	victim := opsIdentity{ID: uuid.NewString(), Home: euWest, Email: "erase-" + opsHex(8) + "@example.test", Name: "Erase Me " + opsHex(8)}
	secret := []byte("credential-material-" + opsHex(12))
	cred := opsEvent(victim.ID, victim.Home)
	cred.Body = &meridianv1.Event_CredentialAdded{CredentialAdded: &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
		CredentialId: "pw-1", Type: meridianv1.CredentialType_CREDENTIAL_TYPE_PASSWORD_HASH, Material: secret, CreatedAtUnixMs: time.Now().UnixMilli()}}}
	if _, err := opsClient(t, c, euWest).Append(ctx, opsCreated(victim.ID, victim.Home, victim.Email, victim.Name), cred); err != nil {
		t.Fatal(err)
	}
	// eu-central writes resident data of it too (a key of its own).
	if _, err := opsClient(t, c, euCentral).Append(ctx, opsRenamed(victim.ID, victim.Home, victim.Name+" (eu-central)")); err != nil {
		t.Fatal(err)
	}
	opsWaitConverged(t, ctx, d, len(others)+1)

	needles := map[string][]byte{
		"email": []byte(victim.Email), "name": []byte(victim.Name), "credential": secret,
	}
	for _, r := range []string{euWest, euCentral} {
		keys, err := c.Node(r).Keys().Keys(victim.ID)
		if err != nil || len(keys) == 0 {
			t.Fatalf("%s holds no key of the victim: %v", r, err)
		}
		for _, k := range keys {
			needles[r+" data key "+k.ID] = bytes.Clone(k.Material[:])
		}
		live, _, err := inspect.KeyRecords(ctx, c.Node(r).Log(), victim.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range live {
			ev := &meridianv1.Event{}
			if err := proto.Unmarshal(rec.Data, ev); err != nil {
				t.Fatal(err)
			}
			needles[fmt.Sprintf("%s wrapped key (log seq %d)", r, rec.Seq)] = ev.GetDataKey().GetWrappedKey()
		}
	}
	// The scan must see what it looks for: before the erasure the keys are
	// on disk (the plaintext never is: it is sealed everywhere).
	before := opsScan(t, c)
	for what, n := range needles {
		if (strings.Contains(what, "wrapped key") || strings.Contains(what, "data key")) && !before.has(n) {
			t.Fatalf("the scan does not find the %s before the erasure: it could not prove anything", what)
		}
	}

	// Every region keeps writing to the person until the erasure applied.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, r := range allRegions {
		cl := opsClient(t, c, r)
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var e *meridianv1.Event
				if r == usEast {
					e = opsRole(victim.ID, victim.Home, fmt.Sprintf("role-%d", i)) // GLOBAL only outside the zone
				} else {
					name := fmt.Sprintf("concurrent %s %d %s", r, i, opsHex(6))
					e = opsRenamed(victim.ID, victim.Home, name)
					mu.Lock()
					needles["concurrent name "+name] = []byte(name)
					mu.Unlock()
				}
				_, _ = cl.Append(ctx, e) // refused or ignored once erased: both fine
			}
		})
	}
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop); wg.Wait() }) }
	defer halt()

	conns := d.Connect()
	defer conns.Close()
	rep, err := ops.Erase(ctx, ops.EraseConfig{Deployment: d, Conns: conns, Identity: victim.ID, Reason: "test",
		Progress: func(p ops.Progress) {
			if p.Phase == "applied" {
				halt()
			}
		}})
	if err != nil {
		t.Fatalf("erase: %v (report %s)", err, opsReport(rep))
	}
	halt()
	if !rep.Clean || rep.Home != euWest || rep.Zone != "eu" || rep.EventID == "" {
		t.Fatalf("erasure report: %s", opsReport(rep))
	}
	deleted := 0
	for _, s := range rep.Streams {
		deleted += len(s.Deleted)
	}
	if deleted == 0 {
		t.Errorf("no key message was deleted from any stream: %s", opsReport(rep.Streams))
	}
	t.Logf("erasure: applied after %v; %d stream messages securely deleted; sweeps %s", rep.AppliedAfter, deleted, opsReport(rep.Sweeps))

	for _, r := range allRegions {
		if _, err := c.Node(r).Projector().Get(ctx, victim.ID); !errors.Is(err, projector.ErrErased) {
			t.Errorf("%s: Get after the erasure: %v, want ErrErased", r, err)
		}
	}
	// The bystanders are untouched, the regions still agree, and the
	// residency audit (credentials, redacted key records) finds nothing.
	opsWaitConverged(t, ctx, d, len(others)+1)
	vrep, err := ops.Verify(ctx, ops.VerifyConfig{Deployment: d, Conns: conns})
	if err != nil {
		t.Fatal(err)
	}
	if !vrep.OK() {
		t.Errorf("verify after the erasure: findings %v, problems %v, convergence %s", vrep.Findings, vrep.Problems, opsReport(vrep.Convergence))
	}

	// No file anywhere holds the person's plaintext or keys (Pebble
	// deletes obsolete files in the background: wait for it).
	opsEventually(t, 30*time.Second, "no file holds the erased person's data", func() (bool, string) {
		files := opsScan(t, c)
		var found []string
		mu.Lock()
		defer mu.Unlock()
		for what, n := range needles {
			if paths := files.find(n); len(paths) > 0 {
				found = append(found, fmt.Sprintf("%s in %v", what, paths))
			}
		}
		sort.Strings(found)
		return len(found) == 0, strings.Join(found, "; ")
	})
}

// opsFiles is the content of every regular file under the cluster dir;
// SSTs are also decoded (their blocks are compressed) as "<path>#decoded".
type opsFiles map[string][]byte

func opsScan(t *testing.T, c interface{ NodeDir(string) string }) opsFiles {
	t.Helper()
	root := filepath.Dir(c.NodeDir(usEast))
	out := opsFiles{}
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !de.Type().IsRegular() {
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
			if dec, err := sstRecords(path); err == nil {
				out[path+"#decoded"] = dec
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("decode %s: %w", path, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	return out
}

func (f opsFiles) find(needle []byte) []string {
	var out []string
	for p, b := range f {
		if bytes.Contains(b, needle) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func (f opsFiles) has(needle []byte) bool { return len(f.find(needle)) > 0 }
