package keystore

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// archiveDir is the directory pebble.ArchiveCleaner moves obsolete files to.
const archiveDir = "archive"

// pebbleOptions configures Pebble so that no discarded file keeps key bytes:
//
//   - Cleaner is pebble.ArchiveCleaner. Pebble recycles obsolete WAL files
//     (renames them and overwrites them from the start, leaving the old tail)
//     unless the cleaner needs file contents, which ArchiveCleaner declares.
//     Pebble exports no other switch for recycling.
//   - FS is shredFS, which turns the cleaner's "move to archive/" into
//     "overwrite with zeros, fsync, unlink", and shreds every plain Remove.
//
// Bloom filters make the lookup of an identity the store holds no key for
// (every new identity the writer sees) cheap however many tables there are.
// Tables are not compressed: random keys do not compress, and a key must
// be stored as its own bytes for a scan of the files to prove it gone.
//
// The memtable and cache sizes are the Options' (defaulted).
func pebbleOptions(opts Options) *pebble.Options {
	o := &pebble.Options{
		FS:                          shredFS{FS: vfs.Default, archive: filepath.Join(opts.Dir, archiveDir)},
		Cleaner:                     pebble.ArchiveCleaner{},
		Logger:                      quietLogger{},
		MemTableSize:                opts.MemTableSize,
		MemTableStopWritesThreshold: MemTableStopWritesThreshold,
		Cache:                       opts.BlockCache, // nil: Pebble makes one of CacheSize
		CacheSize:                   opts.BlockCacheSize + MemTableStopWritesThreshold*int64(opts.MemTableSize),
	}
	// Level 0's options are inherited by the other levels.
	o.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	o.Levels[0].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
	return o
}

// shredFS overwrites files before they are deleted. Pebble only deletes or
// archives files it no longer needs (obsolete WALs, SSTables, manifests), so
// shredding costs a write of each discarded file.
type shredFS struct {
	vfs.FS
	archive string // <Dir>/archive, cleaned; only moves there are intercepted
}

// Remove shreds regular files before unlinking them.
func (fs shredFS) Remove(name string) error {
	if err := shred(name); err != nil {
		return err
	}
	return fs.FS.Remove(name)
}

// Rename into the archive directory is the cleaner discarding a file.
func (fs shredFS) Rename(oldname, newname string) error {
	if filepath.Dir(filepath.Clean(newname)) == fs.archive {
		return fs.Remove(oldname)
	}
	return fs.FS.Rename(oldname, newname)
}

// MkdirAll skips the archive directory: nothing is ever moved there.
func (fs shredFS) MkdirAll(dir string, perm os.FileMode) error {
	if filepath.Clean(dir) == fs.archive {
		return nil
	}
	return fs.FS.MkdirAll(dir, perm)
}

// ReuseForWrite never reuses: the contract allows creating newname instead,
// provided oldname is deleted. (Recycling is already off; this is a guard.)
func (fs shredFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if err := fs.Remove(oldname); err != nil {
		return nil, err
	}
	return fs.FS.Create(newname, category)
}

// Unwrap returns the wrapped filesystem.
func (fs shredFS) Unwrap() vfs.FS { return fs.FS }

// shred overwrites a regular file with zeros and syncs it. Directories and
// missing files are left to Remove.
func shred(name string) error {
	fi, err := os.Lstat(name)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return nil
	}
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("keystore: shred %s: %w", name, err)
	}
	zeros := make([]byte, 64<<10)
	for off := int64(0); off < fi.Size(); off += int64(len(zeros)) {
		n := min(int64(len(zeros)), fi.Size()-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			f.Close()
			return fmt.Errorf("keystore: shred %s: %w", name, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("keystore: shred %s: %w", name, err)
	}
	return f.Close()
}

// quietLogger drops Pebble's informational messages (a library should not
// chatter on stderr) and keeps its background errors and fatal errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	pebble.DefaultLogger.Errorf(format, args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	pebble.DefaultLogger.Fatalf(format, args...)
}
