package ops

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Conns holds one NATS connection per region, made on first use. Each
// region is reached at its own URL, where its JetStream domain is the
// local one: a region stays reachable whatever happens to the others.
// Safe for concurrent use.
type Conns struct {
	dep  *Deployment
	opts []nats.Option

	mu struct {
		sync.Mutex
		conns map[string]*nats.Conn
	}
}

// DefaultConnectTimeout bounds connecting to one region.
const DefaultConnectTimeout = 5 * time.Second

// Connect returns connections to the deployment's regions (made lazily);
// opts are added to every connection (credentials, TLS). Close them.
func (d *Deployment) Connect(opts ...nats.Option) *Conns {
	c := &Conns{dep: d, opts: opts}
	c.mu.conns = map[string]*nats.Conn{}
	return c
}

// JS returns a JetStream context of a region's domain.
func (c *Conns) JS(ctx context.Context, regionName string) (jetstream.JetStream, error) {
	nc, err := c.conn(ctx, regionName)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, &RegionError{Region: regionName, Op: "jetstream", Err: err}
	}
	return js, nil
}

func (c *Conns) conn(ctx context.Context, regionName string) (*nats.Conn, error) {
	r, ok := c.dep.Region(regionName)
	if !ok {
		return nil, invalidf("region", "%q is not a region of the deployment", regionName)
	}
	if r.NATS == "" {
		return nil, &RegionError{Region: regionName, Op: "connect", Err: fmt.Errorf("%w: no NATS URL known for the region", ErrUnreachable)}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if nc := c.mu.conns[regionName]; nc != nil && !nc.IsClosed() {
		return nc, nil
	}
	timeout := DefaultConnectTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(dl), time.Millisecond))
	}
	opts := append([]nats.Option{nats.Name("meridian ops " + regionName), nats.Timeout(timeout)}, c.opts...)
	nc, err := nats.Connect(r.NATS, opts...)
	if err != nil {
		return nil, &RegionError{Region: regionName, Op: "connect " + r.NATS, Err: fmt.Errorf("%w: %w", ErrUnreachable, err)}
	}
	c.mu.conns[regionName] = nc
	return nc, nil
}

// Close closes every connection.
func (c *Conns) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nc := range c.mu.conns {
		nc.Close()
	}
	c.mu.conns = map[string]*nats.Conn{}
}
