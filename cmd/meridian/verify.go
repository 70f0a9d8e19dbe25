package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/meridian-id/meridian/ops"
	"github.com/meridian-id/meridian/ops/inspect"
)

func init() {
	register("verify", "prove the regions converge and no resident data left its zone", runVerify)
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("verify", stderr)
	dep := addDeployFlags(fs)
	var offline stringList
	fs.Var(&offline, "data", "`region=dir`: read that region's stores from a stopped node's data dir instead of asking its node (repeatable)")
	settle := fs.Duration("settle", 5*time.Second, "how long identities that differ are re-checked before they count (writes in flight)")
	quick := fs.Bool("quick", false, "audit streams by subject counts only (does not decode messages)")
	noStreams := fs.Bool("no-streams", false, "do not audit the streams")
	skipConv := fs.Bool("skip-convergence", false, "only the residency audit")
	skipAudit := fs.Bool("skip-audit", false, "only the convergence check")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	d, err := dep.load()
	if err != nil {
		return err
	}
	cfg := ops.VerifyConfig{Deployment: d, Settle: *settle, QuickStreams: *quick, SkipConvergence: *skipConv, SkipAudit: *skipAudit,
		Sources: map[string]ops.DigestSource{}, Audits: map[string]func(context.Context) (*inspect.AuditReport, error){}}
	if *settle == 0 {
		cfg.Settle = -1
	}
	for _, o := range offline {
		name, dir, ok := strings.Cut(o, "=")
		if !ok || name == "" || dir == "" {
			return fmt.Errorf("%w: --data %q: want region=dir", errUsage, o)
		}
		if _, ok := d.Region(name); !ok {
			return fmt.Errorf("%w: --data: %q is not a region of the deployment (%v)", errUsage, name, d.Names())
		}
		off, err := ops.OpenOffline(name, dir)
		if err != nil {
			return fmt.Errorf("--data %s: %w", o, err)
		}
		defer off.Close()
		cfg.Sources[name] = off.Source()
		cfg.Audits[name] = off.Audit(d.Policy)
	}
	if !*noStreams {
		conns := d.Connect(dep.natsOptions()...)
		defer conns.Close()
		cfg.Conns = conns
	}
	pp := newProgressPrinter(stderr)
	cfg.Progress = pp.report
	rep, err := ops.Verify(ctx, cfg)
	pp.finish()
	if err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		printVerify(stdout, rep)
	}
	if !rep.OK() {
		return exitError{code: exitFindings, err: errors.New("verification found problems")}
	}
	return nil
}

func printVerify(w io.Writer, rep *ops.VerifyReport) {
	if len(rep.Convergence) > 0 {
		fmt.Fprintln(w, "convergence:")
		for _, c := range rep.Convergence {
			printComparison(w, c)
		}
	}
	if len(rep.Audits) > 0 || len(rep.Streams) > 0 {
		fmt.Fprintln(w, "residency audit:")
		for _, a := range rep.Audits {
			fmt.Fprintf(w, "  %-10s zone %-4s log %d records, model %d identities: %d findings\n", a.Region, a.Zone, a.LogRecords, a.Identities, len(a.Findings))
		}
		for _, s := range rep.Streams {
			how := "every message"
			if s.Quick {
				how = "subjects"
			}
			fmt.Fprintf(w, "  %-10s stream %-20s %d messages (%s): %d findings\n", s.Region, s.Stream, s.Messages, how, s.Findings)
		}
	}
	for _, f := range rep.Findings {
		fmt.Fprintf(w, "FINDING %s\n", f)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "PROBLEM %s\n", p)
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(w, "skipped: %s\n", s)
	}
	if rep.OK() {
		fmt.Fprintln(w, "OK: the regions agree and no resident data is outside its zone")
	}
}
