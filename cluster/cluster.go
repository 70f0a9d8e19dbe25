// Package cluster starts a whole meridian deployment on one machine: the
// embedded NATS topology (a hub and one JetStream domain per region, each
// behind a link proxy) and one node per region, with generated secrets. It
// is what `meridian dev`, the multi-region test suites and `meridian bench`
// run; production runs `meridian serve` per region against real NATS.
//
// Everything lives under Config.Dir (stores, ports, secrets), so a restart
// with the same Dir resumes where the last run stopped.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/node"
	"github.com/meridian-id/meridian/region"
)

// Config configures a local deployment.
type Config struct {
	// Dir holds everything (required; created if missing).
	Dir string
	// WANDelay is the one-way delay between two regions (default 0). Each
	// region's link proxy adds half of it, since region-to-region traffic
	// crosses two links (region → hub → region).
	WANDelay time.Duration
	// HTTPBasePort: region i (in policy order us-east, eu-west, eu-central)
	// listens on 127.0.0.1:HTTPBasePort+i. 0 lets the OS choose.
	HTTPBasePort int
	// HeartbeatInterval of every node (default node's default).
	HeartbeatInterval time.Duration
	// SourceStallAfter of every node's source watchdog (default node's
	// default; negative disables it).
	SourceStallAfter time.Duration
	// Logger (default: discarded).
	Logger *slog.Logger
	// PebbleCacheBytes of every node (node.Config.PebbleCacheBytes; 0:
	// the node's default).
	PebbleCacheBytes int64
}

// Cluster is a running local deployment.
type Cluster struct {
	cfg      Config
	Policy   *region.Policy
	Embedded *region.Embedded
	secrets  devSecrets

	mu struct {
		sync.Mutex
		nodes map[string]*node.Node
		addrs map[string]string // HTTP addresses, kept across node restarts
	}
}

// Endpoint is how to reach one region of the deployment.
type Endpoint struct {
	HTTP      string `json:"http"`
	NATS      string `json:"nats"`
	JetStream string `json:"jetstream_domain"`
	Zone      string `json:"zone"`
	Node      string `json:"node"`
}

// Regions of the development deployment, in start order.
var Regions = []string{region.DevUSEast, region.DevEUWest, region.DevEUCentral}

// Start starts the topology, provisions every region's streams, starts a
// node per region and returns once replication is live: every node's
// projector has applied a heartbeat sent by every region since Start began
// (unless heartbeats are disabled). ctx bounds all of it.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	began := time.Now().UnixMilli()
	if cfg.Dir == "" {
		return nil, errors.New("cluster: Config.Dir: required")
	}
	if cfg.WANDelay < 0 {
		return nil, fmt.Errorf("cluster: Config.WANDelay: must not be negative, got %s", cfg.WANDelay)
	}
	if cfg.HTTPBasePort < 0 || cfg.HTTPBasePort > 65535-len(Regions) {
		return nil, fmt.Errorf("cluster: Config.HTTPBasePort: must be 0 or a port below %d, got %d", 65535-len(Regions), cfg.HTTPBasePort)
	}
	if cfg.PebbleCacheBytes != 0 && cfg.PebbleCacheBytes < 1<<20 {
		return nil, fmt.Errorf("cluster: Config.PebbleCacheBytes: must be 0 (the node's default, %d) or at least 1 MiB, got %d", node.DefaultPebbleCacheBytes, cfg.PebbleCacheBytes)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c := &Cluster{cfg: cfg}
	c.mu.nodes = map[string]*node.Node{}
	c.mu.addrs = map[string]string{}
	if c.Embedded, err = region.StartEmbedded(ctx, region.EmbeddedConfig{
		Dir:      filepath.Join(cfg.Dir, "nats"),
		Regions:  Regions,
		WANDelay: cfg.WANDelay / 2,
		Logger:   cfg.Logger.With("component", "nats"),
	}); err != nil {
		return nil, fmt.Errorf("cluster: start NATS: %w", err)
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	urls := map[string]string{}
	for _, r := range Regions {
		urls[r] = c.Embedded.ClientURL(r)
	}
	pb := region.DevPolicyProto(urls)
	for i, r := range pb.Regions {
		if cfg.HTTPBasePort > 0 {
			r.HttpUrl = "http://127.0.0.1:" + strconv.Itoa(cfg.HTTPBasePort+i)
		}
	}
	if c.Policy, err = region.NewPolicy(pb); err != nil {
		return nil, fmt.Errorf("cluster: policy: %w", err)
	}
	if c.secrets, err = loadOrMakeSecrets(filepath.Join(cfg.Dir, "secrets.json"), c.Policy); err != nil {
		return nil, err
	}
	if err := c.provision(ctx); err != nil {
		return nil, err
	}
	for i, r := range Regions {
		addr := "127.0.0.1:0"
		if cfg.HTTPBasePort > 0 {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.HTTPBasePort+i))
		}
		c.mu.addrs[r] = addr
		if err := c.StartNode(ctx, r); err != nil {
			return nil, err
		}
	}
	for _, r := range Regions {
		if err := c.Node(r).WaitReady(ctx); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	if cfg.HeartbeatInterval >= 0 {
		if err := c.waitHeartbeats(ctx, began); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// provision creates or converges every region's streams before any node
// starts, in one run: region.Provision creates all origin streams before any
// inbox, so every inbox source finds its origin at once. (A source whose
// origin stream does not exist yet fails with "stream not found" and NATS
// tries again only after 10 s; nodes provisioning their own regions in
// parallel race into that.)
func (c *Cluster) provision(ctx context.Context) error {
	plan, err := region.Compile(c.Policy)
	if err != nil {
		return fmt.Errorf("cluster: compile policy: %w", err)
	}
	regionJS := map[string]jetstream.JetStream{}
	for _, r := range Regions {
		nc, err := nats.Connect(c.Embedded.ClientURL(r), nats.Name("meridian cluster provisioning "+r))
		if err != nil {
			return fmt.Errorf("cluster: provision %s: connect: %w", r, err)
		}
		defer nc.Close()
		if regionJS[r], err = jetstream.New(nc); err != nil {
			return fmt.Errorf("cluster: provision %s: %w", r, err)
		}
	}
	rep, err := region.Provision(ctx, plan, regionJS, region.ProvisionOptions{})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if rep.Changed() {
		c.cfg.Logger.Info("provisioned streams", "report", rep.String())
	}
	return nil
}

// waitHeartbeats waits until every node's projector has applied a heartbeat
// sent at or after since (unix ms) from every region.
func (c *Cluster) waitHeartbeats(ctx context.Context, since int64) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		missing := c.missingHeartbeats(since)
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: replication not live: no fresh heartbeat %s: %w", strings.Join(missing, ", "), ctx.Err())
		case <-t.C:
		}
	}
}

func (c *Cluster) missingHeartbeats(since int64) []string {
	var missing []string
	for _, r := range Regions {
		n := c.Node(r)
		if n == nil {
			missing = append(missing, "in "+r+" (no node)")
			continue
		}
		fresh := map[string]bool{}
		for _, o := range n.Projector().Status().Origins {
			if o.Heartbeat != nil && o.Heartbeat.SentAtUnixMs >= since {
				fresh[o.Region] = true
			}
		}
		for _, origin := range Regions {
			if !fresh[origin] {
				missing = append(missing, "in "+r+" from "+origin)
			}
		}
	}
	return missing
}

// StartNode starts (or restarts) the node of a region on its data dir and
// HTTP address.
func (c *Cluster) StartNode(ctx context.Context, r string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.nodes[r] != nil {
		return fmt.Errorf("cluster: node of %s is running", r)
	}
	n, err := node.Start(ctx, node.Config{
		Region:            r,
		Policy:            c.Policy,
		Dir:               c.NodeDir(r),
		HTTPAddr:          c.mu.addrs[r],
		ZoneKeys:          c.secrets.zoneKeysFor(c.Policy, r),
		HashKey:           c.secrets.HashKey,
		HeartbeatInterval: c.cfg.HeartbeatInterval,
		SourceStallAfter:  c.cfg.SourceStallAfter,
		Logger:            c.cfg.Logger.With("region", r),
		PebbleCacheBytes:  c.cfg.PebbleCacheBytes,
	})
	if err != nil {
		return fmt.Errorf("cluster: start node %s: %w", r, err)
	}
	c.mu.nodes[r] = n
	c.mu.addrs[r] = n.HTTPAddr() // a restart keeps an OS-chosen port
	return nil
}

// StopNode stops the node of a region (its NATS server keeps running).
func (c *Cluster) StopNode(r string) error {
	c.mu.Lock()
	n := c.mu.nodes[r]
	delete(c.mu.nodes, r)
	c.mu.Unlock()
	if n == nil {
		return fmt.Errorf("cluster: node of %s is not running", r)
	}
	return n.Close()
}

// Node returns the running node of a region, or nil.
func (c *Cluster) Node(r string) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.nodes[r]
}

// NodeDir is the data dir of a region's node.
func (c *Cluster) NodeDir(r string) string { return filepath.Join(c.cfg.Dir, r) }

// HashKey is the deployment's HMAC key for email and username hashes.
func (c *Cluster) HashKey() []byte { return c.secrets.HashKey }

// ZoneKeys returns the zone keys a region holds.
func (c *Cluster) ZoneKeys(r string) map[string]keystore.ZoneKey {
	return c.secrets.zoneKeysFor(c.Policy, r)
}

// Endpoints describes every region, for scripts (endpoints.json).
func (c *Cluster) Endpoints() map[string]Endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]Endpoint{}
	for _, r := range Regions {
		zone, _ := c.Policy.ZoneOf(r)
		ep := Endpoint{NATS: c.Embedded.ClientURL(r), JetStream: c.Embedded.Domain(r), Zone: zone, HTTP: "http://" + c.mu.addrs[r]}
		if n := c.mu.nodes[r]; n != nil {
			ep.Node = n.ID()
		}
		out[r] = ep
	}
	return out
}

// WriteEndpoints writes Endpoints as JSON to path, atomically.
func (c *Cluster) WriteEndpoints(path string) error {
	return writeJSON(path, c.Endpoints(), 0o644)
}

// Close stops every node, then the topology.
func (c *Cluster) Close() error {
	c.mu.Lock()
	nodes := c.mu.nodes
	c.mu.nodes = map[string]*node.Node{}
	c.mu.Unlock()
	var errs []error
	for _, n := range nodes {
		errs = append(errs, n.Close())
	}
	if c.Embedded != nil {
		errs = append(errs, c.Embedded.Close())
	}
	return errors.Join(errs...)
}

// devSecrets are the deployment's generated keys, kept in Dir/secrets.json
// so that a restart can still read what it sealed.
type devSecrets struct {
	HashKey  []byte            `json:"hash_key"`
	ZoneKeys map[string][]byte `json:"zone_keys"` // zone → 32-byte key; id is "<zone>-dev-1"
}

func loadOrMakeSecrets(path string, p *region.Policy) (devSecrets, error) {
	var s devSecrets
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &s); err != nil {
			return s, fmt.Errorf("cluster: secrets %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		s.HashKey = random(32)
		s.ZoneKeys = map[string][]byte{}
	default:
		return s, fmt.Errorf("cluster: secrets: %w", err)
	}
	changed := err != nil
	for _, z := range p.Zones() {
		if len(s.ZoneKeys[z]) != keystore.KeySize {
			s.ZoneKeys[z] = random(keystore.KeySize)
			changed = true
		}
	}
	if changed {
		if err := writeJSON(path, s, 0o600); err != nil {
			return s, fmt.Errorf("cluster: secrets: %w", err)
		}
	}
	return s, nil
}

// zoneKeysFor returns only the key of the region's own zone: a region never
// holds another zone's key.
func (s devSecrets) zoneKeysFor(p *region.Policy, r string) map[string]keystore.ZoneKey {
	z, _ := p.ZoneOf(r)
	var zk keystore.ZoneKey
	zk.ID = z + "-dev-1"
	copy(zk.Key[:], s.ZoneKeys[z])
	return map[string]keystore.ZoneKey{z: zk}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func writeJSON(path string, v any, perm os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
