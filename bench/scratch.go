package bench

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/meridian-id/meridian/cluster"
	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/writer"
)

// scratch is a writer over a log and key store of its own, configured as
// a node of the deployment configures its own (same log options, policy,
// zone key and hash key), so the write path is measured without the
// shipper and the other regions working on the same cores.
type scratch struct {
	log  *eventlog.Log
	keys *keystore.Store
	w    *writer.Writer
}

func openScratch(dir string, c *cluster.Cluster, regionName string) (_ *scratch, err error) {
	s := &scratch{}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if s.log, err = eventlog.Open(eventlog.Options{Dir: filepath.Join(dir, "log"), Stamp: writer.StampSequence}); err != nil {
		return nil, fmt.Errorf("bench: scratch log: %w", err)
	}
	if s.keys, err = keystore.Open(keystore.Options{Dir: filepath.Join(dir, "keys")}); err != nil {
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
	return errors.Join(errs...)
}
