// Embedded topology (for doc.go): Embedded runs a whole multi-region NATS
// deployment inside one process for `meridian dev` and the tests. A hub
// nats-server without JetStream listens for leaf-node connections; every
// region is its own nats-server with JetStream in its own domain (the region
// name unless configured), a store under <dir>/nats/<region>, and one leaf
// remote to the hub that goes through the region's LinkProxy, so a test can
// add WAN delay to the link or cut it. Everything listens on 127.0.0.1 only.
// Ports are chosen by the OS on first start and kept in <dir>/ports.json, so
// a region, the hub or the whole topology restarts on the same ports with the
// same data. Production connects to NATS by URL; nothing else in meridian
// knows about Embedded.

package region

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

var (
	// ErrEmbeddedClosed is returned by every operation after Close.
	ErrEmbeddedClosed = errors.New("region: embedded topology closed")
	// ErrNotEmbedded is returned for a region the topology was not started with.
	ErrNotEmbedded = errors.New("region: not a region of the embedded topology")
	// ErrInvalidEmbeddedConfig is wrapped by every *EmbeddedConfigError.
	ErrInvalidEmbeddedConfig = errors.New("region: invalid embedded config")
)

const (
	// embeddedDefaultWait bounds a start when the caller's context has no deadline.
	embeddedDefaultWait = 30 * time.Second
	// embeddedPortGrace is how long StartEmbedded waits for a port remembered
	// in ports.json before it takes a new one; a restart of one server never
	// moves (clients hold its URL) and waits for its context instead.
	embeddedPortGrace = 2 * time.Second
	// embeddedListenWait bounds one server's wait for its listeners.
	embeddedListenWait = 5 * time.Second
	// embeddedLeafReconnect is how often a region redials the hub; the
	// server's default (1 s) would make every restart test a second slower.
	embeddedLeafReconnect = 250 * time.Millisecond
	// embeddedLinkHandshake bounds each step of a leaf handshake. The defaults
	// (1 s for the hub's INFO, 2 s for the CONNECT) would keep a link with a
	// large simulated delay from ever connecting; a cut link is not slowed by
	// it, since Restore closes the blackholed connections.
	embeddedLinkHandshake = 10 * time.Second
	embeddedHubName       = "meridian-hub"
)

// Names become JetStream domains, server names and directory names; the rules
// match the policy's region names and domains.
var (
	embRegionNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	embDomainRE     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// EmbeddedConfig configures StartEmbedded.
type EmbeddedConfig struct {
	// Dir is the data directory: JetStream stores live in Dir/nats/<region>
	// and the chosen ports in Dir/ports.json. Required; created if missing.
	Dir string
	// Regions are the region names, e.g. us-east, eu-west, eu-central. Required.
	Regions []string
	// Domains maps a region to its JetStream domain; default the region name.
	Domains map[string]string
	// WANDelay is the one-way delay each region's link proxy adds to its leaf
	// connection (0 = none). A message from one region to another crosses two
	// links (region→hub→region), so it is delayed by twice WANDelay.
	WANDelay time.Duration
	// Users holds one user per region, installed on that region's server (in
	// the global account, where JetStream and the leaf connection live; the
	// user's Account must be nil). When nil, the regions require no auth.
	// When set, the hub requires generated credentials too (see HubURL).
	Users map[string]*server.User
	// Logger receives the servers' and proxies' logs. Default: discard.
	Logger *slog.Logger
}

// EmbeddedConfigError is one broken rule of an EmbeddedConfig.
type EmbeddedConfigError struct {
	Field string // e.g. "Regions[1]"
	Rule  string // what the value must be
}

func (e *EmbeddedConfigError) Error() string {
	return fmt.Sprintf("region: embedded config: %s: %s", e.Field, e.Rule)
}

func (e *EmbeddedConfigError) Unwrap() error { return ErrInvalidEmbeddedConfig }

// validate returns every broken rule, joined.
func (c *EmbeddedConfig) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &EmbeddedConfigError{Field: field, Rule: fmt.Sprintf(format, args...)})
	}
	if c.Dir == "" {
		bad("Dir", "required: the data directory for stores and ports.json")
	}
	if len(c.Regions) == 0 {
		bad("Regions", "required: at least one region")
	}
	seen := map[string]bool{}
	for i, r := range c.Regions {
		field := fmt.Sprintf("Regions[%d]", i)
		switch {
		case !embRegionNameRE.MatchString(r):
			bad(field, "%q must match %s", r, embRegionNameRE)
		case seen[r]:
			bad(field, "%q is a duplicate", r)
		}
		seen[r] = true
	}
	domains := map[string]string{}
	for _, r := range c.Regions {
		d := r
		if v, ok := c.Domains[r]; ok {
			d = v
		}
		if other, dup := domains[d]; dup && other != r {
			bad("Domains["+r+"]", "domain %q is already the domain of region %q", d, other)
		}
		domains[d] = r
	}
	for _, r := range embSortedKeys(c.Domains) {
		if !seen[r] {
			bad("Domains["+r+"]", "not one of Regions")
		}
		if !embDomainRE.MatchString(c.Domains[r]) {
			bad("Domains["+r+"]", "%q must match %s", c.Domains[r], embDomainRE)
		}
	}
	if c.WANDelay < 0 {
		bad("WANDelay", "%v must not be negative", c.WANDelay)
	}
	if c.Users != nil {
		for _, r := range embSortedKeys(c.Users) {
			if !seen[r] {
				bad("Users["+r+"]", "not one of Regions")
			}
		}
		for _, r := range c.Regions {
			u := c.Users[r]
			switch {
			case u == nil:
				bad("Users["+r+"]", "required: a user for every region when Users is set")
			case u.Username == "":
				bad("Users["+r+"].Username", "required")
			case u.Account != nil:
				bad("Users["+r+"].Account", "must be nil: users live in the global account")
			}
		}
	}
	return errors.Join(errs...)
}

func embSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Embedded is a running in-process topology; see EmbeddedConfig. Its methods
// are safe for concurrent use; starts and stops are serialised.
type Embedded struct {
	cfg     EmbeddedConfig
	log     *slog.Logger
	domains map[string]string
	ports   embeddedPorts         // fixed once StartEmbedded returns
	links   map[string]*LinkProxy // fixed once StartEmbedded returns
	auth    embeddedAuth

	// linkCtx lives until Close: the proxies outlive StartEmbedded's context.
	linkCtx    context.Context
	linkCancel context.CancelFunc

	// lifecycle serialises starts, stops and Close, which take seconds; mu
	// guards only the state they swap, so lookups never wait for them.
	lifecycle sync.Mutex
	mu        struct {
		sync.Mutex
		hub     *server.Server
		regions map[string]*server.Server // nil while stopped
		closed  bool
	}
}

// embeddedAuth holds the hub's generated credentials (used only when
// EmbeddedConfig.Users is set): one for clients of the hub, one for leaves.
type embeddedAuth struct {
	enabled                bool
	adminUser, adminPass   string
	leafUser, leafPassword string
}

// StartEmbedded starts the hub, a link proxy per region and every region, and
// returns when each region's JetStream is enabled and every leaf connection is
// up with the JetStream API of every other domain reachable through the hub.
// ctx bounds the start (30 s if it has no deadline); it does not bound the
// topology's life, which ends with Close.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// Keep our own copies: the caller may reuse its slices, maps and users.
	cfg.Regions = slices.Clone(cfg.Regions)
	cfg.Domains = maps.Clone(cfg.Domains)
	if cfg.Users != nil {
		users := make(map[string]*server.User, len(cfg.Users))
		for r, u := range cfg.Users {
			cp := *u
			users[r] = &cp
		}
		cfg.Users = users
	}
	e := &Embedded{cfg: cfg, log: cfg.Logger, domains: map[string]string{}, links: map[string]*LinkProxy{}}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range cfg.Regions {
		e.domains[r] = r
		if d, ok := cfg.Domains[r]; ok {
			e.domains[r] = d
		}
	}
	e.mu.regions = map[string]*server.Server{}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("region: embedded dir: %w", err)
	}
	saved, err := loadEmbeddedPorts(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if cfg.Users != nil {
		e.auth = embeddedAuth{enabled: true, adminUser: "meridian-hub-admin", adminPass: embSecret(),
			leafUser: "meridian-leaf", leafPassword: embSecret()}
	}
	e.linkCtx, e.linkCancel = context.WithCancel(context.WithoutCancel(ctx))

	ctx, cancel := embWithDefaultDeadline(ctx)
	defer cancel()
	if err := e.startAll(ctx, saved); err != nil {
		_ = e.Close()
		return nil, err
	}
	return e, nil
}

func (e *Embedded) startAll(ctx context.Context, saved embeddedPorts) error {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()

	e.ports.Regions = map[string]embeddedRegionPorts{}
	hub, err := e.launch(ctx, "hub", []int{saved.Hub.Client, saved.Hub.Leafnode}, true, e.hubOptions)
	if err != nil {
		return err
	}
	e.setHub(hub)
	e.ports.Hub = embeddedHubPorts{Client: embClientPort(hub), Leafnode: embLeafPort(hub)}
	if e.ports.Hub.Client == 0 || e.ports.Hub.Leafnode == 0 {
		return fmt.Errorf("region: start hub: cannot read its ports (client %d, leafnode %d)", e.ports.Hub.Client, e.ports.Hub.Leafnode)
	}
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(e.ports.Hub.Leafnode))

	for _, r := range e.cfg.Regions {
		link, err := e.openLink(ctx, r, saved.Regions[r].Link, target)
		if err != nil {
			return err
		}
		e.links[r] = link
		e.ports.Regions[r] = embeddedRegionPorts{Link: link.Port()}
	}
	for _, r := range e.cfg.Regions {
		srv, err := e.launch(ctx, "region "+r, []int{saved.Regions[r].Client}, true, e.regionOptions(r))
		if err != nil {
			return err
		}
		e.setRegion(r, srv)
		rp := e.ports.Regions[r]
		rp.Client = embClientPort(srv)
		e.ports.Regions[r] = rp
	}
	if err := saveEmbeddedPorts(e.cfg.Dir, e.ports); err != nil {
		return err
	}
	return e.waitReady(ctx)
}

// openLink starts a region's link proxy on its remembered port, or on a new
// one if that stays busy (only at StartEmbedded: nothing holds its URL yet).
func (e *Embedded) openLink(ctx context.Context, region string, port int, target string) (*LinkProxy, error) {
	cfg := LinkConfig{Target: target, Delay: e.cfg.WANDelay, Logger: e.log.With("region", region)}
	if port > 0 {
		gctx, cancel := context.WithTimeout(ctx, embeddedPortGrace)
		err := waitPortsFree(gctx, port)
		cancel()
		if err == nil {
			cfg.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			link, err := NewLinkProxy(e.linkCtx, cfg)
			if err == nil {
				return link, nil
			}
			err = fmt.Errorf("region %s: link: %w", region, err)
			e.log.Warn("remembered link port unusable, choosing a new one", "region", region, "port", port, "err", err)
		} else {
			e.log.Warn("remembered link port busy, choosing a new one", "region", region, "port", port)
		}
		cfg.Listen = ""
	}
	link, err := NewLinkProxy(e.linkCtx, cfg)
	if err != nil {
		return nil, fmt.Errorf("region %s: link: %w", region, err)
	}
	return link, nil
}

// launch starts one server on the given ports (0 = let the OS choose) and
// waits for its listeners. A remembered port that is busy is waited for; if
// mayMove, only for a grace period, after which the OS picks new ports.
func (e *Embedded) launch(ctx context.Context, what string, ports []int, mayMove bool, build func(ports []int) *server.Options) (*server.Server, error) {
	if embAnyFixed(ports) {
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if mayMove {
			wctx, cancel = context.WithTimeout(ctx, embeddedPortGrace)
		}
		err := waitPortsFree(wctx, ports...)
		cancel()
		switch {
		case err == nil:
		case mayMove && ctx.Err() == nil:
			e.log.Warn("remembered ports busy, choosing new ones", "server", what, "ports", ports, "err", err)
			ports = make([]int, len(ports))
		default:
			return nil, fmt.Errorf("region: start %s: %w", what, err)
		}
	}
	backoff := 20 * time.Millisecond
	for {
		natsPorts := make([]int, len(ports))
		for i, p := range ports {
			natsPorts[i] = p
			if p == 0 {
				natsPorts[i] = server.RANDOM_PORT
			}
		}
		opts := build(natsPorts)
		srv, err := server.NewServer(opts)
		if err != nil {
			return nil, fmt.Errorf("region: start %s: %w", what, err)
		}
		logger := &embNATSLogger{l: e.log.With("server", what)}
		srv.SetLoggerV2(logger, false, false, false)
		srv.Start()
		// Poll in short steps: a fatal error stops the start before the
		// listeners, and should not cost the whole wait.
		ready := false
		for end := time.Now().Add(embeddedListenWait); !ready && time.Now().Before(end); {
			if _, failed := logger.fatal(); failed {
				break
			}
			ready = srv.ReadyForConnections(50 * time.Millisecond)
		}
		fatal, failed := logger.fatal()
		if ready && !failed {
			return srv, nil
		}
		srv.Shutdown()
		srv.WaitForShutdown()
		// A fatal error (the store, a limit) does not heal by waiting, unless
		// it is a remembered port that someone took between probe and bind.
		label := what
		if opts.StoreDir != "" {
			label += " (store " + opts.StoreDir + ")"
		}
		if failed && !embAnyFixed(ports) {
			return nil, fmt.Errorf("region: start %s: %s", label, fatal)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if !failed {
				fatal = "listeners not ready"
			}
			return nil, fmt.Errorf("region: start %s on ports %v: %s: %w", label, ports, fatal, ctx.Err())
		}
		backoff = min(2*backoff, time.Second)
	}
}

func embAnyFixed(ports []int) bool {
	for _, p := range ports {
		if p > 0 {
			return true
		}
	}
	return false
}

// hubOptions builds fresh options for each start, as the server keeps and
// mutates the ones it is given.
func (e *Embedded) hubOptions(ports []int) *server.Options {
	o := &server.Options{
		ServerName: embeddedHubName,
		Host:       "127.0.0.1",
		Port:       ports[0],
		NoSigs:     true,
		LeafNode: server.LeafNodeOpts{
			Host: "127.0.0.1",
			Port: ports[1],
			// Loopback: compression would only spend the two cores.
			Compression: server.CompressionOpts{Mode: server.CompressionOff},
			// The CONNECT crosses a link that may be delayed: allow for it.
			AuthTimeout: embeddedLinkHandshake.Seconds(),
			// Regions must reach the hub only through their link proxy.
			// Without this the hub gossips its real leafnode URL in the
			// INFO and a region whose link is cut reconnects around the
			// proxy, so a partition would not hold.
			NoAdvertise: true,
		},
	}
	if e.auth.enabled {
		o.Users = []*server.User{{Username: e.auth.adminUser, Password: e.auth.adminPass}}
		o.LeafNode.Username = e.auth.leafUser
		o.LeafNode.Password = e.auth.leafPassword
	}
	return o
}

func (e *Embedded) regionOptions(region string) func(ports []int) *server.Options {
	return func(ports []int) *server.Options {
		remote := &url.URL{Scheme: "nats", Host: e.links[region].Addr()}
		if e.auth.enabled {
			remote.User = url.UserPassword(e.auth.leafUser, e.auth.leafPassword)
		}
		o := &server.Options{
			ServerName:             "meridian-" + region,
			Host:                   "127.0.0.1",
			Port:                   ports[0],
			NoSigs:                 true,
			JetStream:              true,
			JetStreamDomain:        e.domains[region],
			StoreDir:               filepath.Join(e.cfg.Dir, "nats", region),
			DisableJetStreamBanner: true,
			// A short lame duck for StopRegion: one server has nowhere to
			// move its clients, so the default two minutes buy nothing.
			LameDuckDuration:    500 * time.Millisecond,
			LameDuckGracePeriod: 100 * time.Millisecond,
			LeafNode: server.LeafNodeOpts{
				ReconnectInterval: embeddedLeafReconnect,
				Remotes: []*server.RemoteLeafOpts{{
					URLs:             []*url.URL{remote},
					Compression:      server.CompressionOpts{Mode: server.CompressionOff},
					FirstInfoTimeout: embeddedLinkHandshake,
				}},
			},
		}
		if u := e.cfg.Users[region]; u != nil {
			cp := *u // the server keeps what it is given; hand it a copy per start
			o.Users = []*server.User{&cp}
		}
		return o
	}
}

func embClientPort(srv *server.Server) int {
	if a, ok := srv.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

func embLeafPort(srv *server.Server) int {
	v, err := srv.Varz(nil)
	if err != nil {
		return 0
	}
	return v.LeafNode.Port
}

func (e *Embedded) setHub(srv *server.Server) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mu.hub = srv
}

func (e *Embedded) setRegion(region string, srv *server.Server) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mu.regions[region] = srv
}

// waitReady polls until readyLocked holds or ctx ends.
func (e *Embedded) waitReady(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		e.mu.Lock()
		why := e.notReadyLocked()
		e.mu.Unlock()
		if why == "" {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("region: embedded topology not ready: %s: %w", why, ctx.Err())
		}
	}
}

// notReadyLocked says what is not ready yet, or "" when every running region
// has JetStream, and every region whose link is neither cut nor facing a
// stopped hub has its leaf connection up and sees the JetStream API of the
// other such regions.
func (e *Embedded) notReadyLocked() string {
	var linked []string
	for _, r := range e.cfg.Regions {
		srv := e.mu.regions[r]
		if srv == nil {
			continue
		}
		if !srv.JetStreamEnabled() {
			return "region " + r + ": JetStream not enabled"
		}
		if e.mu.hub == nil || e.links[r].IsCut() {
			continue
		}
		if srv.NumLeafNodes() < 1 {
			return "region " + r + ": leaf connection to the hub not up"
		}
		linked = append(linked, r)
	}
	if e.mu.hub != nil && e.mu.hub.NumLeafNodes() < len(linked) {
		return fmt.Sprintf("hub: %d of %d leaf connections up", e.mu.hub.NumLeafNodes(), len(linked))
	}
	for _, r := range linked {
		acc := e.mu.regions[r].GlobalAccount()
		for _, d := range linked {
			if d == r {
				continue
			}
			if subj := "$JS." + e.domains[d] + ".API.INFO"; !acc.SubscriptionInterest(subj) {
				return "region " + r + ": no route to domain " + e.domains[d]
			}
		}
	}
	return ""
}

// ClientURL returns the NATS client URL of a region (without credentials),
// or "" for an unknown region. It stays the same across restarts.
func (e *Embedded) ClientURL(region string) string {
	p, ok := e.ports.Regions[region]
	if !ok {
		return ""
	}
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Client))
}

// HubURL returns the hub's client URL. When EmbeddedConfig.Users is set it
// carries the hub's generated admin credentials: treat it as a secret.
func (e *Embedded) HubURL() string {
	u := url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(e.ports.Hub.Client))}
	if e.auth.enabled {
		u.User = url.UserPassword(e.auth.adminUser, e.auth.adminPass)
	}
	return u.String()
}

// Domain returns a region's JetStream domain, or "" for an unknown region.
func (e *Embedded) Domain(region string) string { return e.domains[region] }

// Regions returns the regions in configuration order.
func (e *Embedded) Regions() []string { return append([]string(nil), e.cfg.Regions...) }

// Dir returns the data directory.
func (e *Embedded) Dir() string { return e.cfg.Dir }

// Link returns the proxy on a region's leaf connection, or nil for an unknown region.
func (e *Embedded) Link(region string) *LinkProxy { return e.links[region] }

// Server returns a region's running server, or nil if it is stopped or
// unknown. For tests.
func (e *Embedded) Server(region string) *server.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mu.regions[region]
}

// Hub returns the running hub server, or nil if it is stopped. For tests.
func (e *Embedded) Hub() *server.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mu.hub
}

// checkRegion reports ErrEmbeddedClosed or ErrNotEmbedded.
func (e *Embedded) checkRegion(region string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed {
		return ErrEmbeddedClosed
	}
	if _, ok := e.domains[region]; !ok {
		return fmt.Errorf("%w: %q", ErrNotEmbedded, region)
	}
	return nil
}

func (e *Embedded) takeRegion(region string) *server.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	srv := e.mu.regions[region]
	e.mu.regions[region] = nil
	return srv
}

// StopRegion shuts a region's server down in lame-duck mode (clients are
// told, then closed) and waits. Its store and ports are kept for StartRegion.
// Stopping a stopped region does nothing.
func (e *Embedded) StopRegion(region string) error {
	return e.stopRegion(region, true)
}

// KillRegion shuts a region's server down at once, without lame duck, for
// fault tests. (In-process, the store is still closed cleanly; durability
// against SIGKILL needs a child process.)
func (e *Embedded) KillRegion(region string) error {
	return e.stopRegion(region, false)
}

func (e *Embedded) stopRegion(region string, lameDuck bool) error {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	if err := e.checkRegion(region); err != nil {
		return err
	}
	srv := e.takeRegion(region)
	if srv == nil {
		return nil
	}
	if lameDuck {
		srv.LameDuckShutdown()
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	return nil
}

// StartRegion starts a stopped region again on the same ports and store, and
// returns when it is ready (as StartEmbedded). Starting a running region does
// nothing. ctx bounds the start (30 s if it has no deadline).
func (e *Embedded) StartRegion(ctx context.Context, region string) error {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	if err := e.checkRegion(region); err != nil {
		return err
	}
	if e.Server(region) != nil {
		return nil
	}
	ctx, cancel := embWithDefaultDeadline(ctx)
	defer cancel()
	srv, err := e.launch(ctx, "region "+region, []int{e.ports.Regions[region].Client}, false, e.regionOptions(region))
	if err != nil {
		return err
	}
	e.setRegion(region, srv)
	return e.waitReady(ctx)
}

// StopHub shuts the hub down and waits: every region keeps working alone.
func (e *Embedded) StopHub() error {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	e.mu.Lock()
	if e.mu.closed {
		e.mu.Unlock()
		return ErrEmbeddedClosed
	}
	hub := e.mu.hub
	e.mu.hub = nil
	e.mu.Unlock()
	if hub != nil {
		hub.Shutdown()
		hub.WaitForShutdown()
	}
	return nil
}

// StartHub starts a stopped hub on the same ports and returns when the
// regions' leaf connections are back. ctx bounds the start (30 s if it has no
// deadline).
func (e *Embedded) StartHub(ctx context.Context) error {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	e.mu.Lock()
	closed, running := e.mu.closed, e.mu.hub != nil
	e.mu.Unlock()
	if closed {
		return ErrEmbeddedClosed
	}
	if running {
		return nil
	}
	ctx, cancel := embWithDefaultDeadline(ctx)
	defer cancel()
	hub, err := e.launch(ctx, "hub", []int{e.ports.Hub.Client, e.ports.Hub.Leafnode}, false, e.hubOptions)
	if err != nil {
		return err
	}
	e.setHub(hub)
	return e.waitReady(ctx)
}

// Close stops every server and proxy and waits for them. It is idempotent.
func (e *Embedded) Close() error {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	e.mu.Lock()
	if e.mu.closed {
		e.mu.Unlock()
		return nil
	}
	e.mu.closed = true
	var servers []*server.Server
	for _, r := range e.cfg.Regions {
		if srv := e.mu.regions[r]; srv != nil {
			servers = append(servers, srv)
		}
		e.mu.regions[r] = nil
	}
	if e.mu.hub != nil {
		servers = append(servers, e.mu.hub)
		e.mu.hub = nil
	}
	e.mu.Unlock()
	for _, srv := range servers {
		srv.Shutdown()
	}
	for _, srv := range servers {
		srv.WaitForShutdown()
	}
	if e.linkCancel != nil {
		e.linkCancel()
	}
	var errs []error
	for _, r := range e.cfg.Regions {
		if l := e.links[r]; l != nil {
			errs = append(errs, l.Close())
		}
	}
	return errors.Join(errs...)
}

func embWithDefaultDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, embeddedDefaultWait)
}

func embSecret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// embNATSLogger routes nats-server logs to slog and remembers the last fatal
// message, which launch reports. Fatalf must not exit: the server calls it
// for a busy port, which launch handles by retrying.
type embNATSLogger struct {
	l  *slog.Logger
	mu struct {
		sync.Mutex
		fatal string
	}
}

// fatal returns the last fatal message and whether there was one.
func (n *embNATSLogger) fatal() (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.fatal, n.mu.fatal != ""
}

func (n *embNATSLogger) log(level slog.Level, format string, v []any) {
	if level < slog.LevelError && !n.l.Enabled(context.Background(), level) {
		return
	}
	n.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (n *embNATSLogger) Noticef(format string, v ...any) { n.log(slog.LevelInfo, format, v) }
func (n *embNATSLogger) Warnf(format string, v ...any)   { n.log(slog.LevelWarn, format, v) }
func (n *embNATSLogger) Errorf(format string, v ...any)  { n.log(slog.LevelError, format, v) }
func (n *embNATSLogger) Debugf(format string, v ...any)  { n.log(slog.LevelDebug, format, v) }
func (n *embNATSLogger) Tracef(format string, v ...any)  { n.log(slog.LevelDebug, format, v) }

func (n *embNATSLogger) Fatalf(format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	n.mu.Lock()
	n.mu.fatal = msg
	n.mu.Unlock()
	n.l.Error(msg)
}
