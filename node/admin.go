package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/ops/inspect"
	"github.com/meridian-id/meridian/projector"
)

// The admin API serves the operator tools (meridian verify, erase,
// replay): digests of the read model, the residency audit of the node's
// stores, and what the node holds of an identity being erased. It shares
// the node's listener, so in production the listener must not be exposed
// beyond the operators' network.
//
//	GET  /v1/admin/digest?kind=global|resident[&buckets=3,17]
//	GET  /v1/admin/audit
//	GET  /v1/admin/identities/{id}/erasure[?scan_log=false]
//	POST /v1/admin/identities/{id}/erasure/sweep
//	POST /v1/admin/model/swap                (swap.go)
//
// The sweep destroys the identity's data keys again and redacts its
// data-key records in the log; it refuses an identity this region has not
// seen erased, so it can never shred a live identity.

// AdminRoutes mounts the admin API on mux.
func (n *Node) AdminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/admin/digest", n.adminDigest)
	mux.HandleFunc("GET /v1/admin/audit", n.adminAudit)
	mux.HandleFunc("GET /v1/admin/identities/{id}/erasure", n.adminErasure)
	mux.HandleFunc("POST /v1/admin/identities/{id}/erasure/sweep", n.adminSweep)
	mux.HandleFunc("POST /v1/admin/model/swap", n.adminSwap)
}

type adminError struct {
	Code    string `json:"code"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func adminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func adminFail(w http.ResponseWriter, status int, code, field string, err error) {
	adminJSON(w, status, struct {
		Error adminError `json:"error"`
	}{adminError{Code: code, Field: field, Message: err.Error()}})
}

func (n *Node) adminDigest(w http.ResponseWriter, r *http.Request) {
	kind, err := inspect.ParseKind(r.URL.Query().Get("kind"))
	if err != nil {
		adminFail(w, http.StatusBadRequest, "invalid_argument", "kind", err)
		return
	}
	var buckets []int
	if s := r.URL.Query().Get("buckets"); s != "" {
		for _, part := range strings.Split(s, ",") {
			b, err := strconv.Atoi(part)
			if err != nil || b < 0 || b >= inspect.NumBuckets {
				adminFail(w, http.StatusBadRequest, "invalid_argument", "buckets",
					fmt.Errorf("%q: a comma-separated list of bucket numbers in [0, %d)", part, inspect.NumBuckets))
				return
			}
			buckets = append(buckets, b)
		}
	}
	d, err := inspect.Compute(n.proj, kind, buckets)
	if err != nil {
		n.adminInternal(w, err)
		return
	}
	d.Region = n.cfg.Region
	adminJSON(w, http.StatusOK, d)
}

func (n *Node) adminAudit(w http.ResponseWriter, r *http.Request) {
	a, err := inspect.NewAuditor(n.cfg.Policy, n.cfg.Region)
	if err != nil {
		n.adminInternal(w, err)
		return
	}
	rep := inspect.AuditReport{Region: n.cfg.Region, Zone: n.zone, Findings: []inspect.Finding{}}
	logF, nrec, err := a.AuditLog(r.Context(), n.log)
	if err != nil {
		n.adminInternal(w, err)
		return
	}
	modelF, nid, err := a.AuditModel(n.proj)
	if err != nil {
		n.adminInternal(w, err)
		return
	}
	rep.LogRecords, rep.Identities = nrec, nid
	rep.Findings = append(append(rep.Findings, logF...), modelF...)
	adminJSON(w, http.StatusOK, rep)
}

// erasureState reads what this node holds of an identity; the log is
// scanned for its key records unless the request says scan_log=false.
func (n *Node) erasureState(r *http.Request, id string) (inspect.ErasureState, error) {
	st := inspect.ErasureState{Region: n.cfg.Region, Identity: id}
	g, held, err := n.proj.Stored(id)
	if err != nil {
		return st, err
	}
	st.Known, st.Erased, st.ResidentState = g != nil, g.GetErased() != nil, held
	keys, err := n.keys.Keys(id)
	if err != nil {
		return st, err
	}
	st.Keys = len(keys)
	if r.URL.Query().Get("scan_log") == "false" {
		return st, nil
	}
	live, redacted, err := inspect.KeyRecords(r.Context(), n.log, id)
	if err != nil {
		return st, err
	}
	st.KeyRecords, st.RedactedKeyRecords, st.LogScanned = len(live), redacted, true
	return st, nil
}

// adminID reads and checks the {id} of the path: identity ids are
// canonical UUIDs.
func adminID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		adminFail(w, http.StatusBadRequest, "invalid_argument", "id", fmt.Errorf("%q: an identity id is a canonical (lower-case, hyphenated) UUID", id))
		return "", false
	}
	return id, true
}

func (n *Node) adminErasure(w http.ResponseWriter, r *http.Request) {
	id, ok := adminID(w, r)
	if !ok {
		return
	}
	st, err := n.erasureState(r, id)
	if err != nil {
		n.adminIDError(w, err)
		return
	}
	adminJSON(w, http.StatusOK, st)
}

func (n *Node) adminSweep(w http.ResponseWriter, r *http.Request) {
	id, ok := adminID(w, r)
	if !ok {
		return
	}
	g, _, err := n.proj.Stored(id)
	if err != nil {
		n.adminIDError(w, err)
		return
	}
	if g.GetErased() == nil {
		adminFail(w, http.StatusConflict, "not_erased", "id",
			fmt.Errorf("identity %s is not erased in region %s (yet): its keys are not destroyed", id, n.cfg.Region))
		return
	}
	rep := inspect.SweepReport{Region: n.cfg.Region, Identity: id, Redacted: []uint64{}}
	if rep.KeysDestroyed, err = n.keys.Destroy(id); err != nil {
		n.adminInternal(w, err)
		return
	}
	live, _, err := inspect.KeyRecords(r.Context(), n.log, id)
	if err != nil {
		n.adminInternal(w, err)
		return
	}
	if len(live) > 0 {
		var secrets [][]byte
		recs := make([]eventlog.Record, 0, len(live))
		for _, rec := range live {
			data, sec, err := inspect.RedactKeyRecord(rec.Data)
			if err != nil {
				n.adminInternal(w, err)
				return
			}
			recs = append(recs, eventlog.Record{Seq: rec.Seq, Data: data})
			secrets = append(secrets, sec...)
			rep.Redacted = append(rep.Redacted, rec.Seq)
		}
		st, err := n.log.Redact(r.Context(), recs, secrets)
		if err != nil {
			n.adminInternal(w, err)
			return
		}
		rep.ScrubRounds = st.ScrubRounds
	}
	n.cfg.Logger.Info("erasure sweep", "identity", id, "keys_destroyed", rep.KeysDestroyed, "redacted", len(rep.Redacted))
	adminJSON(w, http.StatusOK, rep)
}

func (n *Node) adminIDError(w http.ResponseWriter, err error) {
	var inv *projector.InvalidError
	if errors.As(err, &inv) {
		adminFail(w, http.StatusBadRequest, "invalid_argument", "id", err)
		return
	}
	n.adminInternal(w, err)
}

func (n *Node) adminInternal(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, "internal"
	if errors.Is(err, projector.ErrClosed) || errors.Is(err, eventlog.ErrClosed) {
		status, code = http.StatusServiceUnavailable, "unavailable"
	}
	n.cfg.Logger.Error("admin request failed", "err", err)
	adminFail(w, status, code, "", err)
}
