package bench

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"

	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/node"
	"github.com/meridian-id/meridian/writer"
)

// scratch is a writer over a log and key store of its own, configured as
// a node of the deployment configures its own (same log options, one
// shared block cache of the node's default size, policy, zone key and hash
// key), so the write path is measured without the shipper and the other
// regions working on the same cores.
type scratch struct {
	cache *pebble.Cache
	log   *eventlog.Log
	keys  *keystore.Store
	w     *writer.Writer
}

// scratchOptions are the options of a scratch's log and key store in dir,
// sharing cache.
func scratchOptions(dir string, cache *pebble.Cache) (eventlog.Options, keystore.Options) {
	return eventlog.Options{Dir: filepath.Join(dir, "log"), Stamp: writer.StampSequence, BlockCache: cache},
		keystore.Options{Dir: filepath.Join(dir, "keys"), BlockCache: cache}
}

// scratchPebbleBudget is the Pebble memory budget of a scratch, the size
// of its shared cache (as node.Node.PebbleBudget): the node's default room
// for blocks plus its databases' memtables.
func scratchPebbleBudget() int64 {
	lo, ko := scratchOptions("", nil)
	_, lm := lo.PebbleBudget()
	_, km := ko.PebbleBudget()
	return node.DefaultPebbleCacheBytes + lm + km
}

func openScratch(dir string, c *cluster.Cluster, regionName string) (_ *scratch, err error) {
	s := &scratch{}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	s.cache = pebble.NewCache(scratchPebbleBudget())
	lo, ko := scratchOptions(dir, s.cache)
	if s.log, err = eventlog.Open(lo); err != nil {
		return nil, fmt.Errorf("bench: scratch log: %w", err)
	}
	if s.keys, err = keystore.Open(ko); err != nil {
		return nil, fmt.Errorf("bench: scratch keys: %w", err)
	}
	if s.w, err = writer.New(writer.Config{
		Region:   regionName,
		Node:     "bench-" + regionName,
		Topology: c.Policy,
		Log:      s.log,
		Keys:     s.keys,
		ZoneKeys: c.ZoneKeys(regionName),
		HashKey:  c.HashKey(),
	}); err != nil {
		return nil, fmt.Errorf("bench: scratch writer: %w", err)
	}
	return s, nil
}

func (s *scratch) Close() error {
	var errs []error
	if s.keys != nil {
		errs = append(errs, s.keys.Close())
	}
	if s.log != nil {
		errs = append(errs, s.log.Close())
	}
	if s.cache != nil {
		s.cache.Unref()
		s.cache = nil
	}
	return errors.Join(errs...)
}
