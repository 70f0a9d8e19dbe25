package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meridian-id/meridian/ops/inspect"
	"github.com/meridian-id/meridian/projector"
)

// Online model swap (meridian replay against a running node).
//
//	POST /v1/admin/model/swap  {"dir": "/abs/ws/model", "verify": true, "live_timeout": "1m"}
//
// dir is a model `meridian replay` rebuilt from this region's inbox, from
// its first sequence and without --until (the workspace's replay.json
// beside it says so), on the node's file system. The node runs
// projector.Swap: it waits until its live model has applied as far as the
// rebuilt one, pauses consumption, catches the rebuilt model up to exactly
// the live position, compares the two there (digests, GLOBAL and RESIDENT:
// at the same inbox position they must be equal), switches the
// directories (crash-safe: see projector/swap.go) and resumes. The answer
// is a SwapReport; differences are reported, not refused: a replay is how
// a damaged model is repaired.
//
// Reads are served from the old model until the switch. During the switch
// (close, two renames, open: milliseconds) the read routes answer
// 503 model_switching with Retry-After: 1, so clients and load balancers
// retry rather than wait on a store that is being replaced; the writer's
// tombstone checks and the admin routes wait for it instead.

// SwapRequest is the body of POST /v1/admin/model/swap.
type SwapRequest struct {
	Dir string `json:"dir"`
	// Verify compares the two models at the same position (default true).
	Verify *bool `json:"verify,omitempty"`
	// LiveTimeout bounds waiting for the live model to reach the rebuilt
	// one (a Go duration; default 1m).
	LiveTimeout string `json:"live_timeout,omitempty"`
}

// SwapReport is the answer of a swap.
type SwapReport struct {
	Region string `json:"region"`
	// BuiltSeq: the rebuilt model's inbox position as handed over;
	// LiveSeq: the live model's when consumption paused, which the rebuilt
	// model was caught up to by applying CaughtUp messages.
	BuiltSeq    uint64 `json:"built_seq"`
	LiveSeq     uint64 `json:"live_seq"`
	CaughtUp    uint64 `json:"caught_up"`
	Quarantined uint64 `json:"quarantined"`
	ModelDir    string `json:"model_dir"`
	Replaced    string `json:"replaced"`
	PausedMs    int64  `json:"paused_ms"`
	SwitchMs    int64  `json:"switch_ms"`
	// Verify compares the live and the rebuilt model at LiveSeq.
	Verify []SwapComparison `json:"verify,omitempty"`
}

// SwapComparison is one kind of the comparison at the same position.
type SwapComparison struct {
	Kind      inspect.Kind `json:"kind"`
	InboxSeq  uint64       `json:"inbox_seq"`
	Live      int          `json:"live_identities"`
	Rebuilt   int          `json:"rebuilt_identities"`
	Equal     bool         `json:"equal"`
	Differing []string     `json:"differing,omitempty"` // at most maxSwapDiffs
	More      int          `json:"more_differing,omitempty"`
}

const maxSwapDiffs = 100

// Codes of the swap route and the read routes during a switch.
const (
	CodeModelSwitching = "model_switching"
	CodeSwapInProgress = "swap_in_progress"
	CodeSwapFailed     = "swap_failed"
)

// replayWorkspace mirrors ops' replay.json (ops imports node, not the
// other way round).
type replayWorkspace struct {
	Region  string `json:"region"`
	Stream  string `json:"stream"`
	FromSeq uint64 `json:"from_seq"`
	Until   string `json:"until,omitempty"`
}

func (n *Node) adminSwap(w http.ResponseWriter, r *http.Request) {
	var req SwapRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		adminFail(w, http.StatusBadRequest, "invalid_argument", "body", fmt.Errorf("a JSON object {\"dir\": ..., \"verify\": ..., \"live_timeout\": ...}: %v", err))
		return
	}
	cfg := projector.SwapConfig{Dir: req.Dir}
	if req.LiveTimeout != "" {
		d, err := time.ParseDuration(req.LiveTimeout)
		if err != nil || d <= 0 {
			adminFail(w, http.StatusBadRequest, "invalid_argument", "live_timeout", fmt.Errorf("%q: a positive Go duration such as 30s or 2m", req.LiveTimeout))
			return
		}
		cfg.LiveTimeout = d
	}
	if err := n.checkWorkspace(req.Dir); err != nil {
		adminFail(w, http.StatusBadRequest, "invalid_argument", "dir", err)
		return
	}
	rep := SwapReport{Region: n.cfg.Region}
	if req.Verify == nil || *req.Verify {
		cfg.Verify = func(_ context.Context, built *projector.Model) error {
			var err error
			rep.Verify, err = compareModels(n.proj, built)
			return err
		}
	}
	st, err := n.proj.Swap(r.Context(), cfg)
	rep.BuiltSeq, rep.LiveSeq, rep.CaughtUp, rep.Quarantined = st.BuiltSeq, st.LiveSeq, st.CaughtUp, st.Quarantined
	rep.ModelDir, rep.Replaced, rep.PausedMs, rep.SwitchMs = st.ModelDir, st.Replaced, st.Paused.Milliseconds(), st.Switch.Milliseconds()
	var inv *projector.InvalidError
	switch {
	case err == nil:
		n.cfg.Logger.Info("read model swapped", "region", n.cfg.Region, "replaced", rep.Replaced, "live_seq", rep.LiveSeq, "caught_up", rep.CaughtUp)
		adminJSON(w, http.StatusOK, rep)
	case errors.As(err, &inv):
		adminFail(w, http.StatusBadRequest, "invalid_argument", strings.ToLower(inv.Field), err)
	case errors.Is(err, projector.ErrSwapping):
		adminFail(w, http.StatusConflict, CodeSwapInProgress, "", err)
	case errors.Is(err, projector.ErrClosed):
		adminFail(w, http.StatusServiceUnavailable, "unavailable", "", err)
	default:
		n.cfg.Logger.Error("read model swap failed", "err", err)
		adminFail(w, http.StatusInternalServerError, CodeSwapFailed, "", err)
	}
}

// checkWorkspace requires dir to be a complete replay of this region's
// inbox, as recorded by meridian replay beside it.
func (n *Node) checkWorkspace(dir string) error {
	if dir == "" {
		return errors.New("required: the rebuilt model's directory")
	}
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("%q must be an absolute path on the node's host", dir)
	}
	meta := filepath.Join(filepath.Dir(dir), "replay.json")
	b, err := os.ReadFile(meta)
	if err != nil {
		return fmt.Errorf("%s: not a replay workspace's model (%v)", dir, err)
	}
	var ws replayWorkspace
	if err := json.Unmarshal(b, &ws); err != nil {
		return fmt.Errorf("%s: %v", meta, err)
	}
	switch {
	case ws.Region != n.cfg.Region || ws.Stream != n.plan.Inbox.Name:
		return fmt.Errorf("%s is a replay of %s (%s), not of this region's inbox %s", dir, ws.Stream, ws.Region, n.plan.Inbox.Name)
	case ws.FromSeq > 1 || ws.Until != "":
		return fmt.Errorf("%s is a partial replay (from seq %d, until %q): only a complete replay can be swapped in", dir, ws.FromSeq, ws.Until)
	}
	return nil
}

// compareModels digests both models (at the same inbox position) and
// lists the identities that differ.
func compareModels(live *projector.Projector, built *projector.Model) ([]SwapComparison, error) {
	var out []SwapComparison
	for _, kind := range []inspect.Kind{inspect.KindGlobal, inspect.KindResident} {
		dl, err := inspect.Compute(live, kind, nil)
		if err != nil {
			return nil, fmt.Errorf("digest live: %w", err)
		}
		db, err := inspect.Compute(built, kind, nil)
		if err != nil {
			return nil, fmt.Errorf("digest rebuilt: %w", err)
		}
		c := SwapComparison{Kind: kind, InboxSeq: db.InboxSeq, Live: dl.Count, Rebuilt: db.Count, Equal: dl.Root == db.Root}
		if dl.InboxSeq != db.InboxSeq {
			return nil, fmt.Errorf("the models are at inbox seq %d (live) and %d (rebuilt)", dl.InboxSeq, db.InboxSeq)
		}
		if !c.Equal {
			buckets := inspect.DifferingBuckets(dl, db)
			el, err := inspect.Compute(live, kind, buckets)
			if err != nil {
				return nil, err
			}
			eb, err := inspect.Compute(built, kind, buckets)
			if err != nil {
				return nil, err
			}
			ml, mb := el.EntryMap(), eb.EntryMap()
			var diff []string
			for id, v := range ml {
				if mb[id] != v {
					diff = append(diff, id)
				}
			}
			for id := range mb {
				if _, ok := ml[id]; !ok {
					diff = append(diff, id)
				}
			}
			slices.Sort(diff)
			if len(diff) > maxSwapDiffs {
				c.More, diff = len(diff)-maxSwapDiffs, diff[:maxSwapDiffs]
			}
			c.Differing = diff
		}
		out = append(out, c)
	}
	return out, nil
}

// duringSwitch answers reads 503 model_switching while the projector
// replaces its store.
func (n *Node) duringSwitch(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.proj.Switching() {
			w.Header().Set("Retry-After", "1")
			adminFail(w, http.StatusServiceUnavailable, CodeModelSwitching, "",
				fmt.Errorf("region %s is switching to a rebuilt read model (meridian replay); retry in a moment", n.cfg.Region))
			return
		}
		h.ServeHTTP(w, r)
	})
}
