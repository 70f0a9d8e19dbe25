package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meridian-id/meridian/node"
	"github.com/meridian-id/meridian/ops/inspect"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
)

// NodeClient talks to one node's HTTP API: status, reads and the admin
// routes (node.AdminRoutes).
type NodeClient struct {
	Region string
	Base   string // e.g. http://127.0.0.1:7401
	HTTP   *http.Client
}

// Bounds of one request to a node: most answer at once; digests and
// audits read a whole store.
const (
	DefaultHTTPTimeout = 30 * time.Second
	ScanHTTPTimeout    = 15 * time.Minute
)

// NewNodeClient returns a client of a region's node.
func NewNodeClient(r Region) (*NodeClient, error) {
	if r.HTTP == "" {
		return nil, &RegionError{Region: r.Name, Op: "http", Err: fmt.Errorf("%w: no HTTP URL known for the region (policy http_url or --endpoints)", ErrUnreachable)}
	}
	u, err := url.Parse(r.HTTP)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, invalidf("regions["+r.Name+"].http", "%q is not an http(s) URL", r.HTTP)
	}
	return &NodeClient{Region: r.Name, Base: strings.TrimRight(r.HTTP, "/"), HTTP: &http.Client{}}, nil
}

// APIError is an error answer of a node.
type APIError struct {
	Region  string
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("ops: %s answered %d %s: %s", e.Region, e.Status, e.Code, e.Message)
}

func (c *NodeClient) do(ctx context.Context, method, path string, out any) error {
	return c.doWithin(ctx, DefaultHTTPTimeout, method, path, out)
}

func (c *NodeClient) doWithin(ctx context.Context, timeout time.Duration, method, path string, out any) error {
	return c.doBody(ctx, timeout, method, path, nil, out)
}

// doBody sends in (if not nil) as JSON.
func (c *NodeClient) doBody(ctx context.Context, timeout time.Duration, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var reqBody io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		reqBody = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, reqBody)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return &RegionError{Region: c.Region, Op: method + " " + path, Err: fmt.Errorf("%w: %w", ErrUnreachable, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return &RegionError{Region: c.Region, Op: method + " " + path, Err: err}
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		msg := e.Error.Message
		if msg == "" {
			msg = strings.TrimSpace(string(body))
		}
		return &APIError{Region: c.Region, Status: resp.StatusCode, Code: e.Error.Code, Message: msg}
	}
	if out == nil {
		return nil
	}
	if m, ok := out.(*meridianv1.Identity); ok {
		return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, m)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(out); err != nil {
		return &RegionError{Region: c.Region, Op: method + " " + path, Err: fmt.Errorf("decode answer: %w", err)}
	}
	return nil
}

// Status is GET /v1/status.
func (c *NodeClient) Status(ctx context.Context) (*node.Status, error) {
	var st node.Status
	if err := c.do(ctx, http.MethodGet, "/v1/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Digest is GET /v1/admin/digest.
func (c *NodeClient) Digest(ctx context.Context, kind inspect.Kind, buckets []int) (*inspect.Digest, error) {
	q := url.Values{"kind": {string(kind)}}
	if len(buckets) > 0 {
		s := make([]string, len(buckets))
		for i, b := range buckets {
			s[i] = strconv.Itoa(b)
		}
		q.Set("buckets", strings.Join(s, ","))
	}
	var d inspect.Digest
	if err := c.doWithin(ctx, ScanHTTPTimeout, http.MethodGet, "/v1/admin/digest?"+q.Encode(), &d); err != nil {
		return nil, err
	}
	if err := d.Check(); err != nil {
		return nil, &RegionError{Region: c.Region, Op: "digest", Err: err}
	}
	return &d, nil
}

// Audit is GET /v1/admin/audit.
func (c *NodeClient) Audit(ctx context.Context) (*inspect.AuditReport, error) {
	var rep inspect.AuditReport
	if err := c.doWithin(ctx, ScanHTTPTimeout, http.MethodGet, "/v1/admin/audit", &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Erasure is GET /v1/admin/identities/{id}/erasure; scanLog also counts
// the log's key records of the identity (a read of the whole log).
func (c *NodeClient) Erasure(ctx context.Context, id string, scanLog bool) (*inspect.ErasureState, error) {
	var st inspect.ErasureState
	path := "/v1/admin/identities/" + url.PathEscape(id) + "/erasure"
	if !scanLog {
		path += "?scan_log=false"
	}
	if err := c.doWithin(ctx, ScanHTTPTimeout, http.MethodGet, path, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Sweep is POST /v1/admin/identities/{id}/erasure/sweep.
func (c *NodeClient) Sweep(ctx context.Context, id string) (*inspect.SweepReport, error) {
	var rep inspect.SweepReport
	if err := c.doWithin(ctx, ScanHTTPTimeout, http.MethodPost, "/v1/admin/identities/"+url.PathEscape(id)+"/erasure/sweep", &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// SwapModel is POST /v1/admin/model/swap: the running node swaps in the
// rebuilt model in dir (see node/swap.go). It can take as long as the
// catch-up and the verification.
func (c *NodeClient) SwapModel(ctx context.Context, req node.SwapRequest) (*node.SwapReport, error) {
	var rep node.SwapReport
	if err := c.doBody(ctx, ScanHTTPTimeout, http.MethodPost, "/v1/admin/model/swap", req, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Identity is GET /v1/identities/{id}: the identity, or an *APIError
// (404 not_found, 410 erased).
func (c *NodeClient) Identity(ctx context.Context, id string) (*meridianv1.Identity, error) {
	var ident meridianv1.Identity
	if err := c.do(ctx, http.MethodGet, "/v1/identities/"+url.PathEscape(id), &ident); err != nil {
		return nil, err
	}
	return &ident, nil
}
