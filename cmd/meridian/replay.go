package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meridian-id/meridian/ops"
)

func init() {
	register("replay", "rebuild a region's read model from its inbox (and swap it in)", runReplay)
}

const replayUsage = `usage: meridian replay --region R [flags]

Rebuilds a region's read model from its inbox stream into a workspace,
shows progress, verifies it against the live model where both cover the
same events, and swaps it in.

  Replace a running node's model: run with --data <its data dir> on the
  node's host. The model is rebuilt in <data>/replay, then the node swaps
  it in without stopping: it pauses its projector, catches the rebuilt
  model up to exactly its live position, compares the two there, switches
  the directories (crash-safe) and resumes. Reads are served throughout,
  except during the switch itself (milliseconds), when they answer
  503 model_switching with Retry-After. The old model is kept beside it.
  Replace a stopped node's model: the same command; the swap is offline.
  Short downtime offline: run with --out WS while the node runs, then stop
  it, run with --data <dir> --out WS --swap, start it.
  Investigations: --until TIME or --from-seq N with --out WS (never swapped
  in; the workspace holds data keys: delete it when done).
  An interrupted replay resumes when run again with the same workspace.

`

// replayGCPercent is the GC target of a replay run (see runReplay).
const replayGCPercent = 400

type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("replay", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, replayUsage)
		fs.PrintDefaults()
	}
	dep := addDeployFlags(fs)
	regionName := fs.String("region", "", "region whose inbox is replayed (required)")
	keysPath := fs.String("keys", "", "key `file` with the region's zone key (default with --dev: its secrets.json)")
	data := fs.String("data", "", "data `dir` of the region's node (default with --dev: <dev>/<region>); the rebuilt model is swapped in, online if the node runs, unless --dry-run, --out or a partial replay")
	out := fs.String("out", "", "workspace `dir` to build in and leave the model in (default <data>/replay); an interrupted replay there resumes")
	fromSeq := fs.Uint64("from-seq", 0, "first inbox `sequence` to apply (investigations; never swapped in)")
	until := fs.String("until", "", "build the model as of this RFC 3339 `time` (investigations; never swapped in)")
	swap := fs.Bool("swap", false, "swap the rebuilt model into --data (the default for a complete replay with --data and no --out)")
	dryRun := fs.Bool("dry-run", false, "build and verify, but leave the model beside the live one")
	noVerify := fs.Bool("no-verify", false, "do not compare the rebuilt model with the live one")
	compareRaw := fs.Bool("compare-raw", false, "also measure a raw ordered consume of the inbox, the ceiling of the replay rate")
	batch := fs.Int("batch", 0, "messages per batch (default projector.DefaultRebuildBatchSize)")
	cache := fs.Int("cache", 0, "identities whose decoded states and data keys the rebuild keeps in memory (default ops.DefaultReplayCacheEntries; negative disables)")
	var show stringList
	fs.Var(&show, "show", "print the rebuilt view of this identity `id` (repeatable)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *regionName == "" {
		return fmt.Errorf("%w: --region is required", errUsage)
	}
	d, err := dep.load()
	if err != nil {
		return err
	}
	r, ok := d.Region(*regionName)
	if !ok {
		return fmt.Errorf("%w: --region: %q is not a region of the deployment (%v)", errUsage, *regionName, d.Names())
	}
	cfg := ops.ReplayConfig{Region: r.Name, Zone: r.Zone, FromSeq: *fromSeq, Workspace: *out, NoVerify: *noVerify,
		Show: show, CompareRaw: *compareRaw, BatchSize: *batch, CacheEntries: *cache}
	if *until != "" {
		if cfg.Until, err = time.Parse(time.RFC3339Nano, *until); err != nil {
			return fmt.Errorf("%w: --until: %q is not an RFC 3339 time (e.g. 2026-11-21T10:00:00Z)", errUsage, *until)
		}
	}
	// With --dev the data dir is known, but a dry run must not require
	// stopping the node.
	cfg.DataDir = *data
	if cfg.DataDir == "" && (*swap || (dep.dev != "" && !*dryRun && *out == "")) {
		cfg.DataDir = dep.dataDir("", r.Name)
	}
	partial := *fromSeq > 0 || *until != ""
	cfg.Swap = *swap || (cfg.DataDir != "" && !*dryRun && *out == "" && !partial)
	if *swap && *dryRun {
		return fmt.Errorf("%w: --swap and --dry-run contradict each other", errUsage)
	}
	if cfg.DataDir == "" && cfg.Workspace == "" {
		return fmt.Errorf("%w: give --data (a stopped node's data dir) or --out (a workspace to build in while the node runs)", errUsage)
	}
	if cfg.Swap && !*dryRun {
		// A running node swaps the model in itself.
		running := cfg.DataDir != "" && ops.NodeRunning(cfg.DataDir)
		cl, cerr := ops.NewNodeClient(r)
		if !running && cfg.DataDir == "" && cerr == nil {
			_, err := cl.Status(ctx)
			running = err == nil
		}
		if running {
			if cerr != nil {
				return fmt.Errorf("the node of %s runs, but cannot be asked to swap: %w", r.Name, cerr)
			}
			cfg.Node = cl
			if cfg.Workspace == "" {
				cfg.Workspace = filepath.Join(cfg.DataDir, "replay")
			}
			cfg.DataDir = ""
		}
	}
	if cfg.ZoneKeys, err = dep.zoneKeys(*keysPath, r.Zone); err != nil {
		return err
	}
	conns := d.Connect(dep.natsOptions()...)
	defer conns.Close()
	if cfg.JS, err = conns.JS(ctx, r.Name); err != nil {
		return err
	}
	if cfg.DataDir == "" && !*noVerify {
		if cl, err := ops.NewNodeClient(r); err == nil {
			cfg.Live = ops.NodeSource{Client: cl}
		}
	}
	if os.Getenv("GOGC") == "" {
		// A replay allocates a decoded state per message and keeps little:
		// collecting less often makes it 1.2-1.5x faster (BenchmarkReplay)
		// for a few times the (small) live heap. The operator's GOGC wins.
		debug.SetGCPercent(replayGCPercent)
	}
	pp := newProgressPrinter(stderr)
	cfg.Progress = pp.report
	rep, err := ops.Replay(ctx, cfg)
	pp.finish()
	if errors.Is(err, ops.ErrInterrupted) {
		fmt.Fprintf(stderr, "replay interrupted; the workspace %s keeps what was applied: run the same command again to resume\n", rep.Workspace)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	printReplay(stdout, rep)
	if !rep.Verified() && len(rep.Verify) > 0 {
		return exitError{code: exitFindings, err: errors.New("the rebuilt model differs from the live one where both cover the same events")}
	}
	return nil
}

func printReplay(w io.Writer, rep *ops.ReplayReport) {
	st := rep.Stats
	fmt.Fprintf(w, "replayed %s (%s): %d messages, inbox seq %d..%d of %d, in %s (%.0f messages/s)\n",
		rep.Region, rep.Stream, st.Messages, st.FirstSeq, st.Reached, st.LastSeq, st.Duration.Round(time.Millisecond), st.PerSec)
	if st.Resumed {
		fmt.Fprintln(w, "  resumed an earlier, interrupted replay in the workspace")
	}
	if st.StoppedAtUntil {
		fmt.Fprintln(w, "  stopped at the --until time")
	}
	if st.Quarantined > 0 {
		fmt.Fprintf(w, "  %d messages quarantined (RESIDENT parts of erased identities, whose keys are gone, are expected among them)\n", st.Quarantined)
	}
	if rep.RawConsumePerSec > 0 {
		fmt.Fprintf(w, "  raw ordered consume of the same stream: %.0f messages/s (replay at %.0f%% of it)\n", rep.RawConsumePerSec, 100*st.PerSec/rep.RawConsumePerSec)
	}
	if rep.KeysRestored > 0 {
		fmt.Fprintf(w, "  restored %d data keys into the node's key store\n", rep.KeysRestored)
	}
	for _, c := range rep.Verify {
		printComparison(w, c)
	}
	if rep.VerifyNote != "" {
		fmt.Fprintf(w, "  not verified: %s\n", rep.VerifyNote)
	}
	for id, ident := range rep.Identities {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ident)
		if err != nil {
			b = []byte(err.Error())
		}
		fmt.Fprintf(w, "  %s: %s\n", id, b)
	}
	for id, e := range rep.ShowErrors {
		fmt.Fprintf(w, "  %s: %s\n", id, e)
	}
	switch {
	case rep.Online != nil:
		o := rep.Online
		fmt.Fprintf(w, "swapped into the running node: %s (caught up %d messages, inbox seq %d..%d; consumption paused %d ms, reads held %d ms)\n",
			o.ModelDir, o.CaughtUp, o.BuiltSeq, o.LiveSeq, o.PausedMs, o.SwitchMs)
		fmt.Fprintf(w, "  the previous model is in %s; delete it when satisfied\n", o.Replaced)
	case rep.Swapped:
		fmt.Fprintf(w, "swapped in: %s (the previous model is in %s; delete it when satisfied); start the node\n", rep.ModelDir, orNothing(rep.Replaced))
	default:
		fmt.Fprintf(w, "model left in %s (key store: %s); it holds data keys and personal data: delete the workspace when done\n", rep.ModelDir, rep.KeyStore)
	}
}

func orNothing(s string) string {
	if s == "" {
		return "(there was none)"
	}
	return s
}

func printComparison(w io.Writer, c *ops.Comparison) {
	scope := c.Scope
	if scope == "" {
		scope = fmt.Sprint(c.Sources)
	}
	state := "equal"
	if !c.Equal {
		state = fmt.Sprintf("%d identities differ", len(c.Differences))
	}
	fmt.Fprintf(w, "  %-8s %-14s %s", c.Kind, scope, state)
	for _, s := range c.Sources {
		fmt.Fprintf(w, "  [%s: %d identities, inbox seq %d]", s, c.Identities[s], c.InboxSeq[s])
	}
	if c.Excluded > 0 {
		fmt.Fprintf(w, "  (%d not covered by both, left out)", c.Excluded)
	}
	fmt.Fprintln(w)
	for i, d := range c.Differences {
		if i == 20 {
			fmt.Fprintf(w, "    ... and %d more\n", len(c.Differences)-i)
			break
		}
		fmt.Fprintf(w, "    %s", d.Identity)
		for _, s := range c.Sources {
			v := d.Digests[s]
			if v == "" {
				v = "absent"
			} else if len(v) > 12 {
				v = v[:12]
			}
			fmt.Fprintf(w, "  %s=%s", s, v)
		}
		if len(d.Odd) > 0 {
			fmt.Fprintf(w, "  (odd: %v)", d.Odd)
		}
		fmt.Fprintln(w)
	}
}
