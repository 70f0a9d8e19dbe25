package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// TokenHeader is the response header carrying the consistency token.
const TokenHeader = "Meridian-Token"

const (
	contentTypeJSON     = "application/json"
	contentTypeProtobuf = "application/x-protobuf"
	// maxResponseBytes bounds what Append reads of a response.
	maxResponseBytes = 1 << 20
)

// ErrInvalidArgument is returned for bad arguments to New or Append (no
// request was sent).
var ErrInvalidArgument = errors.New("client: invalid argument")

// APIError is an error answer of the server.
type APIError struct {
	Status     int
	Code       string // e.g. invalid_argument, payload_too_large, wrong_region, unavailable
	Field      string
	Message    string
	HomeRegion string // set on 421 wrong_region
	Index      int    // offending event in the request, -1 if none
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("meridian: %d %s", e.Status, e.Code)
	if e.Index >= 0 {
		s += fmt.Sprintf(": event %d", e.Index)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.HomeRegion != "" {
		s += " (home region " + e.HomeRegion + ")"
	}
	return s
}

// Temporary reports whether retrying the same request may succeed.
func (e *APIError) Temporary() bool { return e.Status == http.StatusServiceUnavailable }

// AppendResult is the acknowledgement of a durable append.
type AppendResult struct {
	EventIDs []string
	// Token is the consistency token; present it (Meridian-Token header) on
	// reads that must see this append.
	Token string
	// Attempts is how many requests it took.
	Attempts int
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the http.Client (default: one with a 30 s timeout).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithJSON makes the client send JSON instead of protobuf.
func WithJSON() Option { return func(c *Client) { c.json = true } }

// WithRetry sets the attempts per Append (at least 1; default 5) and the
// backoff bounds (default 50 ms doubling up to 2 s, with full jitter).
func WithRetry(attempts int, minBackoff, maxBackoff time.Duration) Option {
	return func(c *Client) { c.attempts, c.minBackoff, c.maxBackoff = attempts, minBackoff, maxBackoff }
}

// Client appends events to one region. It is safe for concurrent use.
type Client struct {
	endpoint               string
	http                   *http.Client
	json                   bool
	attempts               int
	minBackoff, maxBackoff time.Duration
}

// New returns a client for the region at baseURL (for example
// "http://localhost:8080").
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: base URL %q must be http(s)://host[:port][/prefix]", ErrInvalidArgument, baseURL)
	}
	c := &Client{
		endpoint:   strings.TrimRight(u.String(), "/") + "/v1/events",
		http:       &http.Client{Timeout: 30 * time.Second},
		attempts:   5,
		minBackoff: 50 * time.Millisecond,
		maxBackoff: 2 * time.Second,
	}
	for _, o := range opts {
		o(c)
	}
	switch {
	case c.http == nil:
		return nil, fmt.Errorf("%w: nil http.Client", ErrInvalidArgument)
	case c.attempts < 1:
		return nil, fmt.Errorf("%w: attempts must be at least 1, got %d", ErrInvalidArgument, c.attempts)
	case c.minBackoff <= 0 || c.maxBackoff < c.minBackoff:
		return nil, fmt.Errorf("%w: backoff bounds %v..%v", ErrInvalidArgument, c.minBackoff, c.maxBackoff)
	}
	return c, nil
}

// Append sends events in one request; they become durable together or not
// at all. Events without an event id get a UUIDv7 before the first attempt,
// so retries are idempotent (see the package documentation).
func (c *Client) Append(ctx context.Context, events ...*meridianv1.Event) (*AppendResult, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: no events", ErrInvalidArgument)
	}
	req := &meridianv1.AppendRequest{Events: make([]*meridianv1.Event, len(events))}
	for i, ev := range events {
		if ev == nil {
			return nil, fmt.Errorf("%w: event %d is nil", ErrInvalidArgument, i)
		}
		if ev.EventId != "" {
			req.Events[i] = ev
			continue
		}
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("client: event id: %w", err)
		}
		cp := proto.Clone(ev).(*meridianv1.Event)
		cp.EventId = id.String()
		req.Events[i] = cp
	}
	body, ctype, err := c.encode(req)
	if err != nil {
		return nil, err
	}

	var last error
	for attempt := 1; ; attempt++ {
		res, retry, err := c.do(ctx, body, ctype)
		if err == nil {
			res.Attempts = attempt
			return res, nil
		}
		last = err
		if !retry || attempt >= c.attempts {
			break
		}
		if err := c.sleep(ctx, attempt); err != nil {
			return nil, fmt.Errorf("client: append: %w (last attempt: %v)", err, last)
		}
	}
	var apiErr *APIError
	if errors.As(last, &apiErr) {
		return nil, apiErr
	}
	return nil, fmt.Errorf("client: append: %w", last)
}

func (c *Client) encode(req *meridianv1.AppendRequest) ([]byte, string, error) {
	if c.json {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(req)
		if err != nil {
			return nil, "", fmt.Errorf("%w: encode JSON: %v", ErrInvalidArgument, err)
		}
		return b, contentTypeJSON, nil
	}
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, "", fmt.Errorf("%w: encode protobuf: %v", ErrInvalidArgument, err)
	}
	return b, contentTypeProtobuf, nil
}

// do sends one attempt; retry reports whether another may succeed.
func (c *Client) do(ctx context.Context, body []byte, ctype string) (res *AppendResult, retry bool, err error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, false, err
	}
	hreq.Header.Set("Content-Type", ctype)
	hreq.Header.Set("Accept", ctype)
	resp, err := c.http.Do(hreq)
	if err != nil {
		// Network error: retry, unless our own context ended.
		return nil, ctx.Err() == nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, ctx.Err() == nil, fmt.Errorf("reading response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		apiErr := decodeError(resp.StatusCode, b)
		return nil, apiErr.Temporary(), apiErr
	}
	res, err = decodeOK(resp.Header.Get("Content-Type"), b)
	if err != nil {
		return nil, false, err
	}
	if res.Token == "" {
		res.Token = resp.Header.Get(TokenHeader)
	}
	return res, false, nil
}

func decodeOK(ctype string, b []byte) (*AppendResult, error) {
	if strings.HasPrefix(ctype, contentTypeProtobuf) {
		var r meridianv1.AppendResponse
		if err := proto.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("client: malformed protobuf response: %w", err)
		}
		return &AppendResult{EventIDs: r.EventIds, Token: r.Token}, nil
	}
	var r struct {
		EventIDs []string `json:"event_ids"`
		Token    string   `json:"token"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("client: malformed JSON response: %w", err)
	}
	return &AppendResult{EventIDs: r.EventIDs, Token: r.Token}, nil
}

func decodeError(status int, b []byte) *APIError {
	var r struct {
		Error struct {
			Code       string `json:"code"`
			Field      string `json:"field"`
			Message    string `json:"message"`
			HomeRegion string `json:"home_region"`
			Index      *int   `json:"index"`
		} `json:"error"`
	}
	e := &APIError{Status: status, Index: -1}
	if err := json.Unmarshal(b, &r); err != nil || r.Error.Code == "" {
		// Not meridian's error format (a proxy, a load balancer).
		e.Code = strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
		e.Message = strings.TrimSpace(string(b))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200]
		}
		return e
	}
	e.Code, e.Field, e.Message, e.HomeRegion = r.Error.Code, r.Error.Field, r.Error.Message, r.Error.HomeRegion
	if r.Error.Index != nil {
		e.Index = *r.Error.Index
	}
	return e
}

// sleep waits the backoff before attempt+1: full jitter over an
// exponentially growing cap, so that many clients retrying after one
// outage spread out.
func (c *Client) sleep(ctx context.Context, attempt int) error {
	ceiling := c.minBackoff << min(attempt-1, 20)
	if ceiling > c.maxBackoff || ceiling <= 0 {
		ceiling = c.maxBackoff
	}
	d := c.minBackoff/2 + rand.N(ceiling)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
