package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/node"
	"github.com/meridian-id/meridian/ops/inspect"
	"github.com/meridian-id/meridian/projector"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"github.com/meridian-id/meridian/region"
)

// Replay rebuilds a region's read model from its inbox stream.
//
// The model is built in a workspace directory (model/ inside it), through
// the projector's own apply path (projector.Rebuild), so a rebuilt model
// equals one that applied the same messages live. A replay interrupted by
// its context leaves the workspace behind, and the same call resumes it.
//
// Swapping into a running node (Node and Swap): the model is built in the
// workspace (on the node's file system) with a scratch key store, then the
// node is asked to swap it in (node.SwapRequest, POST /v1/admin/model/swap):
// it pauses its projector, catches the rebuilt model up from its inbox
// sequence to exactly the live one's, compares the two there (at the same
// position they must be equal: the verification), switches the
// directories crash-safely and resumes (projector.Swap). Reads are served
// throughout except during the switch itself. The workspace's scratch
// keys are deleted afterwards.
//
// Swapping offline (DataDir and Swap): stop the node, run the replay
// (the live model moves to model.replaced-<time> and the rebuilt one takes
// its place, two renames on one file system), start the node, which
// consumes on from the rebuilt model's inbox sequence. A workspace built
// while the node ran can be reused: the second run only applies what
// arrived since, restores the data keys the first run put into its scratch
// key store, verifies and swaps.
//
// Keys. A swap rebuilds with the node's own key store (keys arriving in
// the inbox are the node's keys anyway). Every other replay uses a scratch
// key store in the workspace (keys/), so that an investigation never puts
// keys into a node, and a point-in-time replay can never bring back the
// key of an identity erased after that time. The workspace then holds data
// keys: delete it when done.
//
// Verification compares the rebuilt model with the live one (the stopped
// node's model with DataDir, otherwise Live, a running node's admin API)
// by digests, GLOBAL and RESIDENT, and reports identities that differ,
// leaving out those the two did not cover alike: touched by inbox messages
// after the earlier of the two models' positions, or before FromSeq.
type ReplayConfig struct {
	// Region whose inbox is replayed, and its zone. Required.
	Region, Zone string
	// JS is a JetStream context of the region's domain. Required.
	JS jetstream.JetStream
	// Stream to replay (default region.InboxStream(Region)).
	Stream string
	// ZoneKeys unwrap the zone's data-key records. Required.
	ZoneKeys map[string]keystore.ZoneKey
	// DataDir is the node's data directory, of a stopped node. Optional;
	// Swap needs it or Node.
	DataDir string
	// Node is the region's running node, to swap into online (with Swap;
	// the Workspace must then be on the node's file system, e.g. inside
	// its data directory).
	Node *NodeClient
	// LiveTimeout bounds how long the node waits for its live model to
	// reach the rebuilt one's position before swapping (node default 1m).
	LiveTimeout time.Duration
	// Workspace is where the model is built (default DataDir/replay;
	// required without DataDir).
	Workspace string
	// FromSeq is the first inbox sequence applied (default the first).
	FromSeq uint64
	// Until, when set, builds the model as it was then: messages the
	// inbox stored later are not applied.
	Until time.Time
	// Swap puts the rebuilt model in place of DataDir's. Only a complete
	// replay (no FromSeq, no Until) may be swapped in.
	Swap bool
	// Live verifies against a running node when DataDir is not given.
	Live DigestSource
	// NoVerify skips the verification.
	NoVerify bool
	// Show lists identities whose rebuilt view the report includes (for
	// investigations).
	Show []string
	// CompareRaw also measures a raw ordered consume of the same stream
	// (projector.BenchRawConsume), the ceiling of the replay rate.
	CompareRaw bool
	// Progress receives progress reports (optional).
	Progress ProgressFunc
	// Logger (default: discarded).
	Logger *slog.Logger
	// BatchSize and ApplyWorkers tune the rebuild (projector.RebuildConfig
	// defaults). CacheEntries bounds both the rebuild's cache of decoded
	// states and the key store's cache of data keys, in identities (default
	// DefaultReplayCacheEntries): a replay whose identities fit in them
	// never reads a state or a key back from disk.
	BatchSize, ApplyWorkers, CacheEntries int
	// Now names the replaced model directory (default time.Now).
	Now func() time.Time
}

func (c *ReplayConfig) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) { errs = append(errs, invalidf(field, format, args...)) }
	if c.Region == "" {
		bad("Region", "required")
	}
	if c.Zone == "" {
		bad("Zone", "required")
	}
	if c.JS == nil {
		bad("JS", "required: a JetStream context of the region's domain")
	}
	if len(c.ZoneKeys) == 0 {
		bad("ZoneKeys", "required: the zone keys unwrap the inbox's data-key records")
	}
	if c.Stream == "" && c.Region != "" {
		c.Stream = region.InboxStream(c.Region)
	}
	if c.Workspace == "" {
		if c.DataDir == "" {
			bad("Workspace", "required without DataDir")
		} else {
			c.Workspace = filepath.Join(c.DataDir, "replay")
		}
	}
	if c.Workspace != "" {
		if abs, err := filepath.Abs(c.Workspace); err == nil {
			c.Workspace = abs
		}
	}
	if c.LiveTimeout < 0 {
		bad("LiveTimeout", "must not be negative")
	}
	if c.Node != nil && !c.Swap {
		bad("Node", "only used to swap into a running node (Swap)")
	}
	if c.Swap {
		switch {
		case c.DataDir == "" && c.Node == nil:
			bad("Swap", "needs Node (a running node to swap into) or DataDir (the data directory of a stopped node)")
		case c.DataDir != "" && c.Node != nil:
			bad("Swap", "either into a running node (Node) or into a stopped node's DataDir, not both")
		case c.FromSeq > 1:
			bad("Swap", "a replay from sequence %d lacks the events before it; only a complete replay can be swapped in", c.FromSeq)
		case !c.Until.IsZero():
			bad("Swap", "a point-in-time replay (Until) is for investigations; only a complete replay can be swapped in")
		}
	}
	if dd, err := filepath.Abs(c.DataDir); c.DataDir != "" && err == nil && filepath.Clean(c.Workspace) == filepath.Join(dd, ModelDir) {
		bad("Workspace", "must not be the node's live model directory")
	}
	if c.CacheEntries == 0 {
		c.CacheEntries = DefaultReplayCacheEntries
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return errors.Join(errs...)
}

// DefaultReplayCacheEntries is ReplayConfig.CacheEntries' default: twice
// the live projector's, about 128 MiB of data keys and a few hundred MiB
// of decoded states at most. BenchmarkReplay with 100 000 identities: 1.4x
// the rate of the projector's default (65536), which misses on every
// update when identities are touched round-robin.
const DefaultReplayCacheEntries = 1 << 17

// ReplayReport is what a replay did.
type ReplayReport struct {
	Region    string `json:"region"`
	Stream    string `json:"stream"`
	Workspace string `json:"workspace"`
	ModelDir  string `json:"model_dir"` // where the rebuilt model is now
	// KeyStore is "node" or the scratch key store's directory.
	KeyStore string                 `json:"key_store"`
	Stats    projector.RebuildStats `json:"stats"`
	// KeysRestored counts data keys a resumed swap put into the node's
	// key store from the inbox's key records (see ReplayConfig).
	KeysRestored int           `json:"keys_restored,omitempty"`
	Verify       []*Comparison `json:"verify,omitempty"`
	VerifyNote   string        `json:"verify_note,omitempty"`
	Swapped      bool          `json:"swapped"`
	// Online is the running node's account of an online swap.
	Online *node.SwapReport `json:"online,omitempty"`
	// Replaced is where the model that was swapped out went.
	Replaced   string                          `json:"replaced,omitempty"`
	Identities map[string]*meridianv1.Identity `json:"identities,omitempty"`
	// ShowErrors says why a Show identity is absent (not found, erased).
	ShowErrors       map[string]string `json:"show_errors,omitempty"`
	RawConsumePerSec float64           `json:"raw_consume_per_s,omitempty"`
}

// Verified reports whether verification ran and found no difference.
func (r *ReplayReport) Verified() bool {
	if len(r.Verify) == 0 {
		return false
	}
	for _, c := range r.Verify {
		if !c.Equal {
			return false
		}
	}
	return true
}

// workspaceMeta pins what a workspace is a replay of, so that a resume
// cannot silently continue a different replay.
type workspaceMeta struct {
	Region  string `json:"region"`
	Stream  string `json:"stream"`
	FromSeq uint64 `json:"from_seq"`
	Until   string `json:"until,omitempty"`
}

const workspaceMetaFile = "replay.json"

func (c *ReplayConfig) checkWorkspace() error {
	if err := os.MkdirAll(c.Workspace, 0o700); err != nil {
		return fmt.Errorf("ops: replay workspace: %w", err)
	}
	want := workspaceMeta{Region: c.Region, Stream: c.Stream, FromSeq: max(c.FromSeq, 1)}
	if !c.Until.IsZero() {
		want.Until = c.Until.UTC().Format(time.RFC3339Nano)
	}
	path := filepath.Join(c.Workspace, workspaceMetaFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var have workspaceMeta
		if err := json.Unmarshal(b, &have); err != nil {
			return fmt.Errorf("ops: replay workspace %s: %w", path, err)
		}
		if have != want {
			return invalidf("Workspace", "%s holds a replay of %+v, not of %+v: use another workspace or remove it", c.Workspace, have, want)
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		if exists(filepath.Join(c.Workspace, ModelDir)) {
			return invalidf("Workspace", "%s holds a model but no %s: not a replay workspace", c.Workspace, workspaceMetaFile)
		}
		b, _ := json.MarshalIndent(want, "", "  ")
		return os.WriteFile(path, append(b, '\n'), 0o600)
	default:
		return fmt.Errorf("ops: replay workspace: %w", err)
	}
}

// Replay runs a replay; see ReplayConfig. On interruption it returns the
// report so far and an error wrapping ErrInterrupted.
func Replay(ctx context.Context, cfg ReplayConfig) (*ReplayReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := cfg.checkWorkspace(); err != nil {
		return nil, err
	}
	rep := &ReplayReport{Region: cfg.Region, Stream: cfg.Stream, Workspace: cfg.Workspace, ModelDir: filepath.Join(cfg.Workspace, ModelDir)}
	if cfg.DataDir != "" {
		// Fail before the long part if the node still runs.
		for _, d := range []string{KeysDir, ModelDir} {
			if err := checkNotInUse(filepath.Join(cfg.DataDir, d)); err != nil {
				return nil, err
			}
		}
	}
	keysDir := filepath.Join(cfg.Workspace, KeysDir)
	rep.KeyStore = keysDir
	if cfg.Swap && cfg.Node == nil {
		keysDir, rep.KeyStore = filepath.Join(cfg.DataDir, KeysDir), "node"
	}
	keys, err := openKeysCache(keysDir, cfg.CacheEntries)
	if err != nil {
		return nil, err
	}
	keysOpen := true
	closeKeys := func() {
		if keysOpen {
			keys.Close()
			keysOpen = false
		}
	}
	defer closeKeys()

	m := newMeter(cfg.Progress, "replay", "rebuild", "messages", 0)
	stats, err := projector.Rebuild(ctx, projector.RebuildConfig{
		JS: cfg.JS, Stream: cfg.Stream, Dir: rep.ModelDir, FromSeq: cfg.FromSeq, Until: cfg.Until,
		Zone: cfg.Zone, Keys: keys, ZoneKeys: cfg.ZoneKeys, Logger: cfg.Logger,
		BatchSize: cfg.BatchSize, ApplyWorkers: cfg.ApplyWorkers, CacheEntries: cfg.CacheEntries,
		Progress: func(p projector.RebuildProgress) {
			// Total is the messages this call has to apply.
			m.setTotal(p.LastSeq - min(p.LastSeq, p.Seq) + p.Messages)
			m.update(p.Messages, fmt.Sprintf("seq %d of %d", p.Seq, p.LastSeq), false)
		},
	})
	rep.Stats = stats
	if err == nil {
		m.setTotal(stats.Messages)
		m.update(stats.Messages, fmt.Sprintf("seq %d of %d", stats.Reached, stats.LastSeq), true)
	}
	if err != nil {
		if ctx.Err() != nil {
			return rep, fmt.Errorf("%w at inbox seq %d of %d (run again to resume): %w", ErrInterrupted, stats.Reached, stats.LastSeq, err)
		}
		return rep, err
	}
	cfg.Logger.Info("replay: rebuilt", "stream", cfg.Stream, "messages", stats.Messages, "reached", stats.Reached, "per_s", stats.PerSec)

	built, err := openModel(rep.ModelDir, keys)
	if err != nil {
		return rep, err
	}
	closeBuilt := func() {
		if built != nil {
			built.Close()
			built = nil
		}
	}
	defer closeBuilt()

	if cfg.Swap && cfg.Node == nil && stats.Resumed {
		// The earlier part may have been built with a scratch key store:
		// make sure the node holds every key the model is sealed under.
		if rep.KeysRestored, err = restoreKeys(ctx, cfg.JS, cfg.Stream, cfg.Zone, stats.FirstSeq-1, cfg.ZoneKeys, keys, built); err != nil {
			return rep, err
		}
	}
	// Online, the node verifies at the same position (swapOnline).
	if !cfg.NoVerify && cfg.Node == nil {
		if err := cfg.verify(ctx, rep, built, keys); err != nil {
			return rep, err
		}
	}
	cfg.show(ctx, rep, built)
	if cfg.CompareRaw {
		if rep.RawConsumePerSec, err = projector.BenchRawConsume(ctx, cfg.JS, cfg.Stream); err != nil {
			return rep, fmt.Errorf("ops: replay: raw consume: %w", err)
		}
	}
	if !cfg.Swap {
		return rep, nil
	}
	closeBuilt()
	if cfg.Node != nil {
		closeKeys()
		return rep, cfg.swapOnline(ctx, rep, keysDir)
	}
	if rep.Replaced, err = swapModel(cfg.DataDir, rep.ModelDir, cfg.Now()); err != nil {
		return rep, err
	}
	rep.Swapped, rep.ModelDir = true, filepath.Join(cfg.DataDir, ModelDir)
	cfg.Logger.Info("replay: model swapped in", "dir", rep.ModelDir, "replaced", rep.Replaced)
	return rep, nil
}

// swapOnline asks the running node to swap the rebuilt model in; the
// node's comparison at the same inbox position is the verification.
func (c *ReplayConfig) swapOnline(ctx context.Context, rep *ReplayReport, keysDir string) error {
	m := newMeter(c.Progress, "replay", "swap into the running node", "steps", 1)
	verify := !c.NoVerify
	req := node.SwapRequest{Dir: rep.ModelDir, Verify: &verify}
	if c.LiveTimeout > 0 {
		req.LiveTimeout = c.LiveTimeout.String()
	}
	sr, err := c.Node.SwapModel(ctx, req)
	if err != nil {
		return fmt.Errorf("ops: replay: swap into the running node of %s (the rebuilt model stays in %s): %w", c.Region, rep.ModelDir, err)
	}
	m.update(1, fmt.Sprintf("caught up %d messages", sr.CaughtUp), true)
	rep.Online, rep.Swapped, rep.ModelDir, rep.Replaced = sr, true, sr.ModelDir, sr.Replaced
	for _, v := range sr.Verify {
		cmp := &Comparison{Kind: v.Kind, Scope: "at inbox seq " + strconv.FormatUint(v.InboxSeq, 10),
			Sources:    []string{"rebuilt", "live"},
			InboxSeq:   map[string]uint64{"rebuilt": v.InboxSeq, "live": v.InboxSeq},
			Identities: map[string]int{"rebuilt": v.Rebuilt, "live": v.Live},
			Roots:      map[string]string{}, Equal: v.Equal, Differences: []Difference{}}
		for _, id := range v.Differing {
			cmp.Differences = append(cmp.Differences, Difference{Identity: id, Bucket: inspect.BucketOf(id), Digests: map[string]string{}})
		}
		rep.Verify = append(rep.Verify, cmp)
	}
	if c.NoVerify {
		rep.VerifyNote = "verification skipped (NoVerify)"
	}
	// The scratch key store held data keys the node has anyway; an
	// investigation copy of them should not outlive the swap.
	if err := os.RemoveAll(keysDir); err != nil {
		c.Logger.Warn("replay: remove the workspace's scratch keys", "dir", keysDir, "err", err)
	} else {
		rep.KeyStore = "removed after the swap"
	}
	c.Logger.Info("replay: model swapped into the running node", "region", c.Region, "replaced", sr.Replaced, "caught_up", sr.CaughtUp)
	return nil
}

// verify compares the rebuilt model with the live one.
func (c *ReplayConfig) verify(ctx context.Context, rep *ReplayReport, built *projector.Model, keys *keystore.Store) error {
	var live DigestSource
	switch {
	case c.DataDir != "":
		liveDir := filepath.Join(c.DataDir, ModelDir)
		if !exists(liveDir) {
			rep.VerifyNote = "no live model in " + liveDir + " to compare with"
			return nil
		}
		liveKeys := keys
		if !c.Swap {
			// The rebuild used a scratch store; the live model's resident
			// states are sealed under the node's keys.
			nk, err := openKeys(filepath.Join(c.DataDir, KeysDir))
			if err != nil {
				return err
			}
			defer nk.Close()
			liveKeys = nk
		}
		lm, err := openModel(liveDir, liveKeys)
		if err != nil {
			return err
		}
		defer lm.Close()
		live = ModelSource{Label: "live", Model: lm}
	case c.Live != nil:
		live = c.Live
	default:
		rep.VerifyNote = "no live model given (DataDir or a running node) to compare with"
		return nil
	}
	sources := []DigestSource{ModelSource{Label: "rebuilt", Model: built}, live}
	m := newMeter(c.Progress, "replay", "verify", "kinds", 2)
	for i, kind := range []inspect.Kind{inspect.KindGlobal, inspect.KindResident} {
		cmp, err := Compare(ctx, kind, sources, CompareOptions{})
		if err != nil {
			return fmt.Errorf("ops: replay: verify: %w", err)
		}
		if err := c.excludeUncovered(ctx, cmp, live.Name()); err != nil {
			return err
		}
		rep.Verify = append(rep.Verify, cmp)
		m.update(uint64(i+1), string(kind), i == 1)
	}
	return nil
}

// excludeUncovered drops differences of identities the two models did not
// cover alike: touched by inbox messages between the two models'
// positions, or (with FromSeq) before the replay's first message.
func (c *ReplayConfig) excludeUncovered(ctx context.Context, cmp *Comparison, liveName string) error {
	if len(cmp.Differences) == 0 {
		return nil
	}
	a, b := cmp.InboxSeq["rebuilt"], cmp.InboxSeq[liveName]
	var ranges [][2]uint64
	if lo, hi := min(a, b), max(a, b); hi > lo {
		ranges = append(ranges, [2]uint64{lo + 1, hi})
	}
	if c.FromSeq > 1 {
		ranges = append(ranges, [2]uint64{1, c.FromSeq - 1})
	}
	if len(ranges) == 0 {
		return nil
	}
	doubt := map[string]bool{}
	for _, d := range cmp.Differences {
		doubt[d.Identity] = true
	}
	touched := map[string]bool{}
	for _, r := range ranges {
		_, err := scanStream(ctx, c.JS, c.Stream, scanRange{From: r[0], To: r[1]}, func(m StreamMsg) error {
			if id := messageIdentity(m); doubt[id] {
				touched[id] = true
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("ops: replay: verify: scan %s: %w", c.Stream, err)
		}
	}
	kept := cmp.Differences[:0]
	for _, d := range cmp.Differences {
		if touched[d.Identity] {
			cmp.Excluded++
			continue
		}
		kept = append(kept, d)
	}
	cmp.Differences = kept
	cmp.Equal = len(kept) == 0
	return nil
}

// messageIdentity is the identity a stream message is about ("" for
// heartbeats): named by the subject for key records, read off the wire
// otherwise.
func messageIdentity(m StreamMsg) string {
	if sp, err := region.ParseSubject(m.Subject); err == nil && sp.IdentityID != "" {
		return sp.IdentityID
	}
	h, err := inspect.ReadHeader(m.Data)
	if err != nil {
		return ""
	}
	return h.IdentityID
}

func (c *ReplayConfig) show(ctx context.Context, rep *ReplayReport, built *projector.Model) {
	for _, id := range c.Show {
		ident, err := built.Get(ctx, id)
		if err != nil {
			if rep.ShowErrors == nil {
				rep.ShowErrors = map[string]string{}
			}
			rep.ShowErrors[id] = err.Error()
			continue
		}
		if rep.Identities == nil {
			rep.Identities = map[string]*meridianv1.Identity{}
		}
		rep.Identities[id] = ident
	}
}

// restoreKeys puts the data keys of the inbox's key records up to seq
// into keys, except those of identities the model has erased.
func restoreKeys(ctx context.Context, js jetstream.JetStream, stream, zone string, upTo uint64, zoneKeys map[string]keystore.ZoneKey, keys *keystore.Store, model *projector.Model) (int, error) {
	if upTo == 0 {
		return 0, nil
	}
	n := 0
	_, err := scanStream(ctx, js, stream, scanRange{To: upTo, Filters: []string{region.SubjectRoot + ".*." + zone + "." + region.KeyType + ".>"}}, func(m StreamMsg) error {
		sp, err := region.ParseSubject(m.Subject)
		if err != nil || sp.IdentityID == "" {
			return nil
		}
		if _, err := model.Get(ctx, sp.IdentityID); errors.Is(err, projector.ErrErased) {
			return nil
		}
		ev := &meridianv1.Event{}
		if err := proto.Unmarshal(m.Data, ev); err != nil || ev.GetDataKey() == nil || len(ev.GetDataKey().GetWrappedKey()) == 0 {
			return nil // quarantined by the projector, or redacted by an erasure
		}
		material, err := keystore.Unwrap(zoneKeys, sp.IdentityID, ev.GetDataKey())
		if err != nil {
			return nil // the projector quarantines it too
		}
		err = keys.Put(sp.IdentityID, ev.GetDataKey().GetKeyId(), material[:])
		clear(material[:])
		if err != nil {
			return fmt.Errorf("ops: restore key %s of %s: %w", ev.GetDataKey().GetKeyId(), sp.IdentityID, err)
		}
		n++
		return nil
	})
	return n, err
}

// swapModel moves dataDir/model aside and built into its place.
func swapModel(dataDir, built string, now time.Time) (string, error) {
	live := filepath.Join(dataDir, ModelDir)
	replaced := ""
	if exists(live) {
		replaced = filepath.Join(dataDir, ModelDir+".replaced-"+strconv.FormatInt(now.UnixMilli(), 10))
		if err := os.Rename(live, replaced); err != nil {
			return "", fmt.Errorf("ops: swap: move the live model aside: %w", err)
		}
	}
	if err := os.Rename(built, live); err != nil {
		return replaced, fmt.Errorf("ops: swap: move the rebuilt model in (the old one is in %s): %w", replaced, err)
	}
	if err := syncDir(dataDir); err != nil {
		return replaced, fmt.Errorf("ops: swap: %w", err)
	}
	return replaced, nil
}
