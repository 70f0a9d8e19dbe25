package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/meridian-id/meridian/ops"
)

func init() {
	register("erase", "erase an identity everywhere (GDPR) and report what was destroyed", runErase)
}

func runErase(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("erase", stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: meridian erase [flags] <identity-id>")
		fs.PrintDefaults()
	}
	dep := addDeployFlags(fs)
	home := fs.String("home", "", "the identity's home `region` (default: read from its view; needed to re-run an erasure already applied)")
	reason := fs.String("reason", "", "reason recorded in the IdentityErased event")
	timeout := fs.Duration("timeout", 2*time.Minute, "bound of each wait (applied everywhere, writes drained)")
	purgeResident := fs.Bool("purge-resident", false, "also find and securely delete the identity's RESIDENT parts in the streams (reads every message of the zone)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: exactly one identity id is required", errUsage)
	}
	d, err := dep.load()
	if err != nil {
		return err
	}
	conns := d.Connect(dep.natsOptions()...)
	defer conns.Close()
	pp := newProgressPrinter(stderr)
	rep, err := ops.Erase(ctx, ops.EraseConfig{Deployment: d, Conns: conns, Identity: fs.Arg(0), Home: *home, Reason: *reason,
		Timeout: *timeout, PurgeResident: *purgeResident, Progress: pp.report})
	pp.finish()
	if err != nil {
		if rep != nil && rep.EventID != "" {
			fmt.Fprintf(stderr, "IdentityErased %s was appended in %s; the erasure is under way: run the command again (with --home %s) to finish it\n", rep.EventID, rep.Home, rep.Home)
		}
		return err
	}
	if *asJSON {
		if err := printJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		printErase(stdout, rep)
	}
	if !rep.Clean {
		return exitError{code: exitFindings, err: errors.New("the erasure is not complete everywhere (see the report)")}
	}
	return nil
}

func printErase(w io.Writer, rep *ops.EraseReport) {
	fmt.Fprintf(w, "erasure report for identity %s (home %s, zone %s)\n", rep.Identity, orUnknown(rep.Home), orUnknown(rep.Zone))
	if rep.AlreadyErased {
		fmt.Fprintln(w, "  it was already erased; this run finished the clean-up")
	} else {
		fmt.Fprintf(w, "  IdentityErased %s appended in %s; applied in every region after %s\n", rep.EventID, rep.Home, rep.AppliedAfter.Round(time.Millisecond))
	}
	for _, s := range rep.Sweeps {
		fmt.Fprintf(w, "  %-10s key store: %d data keys destroyed now (the rest when the erasure applied); log: %d data-key records redacted %v",
			s.Region, s.KeysDestroyed, len(s.Redacted), s.Redacted)
		if s.ScrubRounds > 0 {
			fmt.Fprintf(w, ", WAL overwritten %d times", s.ScrubRounds)
		}
		fmt.Fprintln(w)
	}
	for _, s := range rep.Streams {
		if len(s.Deleted) == 0 && s.Remaining == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-10s stream %-18s %d messages securely deleted (%s) %v", s.Region, s.Stream, len(s.Deleted), s.Filter, s.Deleted)
		if s.Remaining > 0 {
			fmt.Fprintf(w, "; %d REMAIN", s.Remaining)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "  now held:")
	for _, f := range rep.Final {
		fmt.Fprintf(w, "    %-10s tombstone %-5v resident state %-5v data keys %d, key records with key material %d (%d redacted)\n",
			f.Region, f.Erased, f.ResidentState, f.Keys, f.KeyRecords, f.RedactedKeyRecords)
	}
	for _, warn := range rep.Warnings {
		fmt.Fprintf(w, "  WARNING %s\n", warn)
	}
	if rep.Clean {
		fmt.Fprintln(w, "erased: no region holds resident data or a data key of the identity; its sealed records are unreadable for good")
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
