package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/ops"
	"github.com/meridian-id/meridian/region"
)

func init() {
	register("reseed", "rebuild a region's lost log (reseed log) or JetStream store (reseed streams)", runReseed)
}

const reseedUsage = `usage: meridian reseed log|streams --region R [flags]

  log      the region's event log is gone: rebuild it from its origin stream
  streams  the region's JetStream store is gone: recreate its streams and
           re-fill them from its log and the other regions' inboxes

Stop the region's node first; start it again afterwards.`

func runReseed(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "log" && args[0] != "streams") {
		fmt.Fprintln(stderr, reseedUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return fmt.Errorf("%w: the first argument is log or streams", errUsage)
	}
	mode := args[0]
	fs := newFlags("reseed "+mode, stderr)
	dep := addDeployFlags(fs)
	regionName := fs.String("region", "", "region to re-seed (required)")
	data := fs.String("data", "", "data `dir` of the region's stopped node (default with --dev: <dev>/<region>)")
	lastSeq := fs.Uint64("last-seq", 0, "log: the last `sequence` the node is known to have written (its last log head from monitoring); names the lost tail exactly")
	margin := fs.Uint64("tail-margin", ops.DefaultTailMargin, "log: how far past the last shipped sequence new sequences start when --last-seq is unknown")
	force := fs.Bool("force", false, "streams: re-seed even though the origin stream exists and holds messages (finishes an interrupted re-seed)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args[1:]); err != nil {
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
	dataDir := dep.dataDir(*data, r.Name)
	if dataDir == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	conns := d.Connect(dep.natsOptions()...)
	defer conns.Close()
	js, err := conns.JS(ctx, r.Name)
	if err != nil {
		return err
	}
	pp := newProgressPrinter(stderr)
	defer pp.finish()

	if mode == "log" {
		rep, err := ops.ReseedLog(ctx, ops.ReseedLogConfig{Region: r.Name, JS: js, DataDir: dataDir, LastKnownSeq: *lastSeq, TailMargin: *margin, Progress: pp.report})
		pp.finish()
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, rep)
		}
		printReseedLog(stdout, rep)
		return nil
	}

	plan, err := region.Compile(d.Policy)
	if err != nil {
		return err
	}
	jss := map[string]jetstream.JetStream{r.Name: js}
	for _, o := range d.Regions {
		if o.Name == r.Name {
			continue
		}
		ojs, err := conns.JS(ctx, o.Name)
		if err != nil {
			fmt.Fprintf(stderr, "warning: %v: its inbox cannot supply history\n", err)
			continue
		}
		jss[o.Name] = ojs
	}
	rep, err := ops.ReseedStreams(ctx, ops.ReseedStreamsConfig{Plan: plan, Region: r.Name, DataDir: dataDir, JS: jss, Force: *force, Progress: pp.report})
	pp.finish()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	printReseedStreams(stdout, rep)
	return nil
}

func printReseedLog(w io.Writer, rep *ops.ReseedLogReport) {
	fmt.Fprintf(w, "re-seeded the log of %s from %s in %s\n", rep.Region, rep.Stream, rep.Duration.Round(time.Millisecond))
	if rep.Resumed {
		fmt.Fprintln(w, "  resumed an interrupted re-seed")
	}
	fmt.Fprintf(w, "  recovered: %d records, sequences %d..%d (%d stream messages; %d repeats skipped, %d without a sequence)\n",
		rep.Imported, rep.First, rep.Last, rep.StreamMessages, rep.Duplicates, rep.Unnumbered)
	if len(rep.Missing) > 0 {
		fmt.Fprintf(w, "  not in the stream: %d sequences: %s\n", ops.RangesLen(rep.Missing), ops.FormatRanges(rep.Missing))
		fmt.Fprintln(w, "    (data-key records deleted by an erasure, an earlier sequence-floor jump, or records lost before shipping)")
	}
	switch {
	case rep.LostTail != nil:
		fmt.Fprintf(w, "  LOST: the unshipped tail, sequences %s (%d records acknowledged but in neither the log nor any stream)\n", rep.LostTail, rep.LostTail.Len())
	case rep.LostTailUnknown:
		fmt.Fprintf(w, "  LOST: whatever the node acknowledged after sequence %d and had not shipped; the number is unknown (give --last-seq from monitoring to name it)\n", rep.Last)
	default:
		fmt.Fprintln(w, "  lost: nothing (the node's last sequence was shipped)")
	}
	fmt.Fprintf(w, "  new records start after sequence %d (floor); shipper checkpoint %d\n", rep.Floor, rep.ShipperCheckpoint)
	if rep.NodeIDRestored {
		fmt.Fprintf(w, "  node id %s restored from the records\n", rep.NodeID)
	}
	if len(rep.OriginNodes) > 1 {
		fmt.Fprintf(w, "  WARNING: the records carry several node ids %v\n", rep.OriginNodes)
	}
	if rep.ModelMovedAside != "" {
		fmt.Fprintf(w, "  the key store was gone too: the read model moved to %s; the node re-projects its inbox\n", rep.ModelMovedAside)
	}
	fmt.Fprintln(w, "start the node")
}

func printReseedStreams(w io.Writer, rep *ops.ReseedStreamsReport) {
	fmt.Fprintf(w, "re-seeded the streams of %s in %s\n", rep.Region, rep.Duration.Round(time.Millisecond))
	fmt.Fprint(w, indent(rep.Provision))
	fmt.Fprintf(w, "  %s: re-filled from stream sequence %d, every record at the sequence it had: %d from the log (sequences %d..%d), %d older ones from other regions' inboxes, %d placeholders for sequences no inbox held (deleted), %d log records no inbox held appended\n",
		rep.Origin, rep.OriginFirstSeq, rep.FromLog, rep.LogFirst, rep.LogLast, rep.Republished, rep.Placeholders, rep.Appended)
	if rep.LogFirst > 1 {
		fmt.Fprintf(w, "  %s: older records copied back from other regions' inboxes %v (log sequences %s)\n", rep.Origin, rep.FromInboxes, ops.FormatRanges(rep.HistorySeqs))
		if len(rep.Lost) > 0 {
			fmt.Fprintf(w, "  LOST: %d sequences below %d are in neither the log nor any inbox: %s\n", ops.RangesLen(rep.Lost), rep.LogFirst, ops.FormatRanges(rep.Lost))
			fmt.Fprintln(w, "    (RESIDENT records of a zone no other region holds, or an earlier sequence-floor jump)")
		} else {
			fmt.Fprintln(w, "  lost: nothing")
		}
		if len(rep.Unreachable) > 0 {
			fmt.Fprintf(w, "  WARNING: inboxes not read: %v\n", rep.Unreachable)
		}
	}
	fmt.Fprintf(w, "  %s: sources every origin from its start\n", rep.Inbox)
	for _, sc := range rep.Continued {
		fmt.Fprintf(w, "  %s: its source of %s on %s continues at stream sequence %d (it held up to %d, log sequence %d)\n", sc.Inbox, rep.Origin, sc.Filter, sc.StartSeq, sc.OldSourceSeq, sc.LastLogSeq)
	}
	if len(rep.NotContinued) > 0 {
		fmt.Fprintf(w, "  WARNING: the inboxes of %v could not be pinned: NATS may have them source %s again from its start (their projectors apply repeats idempotently)\n", rep.NotContinued, rep.Origin)
	}
	if rep.ModelReset {
		fmt.Fprintf(w, "  read model rewound from inbox seq %d to 0: the node re-applies the new inbox, keeping its state\n", rep.ModelInboxWas)
	}
	fmt.Fprintln(w, "start the node")
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	out := "  "
	for i, c := range s {
		out += string(c)
		if c == '\n' && i < len(s)-1 {
			out += "  "
		}
	}
	return out
}
