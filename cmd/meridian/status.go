package main

import (
	"context"
	"fmt"
	"io"

	"github.com/meridian-id/meridian/ops"
)

func init() {
	register("status", "one screen for the whole deployment; non-zero exit past thresholds", runStatus)
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	dep := addDeployFlags(fs)
	th := ops.DefaultThresholds()
	fs.Float64Var(&th.MaxLagSeconds, "max-lag-seconds", th.MaxLagSeconds, "lag per origin, in seconds, beyond which the exit status is non-zero (negative: no limit)")
	fs.Int64Var(&th.MaxLagEvents, "max-lag-events", th.MaxLagEvents, "lag per origin, in events (negative: no limit)")
	fs.Int64Var(&th.MaxBacklog, "max-backlog", th.MaxBacklog, "shipper and projector backlog (negative: no limit)")
	fs.Int64Var(&th.MaxQuarantined, "max-quarantined", th.MaxQuarantined, "quarantined messages per region (negative: no limit)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	d, err := dep.load()
	if err != nil {
		return err
	}
	st, err := ops.Status(ctx, ops.StatusConfig{Deployment: d, Thresholds: &th})
	if err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(stdout, st); err != nil {
			return err
		}
	} else {
		printStatus(stdout, st)
	}
	if !st.OK {
		return exitError{code: exitFindings, err: fmt.Errorf("%d thresholds crossed", len(st.Findings()))}
	}
	return nil
}

func printStatus(w io.Writer, st *ops.DeploymentStatus) {
	fmt.Fprintf(w, "%-10s %-4s %-8s %-20s %10s %9s %10s %9s %6s\n", "REGION", "ZONE", "HEALTH", "NODE", "LOG HEAD", "SHIP LAG", "INBOX SEQ", "BACKLOG", "QUAR")
	for _, r := range st.Regions {
		if r.Node == nil {
			fmt.Fprintf(w, "%-10s %-4s %-8s %s\n", r.Region, r.Zone, r.Health, r.Error)
			continue
		}
		n := r.Node
		ship := "-"
		if n.Shipper != nil {
			ship = fmt.Sprint(n.Shipper.Backlog)
		}
		backlog := "?"
		if n.InboxBacklog != nil {
			backlog = fmt.Sprint(*n.InboxBacklog)
		}
		fmt.Fprintf(w, "%-10s %-4s %-8s %-20s %10d %9s %10d %9s %6d\n", r.Region, r.Zone, r.Health, n.Node, n.Log.LastSeq, ship, n.InboxSeq, backlog, n.Quarantined)
		for _, s := range r.Sources {
			ev, secs := "?", "?"
			if s.LagEvents != nil {
				ev = fmt.Sprint(*s.LagEvents)
			}
			if s.LagSeconds != nil {
				secs = fmt.Sprintf("%.1fs", *s.LagSeconds)
			}
			fmt.Fprintf(w, "    from %-10s lag %8s events %8s  %s %s\n", s.Origin, ev, secs, s.Health, s.Detail)
		}
	}
	for _, f := range st.Findings() {
		fmt.Fprintf(w, "FINDING %s\n", f)
	}
	if st.OK {
		fmt.Fprintln(w, "OK")
	}
}
