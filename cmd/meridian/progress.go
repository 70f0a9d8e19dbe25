package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/ops"
	"github.com/meridian-id/meridian/region"
)

// This file holds what the operator commands (replay, reseed, verify,
// erase, status) share: how they find the deployment and its keys, and how
// they show progress.

// ---- progress -------------------------------------------------------------

// progressPrinter shows ops.Progress: a bar redrawn in place on a
// terminal, a plain line every few seconds otherwise (logs, CI).
type progressPrinter struct {
	w     io.Writer
	tty   bool
	width int
	every time.Duration

	mu        sync.Mutex
	lastLine  time.Time
	lastPhase string
	drawn     bool
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	p := &progressPrinter{w: w, width: 80, every: 2 * time.Second}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	if c, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && c > 40 {
		p.width = c
	}
	return p
}

// report is an ops.ProgressFunc.
func (p *progressPrinter) report(pr ops.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	phase := pr.Op + ": " + pr.Phase
	if p.tty {
		if p.drawn && phase != p.lastPhase {
			fmt.Fprintln(p.w)
		}
		line := p.bar(pr, phase)
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.drawn, p.lastPhase = true, phase
		if pr.Final {
			fmt.Fprintln(p.w)
			p.drawn = false
		}
		return
	}
	now := time.Now()
	if !pr.Final && phase == p.lastPhase && now.Sub(p.lastLine) < p.every {
		return
	}
	p.lastLine, p.lastPhase = now, phase
	fmt.Fprintln(p.w, phase+": "+counts(pr))
}

// finish ends a bar left open (an interrupted operation).
func (p *progressPrinter) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func (p *progressPrinter) bar(pr ops.Progress, phase string) string {
	text := counts(pr)
	if pr.Total == 0 {
		return phase + " " + text
	}
	barWidth := p.width - len(phase) - len(text) - 6
	if barWidth < 10 {
		return phase + " " + text
	}
	frac := min(float64(pr.Done)/float64(pr.Total), 1)
	full := int(frac * float64(barWidth))
	b := strings.Repeat("=", full)
	if full < barWidth {
		b += ">" + strings.Repeat(" ", barWidth-full-1)
	}
	return fmt.Sprintf("%s [%s] %s", phase, b, text)
}

// counts renders "1234/5000 messages (24%), 9.8k/s, ETA 3s (note)".
func counts(pr ops.Progress) string {
	var b strings.Builder
	if pr.Total > 0 {
		fmt.Fprintf(&b, "%d/%d %s (%d%%)", pr.Done, pr.Total, pr.Unit, int(100*min(float64(pr.Done)/float64(pr.Total), 1)))
	} else if pr.Done > 0 || pr.Unit != "" {
		fmt.Fprintf(&b, "%d %s", pr.Done, pr.Unit)
	}
	if pr.Rate > 0 && pr.Elapsed > 200*time.Millisecond {
		fmt.Fprintf(&b, ", %s/s", human(pr.Rate))
	}
	switch {
	case pr.Final:
		fmt.Fprintf(&b, ", done in %s", pr.Elapsed.Round(time.Millisecond))
	case pr.ETA >= 0:
		fmt.Fprintf(&b, ", ETA %s", pr.ETA.Round(time.Second))
	}
	if pr.Note != "" {
		fmt.Fprintf(&b, " (%s)", pr.Note)
	}
	return b.String()
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// ---- the deployment ---------------------------------------------------------

// deployFlags say where the deployment is: a policy file (regions, NATS
// and HTTP URLs), dev's endpoints.json (with or without a policy), or a
// `meridian dev` data directory.
type deployFlags struct {
	policy, endpoints, dev, creds string
}

func addDeployFlags(fs *flag.FlagSet) *deployFlags {
	f := &deployFlags{}
	fs.StringVar(&f.policy, "policy", "", "residency policy JSON `file` (regions, NATS and HTTP URLs)")
	fs.StringVar(&f.endpoints, "endpoints", "", "endpoints JSON `file` as written by meridian dev (overrides the policy's URLs)")
	fs.StringVar(&f.dev, "dev", "", "a meridian dev data `dir`: its endpoints.json, secrets.json and node data dirs")
	fs.StringVar(&f.creds, "creds", "", "NATS credentials `file` (optional)")
	return f
}

// endpointFile is one region of dev's endpoints.json (cluster.Endpoint).
type endpointFile struct {
	HTTP      string `json:"http"`
	NATS      string `json:"nats"`
	JetStream string `json:"jetstream_domain"`
	Zone      string `json:"zone"`
	Node      string `json:"node"`
}

func (f *deployFlags) load() (*ops.Deployment, error) {
	epPath := f.endpoints
	if epPath == "" && f.dev != "" {
		epPath = filepath.Join(f.dev, "endpoints.json")
	}
	var eps map[string]ops.Endpoint
	if epPath != "" {
		b, err := os.ReadFile(epPath)
		if err != nil {
			return nil, fmt.Errorf("endpoints: %w", err)
		}
		var raw map[string]endpointFile
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("endpoints %s: %w", epPath, err)
		}
		eps = map[string]ops.Endpoint{}
		for r, e := range raw {
			eps[r] = ops.Endpoint{HTTP: e.HTTP, NATS: e.NATS, Domain: e.JetStream, Zone: e.Zone}
		}
	}
	var p *region.Policy
	switch {
	case f.policy != "":
		b, err := os.ReadFile(f.policy)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		if p, err = region.LoadPolicyJSON(b); err != nil {
			return nil, fmt.Errorf("policy %s: %w", f.policy, err)
		}
	case eps != nil:
		var err error
		if p, err = ops.PolicyFromEndpoints(eps); err != nil {
			return nil, fmt.Errorf("endpoints %s: %w", epPath, err)
		}
	default:
		return nil, fmt.Errorf("%w: one of --policy, --endpoints or --dev is required", errUsage)
	}
	return ops.NewDeployment(p, eps)
}

func (f *deployFlags) natsOptions() []nats.Option {
	if f.creds == "" {
		return nil
	}
	return []nats.Option{nats.UserCredentials(f.creds)}
}

// dataDir is a region's node data dir: --data, or <dev>/<region>.
func (f *deployFlags) dataDir(data, regionName string) string {
	if data == "" && f.dev != "" {
		return filepath.Join(f.dev, regionName)
	}
	return data
}

// zoneKeys loads the zone keys of a region: a --keys file (the format of
// meridian serve), or the dev deployment's secrets.json.
func (f *deployFlags) zoneKeys(keysPath, zone string) (map[string]keystore.ZoneKey, error) {
	if keysPath != "" {
		sec, err := loadKeyFile(keysPath)
		if err != nil {
			return nil, err
		}
		if _, ok := sec.zoneKeys[zone]; !ok {
			return nil, fmt.Errorf("key file %s: zone_keys: no key of zone %q", keysPath, zone)
		}
		return sec.zoneKeys, nil
	}
	if f.dev == "" {
		return nil, fmt.Errorf("%w: --keys is required (the zone keys unwrap the inbox's data-key records)", errUsage)
	}
	path := filepath.Join(f.dev, "secrets.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dev secrets: %w", err)
	}
	// cluster's secrets.json: zone -> base64 key; the key id is <zone>-dev-1.
	var s struct {
		ZoneKeys map[string]string `json:"zone_keys"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("dev secrets %s: %w", path, err)
	}
	raw, err := base64.StdEncoding.DecodeString(s.ZoneKeys[zone])
	if err != nil || len(raw) != keystore.KeySize {
		return nil, fmt.Errorf("dev secrets %s: zone_keys.%s: must be base64 of %d bytes", path, zone, keystore.KeySize)
	}
	zk := keystore.ZoneKey{ID: zone + "-dev-1"}
	copy(zk.Key[:], raw)
	return map[string]keystore.ZoneKey{zone: zk}, nil
}

// printJSON writes v indented.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// exitFindings is the exit status of verify and status when they find
// something (1 is an error, 2 a bad command line).
const exitFindings = 3
