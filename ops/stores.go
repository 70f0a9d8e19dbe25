package ops

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/projector"
	"github.com/meridian-id/meridian/writer"
)

// A node's data directory (node.Config.Dir) holds log/, keys/, model/ and
// node-id. Offline operations open those stores themselves, so the node
// must be stopped: Pebble's directory lock tells.

// Names inside a node's data directory.
const (
	LogDir    = "log"
	KeysDir   = "keys"
	ModelDir  = "model"
	NodeIDRel = "node-id"
)

// checkNotInUse fails with ErrNodeRunning when a Pebble store in dir is
// open (its LOCK is held); a missing dir is not in use.
func checkNotInUse(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	l, err := vfs.Default.Lock(filepath.Join(dir, "LOCK"))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNodeRunning, dir, err)
	}
	return l.Close()
}

// NodeRunning reports whether a node has the stores of dataDir open (its
// read model's Pebble lock is held): it runs on this host.
func NodeRunning(dataDir string) bool {
	return errors.Is(checkNotInUse(filepath.Join(dataDir, ModelDir)), ErrNodeRunning)
}

func openKeys(dir string) (*keystore.Store, error) { return openKeysCache(dir, 0) }

// openKeysCache opens a key store caching the keys of up to cache
// identities (0: the key store's default).
func openKeysCache(dir string, cache int) (*keystore.Store, error) {
	if err := checkNotInUse(dir); err != nil {
		return nil, err
	}
	return keystore.Open(keystore.Options{Dir: dir, CacheEntries: cache})
}

func openModel(dir string, keys projector.KeyStore) (*projector.Model, error) {
	if err := checkNotInUse(dir); err != nil {
		return nil, err
	}
	// A swap a crash interrupted is settled first (a no-op without one).
	if _, err := projector.RecoverSwap(dir); err != nil {
		return nil, err
	}
	return projector.OpenModel(dir, keys, nil)
}

// openLog opens a stopped node's log. stamp selects the writer's sequence
// stamp (for logs the node will append to through this handle); imports
// of records that are already stamped open it without.
func openLog(dir string, stamp bool) (*eventlog.Log, error) {
	if err := checkNotInUse(dir); err != nil {
		return nil, err
	}
	opts := eventlog.Options{Dir: dir}
	if stamp {
		opts.Stamp = writer.StampSequence
	}
	return eventlog.Open(opts)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// syncDir makes renames in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
