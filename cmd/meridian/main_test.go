package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: meridian"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"serve"}, 2, "--policy is required"},
		{[]string{"serve", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"dev", "--http-port", "x"}, 2, "invalid value"},
		{[]string{"dev", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"help"}, 0, "commands:"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String()+out.String(), tc.want) {
			t.Errorf("run(%q) = %d, output %q; want %d containing %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}

func TestLoadKeyFile(t *testing.T) {
	key32 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	hash := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 16))
	for _, tc := range []struct {
		name, body, wantErr string
	}{
		{"ok", `{"hash_key":"` + hash + `","zone_keys":[{"zone":"eu","id":"eu-1","key":"` + key32 + `"}]}`, ""},
		{"not json", `{`, "unexpected EOF"},
		{"unknown field", `{"hash_key":"` + hash + `","zone_keys":[],"x":1}`, `unknown field "x"`},
		{"short hash key", `{"hash_key":"AAAA","zone_keys":[{"zone":"eu","id":"eu-1","key":"` + key32 + `"}]}`, "hash_key: must be base64 of at least 16 bytes"},
		{"no zone keys", `{"hash_key":"` + hash + `","zone_keys":[]}`, "zone_keys: at least one"},
		{"missing zone", `{"hash_key":"` + hash + `","zone_keys":[{"id":"eu-1","key":"` + key32 + `"}]}`, "zone_keys[0].zone: required"},
		{"missing id", `{"hash_key":"` + hash + `","zone_keys":[{"zone":"eu","key":"` + key32 + `"}]}`, "zone_keys[0].id: required"},
		{"short key", `{"hash_key":"` + hash + `","zone_keys":[{"zone":"eu","id":"eu-1","key":"AAAA"}]}`, "zone_keys[0].key: must be base64 of exactly 32 bytes"},
		{"duplicate zone", `{"hash_key":"` + hash + `","zone_keys":[{"zone":"eu","id":"a","key":"` + key32 + `"},{"zone":"eu","id":"b","key":"` + key32 + `"}]}`, `zone_keys[1].zone: duplicate zone "eu"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := loadKeyFile(p)
			if tc.wantErr == "" {
				if err != nil || len(s.zoneKeys) != 1 || s.zoneKeys["eu"].ID != "eu-1" {
					t.Fatalf("loadKeyFile = %+v, %v", s, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("loadKeyFile error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestDevSmoke runs `meridian dev` as a user would: it writes
// endpoints.json once every region is ready, accepts a write in eu-west,
// serves it from eu-central with the consistency token, exposes /metrics,
// and stops cleanly when its context ends.
func TestDevSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three regions")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var code int
	var out, errb syncBuffer
	go func() {
		defer close(done)
		code = run(ctx, []string{"dev", "--data", dir, "--http-port", "0"}, &out, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("dev did not stop within 30s")
		}
	})

	eps := map[string]struct{ HTTP string }{}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "endpoints.json")); err == nil && json.Unmarshal(b, &eps) == nil {
			break
		}
		select {
		case <-done:
			t.Fatalf("dev exited with %d: %s", code, errb.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no endpoints.json after 60s; stderr: %s", errb.String())
		}
	}
	const id = "0193a1b2-0000-7000-8000-0000000000aa"
	body := `{"identityId":"` + id + `","homeRegion":"eu-west","identityCreated":{"homeRegion":"eu-west","traits":{"email":"smoke@example.eu","name":"Smoke"}}}`
	resp, err := http.Post(eps["eu-west"].HTTP+"/v1/events", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var ack struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&ack)
	resp.Body.Close()
	if resp.StatusCode != 200 || ack.Token == "" {
		t.Fatalf("append: %d, token %q", resp.StatusCode, ack.Token)
	}
	req, _ := http.NewRequest("GET", eps["eu-central"].HTTP+"/v1/identities/"+id, nil)
	req.Header.Set("Meridian-Token", ack.Token)
	req.Header.Set("Meridian-Wait", "20s")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(got), "smoke@example.eu") {
		t.Fatalf("read in eu-central: %d %s", resp.StatusCode, got)
	}
	resp, err = http.Get(eps["us-east"].HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(got), "meridian_log_last_seq") || !strings.Contains(string(got), `meridian_keystore_cache_lookups_total{node=`) ||
		!strings.Contains(string(got), `meridian_pebble_budget_bytes{node=`) || !strings.Contains(string(got), `part="memtables"`) {
		t.Fatalf("/metrics: %d %.300s", resp.StatusCode, got)
	}
	cancel()
	select {
	case <-done:
		if code != 0 {
			t.Fatalf("dev exited with %d after Ctrl-C: %s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30s")
	}
}
