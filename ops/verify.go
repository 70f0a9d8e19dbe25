package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-id/meridian/ops/inspect"
	"github.com/meridian-id/meridian/region"
)

// Verify proves two things, from cron or CI (a non-zero exit on any
// finding):
//
// Convergence. Every region digests its read model (package inspect: a
// Merkle-style tree over 256 buckets of identity ids); GLOBAL states are
// compared across all regions, RESIDENT states across the members of each
// zone, and only buckets whose hashes differ are listed entry by entry.
// With writes in flight regions disagree for a moment, so differing
// identities are re-checked for Settle before they are reported.
//
// Residency. Every stream of every region's JetStream domain is read and
// each message checked (its subject's zone, its part and zone, RESIDENT
// fields in GLOBAL records); every node audits its own log and read model
// the same way (GET /v1/admin/audit). Expected: no finding.

// VerifyConfig configures Verify.
type VerifyConfig struct {
	Deployment *Deployment
	// Sources overrides how a region's model is digested (an offline
	// model); regions without an entry are asked over HTTP.
	Sources map[string]DigestSource
	// Audits overrides how a region's log and model are audited (offline);
	// regions without an entry are asked over HTTP.
	Audits map[string]func(ctx context.Context) (*inspect.AuditReport, error)
	// Conns reaches the regions' JetStream for the stream audit; nil skips
	// it (reported in Skipped).
	Conns *Conns
	// SkipConvergence and SkipAudit leave a part out.
	SkipConvergence, SkipAudit bool
	// QuickStreams audits streams by subject counts only (cheap; misses a
	// RESIDENT part on a global subject, which only decoding shows).
	QuickStreams bool
	// Settle is how long differing identities are re-checked (default 5s;
	// negative: not at all).
	Settle   time.Duration
	Progress ProgressFunc
	Logger   *slog.Logger
}

// StreamAudit is the audit of one stream.
type StreamAudit struct {
	Region   string `json:"region"`
	Stream   string `json:"stream"`
	Messages uint64 `json:"messages"`
	Quick    bool   `json:"quick"`
	Findings int    `json:"findings"`
}

// VerifyReport is Verify's outcome.
type VerifyReport struct {
	Convergence []*Comparison         `json:"convergence"`
	Audits      []inspect.AuditReport `json:"audits"`
	Streams     []StreamAudit         `json:"streams"`
	// Findings are the residency findings of all audits.
	Findings []inspect.Finding `json:"findings"`
	// Problems are what kept a check from running (a region unreachable).
	Problems []string `json:"problems"`
	// Skipped lists checks left out on purpose.
	Skipped []string `json:"skipped,omitempty"`
}

// OK reports whether everything checked out and every check that was not
// skipped on purpose ran.
func (r *VerifyReport) OK() bool {
	if len(r.Findings) > 0 || len(r.Problems) > 0 {
		return false
	}
	for _, c := range r.Convergence {
		if !c.Equal {
			return false
		}
	}
	return true
}

// Verify runs the checks; an error means it could not run at all.
func Verify(ctx context.Context, cfg VerifyConfig) (*VerifyReport, error) {
	if cfg.Deployment == nil {
		return nil, invalidf("Deployment", "required")
	}
	if cfg.Settle == 0 {
		cfg.Settle = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rep := &VerifyReport{Convergence: []*Comparison{}, Audits: []inspect.AuditReport{}, Streams: []StreamAudit{}, Findings: []inspect.Finding{}, Problems: []string{}}
	if cfg.SkipConvergence {
		rep.Skipped = append(rep.Skipped, "convergence")
	} else if err := cfg.convergence(ctx, rep); err != nil {
		return rep, err
	}
	if cfg.SkipAudit {
		rep.Skipped = append(rep.Skipped, "residency audit")
	} else if err := cfg.audit(ctx, rep); err != nil {
		return rep, err
	}
	return rep, nil
}

func (c *VerifyConfig) source(r Region) (DigestSource, error) {
	if s, ok := c.Sources[r.Name]; ok {
		return s, nil
	}
	cl, err := NewNodeClient(r)
	if err != nil {
		return nil, err
	}
	return NodeSource{Client: cl}, nil
}

func (c *VerifyConfig) convergence(ctx context.Context, rep *VerifyReport) error {
	dep := c.Deployment
	type group struct {
		kind    inspect.Kind
		scope   string
		members []Region
	}
	groups := []group{{inspect.KindGlobal, "all regions", dep.Regions}}
	for _, z := range dep.Policy.Zones() {
		var members []Region
		for _, r := range dep.Regions {
			if r.Zone == z {
				members = append(members, r)
			}
		}
		if len(members) >= 2 {
			groups = append(groups, group{inspect.KindResident, "zone " + z, members})
		}
	}
	m := newMeter(c.Progress, "verify", "convergence", "comparisons", uint64(len(groups)))
	for i, g := range groups {
		var sources []DigestSource
		for _, r := range g.members {
			s, err := c.source(r)
			if err != nil {
				rep.Problems = append(rep.Problems, err.Error())
				continue
			}
			sources = append(sources, s)
		}
		for len(sources) >= 2 {
			settle := max(c.Settle, 0)
			cmp, err := Compare(ctx, g.kind, sources, CompareOptions{Settle: settle})
			var re *RegionError
			if errors.As(err, &re) && ctx.Err() == nil {
				// Compare the others; the region's absence is a problem.
				rep.Problems = append(rep.Problems, err.Error())
				sources = slices.DeleteFunc(sources, func(s DigestSource) bool { return s.Name() == re.Region })
				continue
			}
			if err != nil {
				return err
			}
			cmp.Scope = g.scope
			rep.Convergence = append(rep.Convergence, cmp)
			break
		}
		if len(sources) < 2 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s %s: fewer than two regions answered; nothing compared", g.kind, g.scope))
		}
		m.update(uint64(i+1), fmt.Sprintf("%s %s", g.kind, g.scope), i == len(groups)-1)
	}
	return nil
}

func (c *VerifyConfig) audit(ctx context.Context, rep *VerifyReport) error {
	dep := c.Deployment
	m := newMeter(c.Progress, "verify", "residency audit", "regions", uint64(len(dep.Regions)))
	for i, r := range dep.Regions {
		ar, err := c.auditRegion(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: log and model audit: %v", r.Name, err))
		} else {
			rep.Audits = append(rep.Audits, *ar)
			rep.Findings = append(rep.Findings, ar.Findings...)
		}
		if c.Conns == nil {
			if i == 0 {
				rep.Skipped = append(rep.Skipped, "streams (no NATS connections)")
			}
		} else if err := c.auditStreams(ctx, rep, r); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: stream audit: %v", r.Name, err))
		}
		m.update(uint64(i+1), r.Name, i == len(dep.Regions)-1)
	}
	return nil
}

func (c *VerifyConfig) auditRegion(ctx context.Context, r Region) (*inspect.AuditReport, error) {
	if fn, ok := c.Audits[r.Name]; ok {
		return fn(ctx)
	}
	cl, err := NewNodeClient(r)
	if err != nil {
		return nil, err
	}
	return cl.Audit(ctx)
}

// auditStreams reads every stream of a region's domain.
func (c *VerifyConfig) auditStreams(ctx context.Context, rep *VerifyReport, r Region) error {
	js, err := c.Conns.JS(ctx, r.Name)
	if err != nil {
		return err
	}
	a, err := inspect.NewAuditor(c.Deployment.Policy, r.Name)
	if err != nil {
		return err
	}
	names := js.StreamNames(ctx)
	var streams []string
	for n := range names.Name() {
		streams = append(streams, n)
	}
	if err := names.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return fmt.Errorf("list streams: %w", err)
	}
	slices.Sort(streams)
	for _, name := range streams {
		sa := StreamAudit{Region: r.Name, Stream: name, Quick: c.QuickStreams}
		var fs []inspect.Finding
		if c.QuickStreams {
			fs, sa.Messages, err = c.quickStream(ctx, js, a, name)
		} else {
			sa.Messages, err = scanStream(ctx, js, name, scanRange{}, func(m StreamMsg) error {
				fs = append(fs, a.Record("stream "+name, m.Seq, m.Subject, m.Data)...)
				return nil
			})
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		sa.Findings = len(fs)
		rep.Findings = append(rep.Findings, fs...)
		rep.Streams = append(rep.Streams, sa)
	}
	return nil
}

// quickStream looks only at subject counts: resident subjects of other
// zones.
func (c *VerifyConfig) quickStream(ctx context.Context, js jetstream.JetStream, a *inspect.Auditor, name string) ([]inspect.Finding, uint64, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	msgs := s.CachedInfo().State.Msgs
	var out []inspect.Finding
	for _, z := range c.Deployment.Policy.Zones() {
		if z == a.Zone {
			continue
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(region.ResidentFilter(z)))
		if err != nil {
			return nil, msgs, err
		}
		for _, subj := range sortedKeys(info.State.Subjects) {
			out = append(out, inspect.Finding{
				Region: a.Region, Store: "stream " + name, Subject: subj, Zone: z, Rule: inspect.RuleOutsideZone,
				Detail: fmt.Sprintf("%d messages of zone %q in region %s of zone %q", info.State.Subjects[subj], z, a.Region, a.Zone),
			})
		}
	}
	return out, msgs, nil
}
