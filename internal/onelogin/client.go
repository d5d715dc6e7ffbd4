package onelogin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Endpoint names, as they appear in metrics.
const (
	EndpointToken            = "token"
	EndpointAvailableFactors = "available_factors"
	EndpointEnroll           = "enroll"
	EndpointEnrolledFactors  = "enrolled_factors"
	EndpointActivate         = "activate"
	EndpointVerify           = "verify"
	EndpointRemove           = "remove"
	EndpointMFAToken         = "mfa_token"
	EndpointRateLimit        = "rate_limit"
	EndpointUsers            = "users"
)

// Observer receives one call per HTTP exchange with OneLogin, for metrics.
// code is the HTTP status, or "error" when no answer came back.
type Observer interface {
	ObserveRequest(endpoint, code string, d time.Duration)
	ObserveRateLimit(r RateLimit)
}

// Config configures a Client.
type Config struct {
	// BaseURL is the API root, e.g. https://acme.onelogin.com. Use
	// SubdomainURL to build it from a subdomain.
	BaseURL      string
	ClientID     string
	ClientSecret string
	// ClientSecretFunc, when set, is called for the secret on every token
	// fetch instead of using ClientSecret, so that a rotated secret (for
	// instance a file that an operator fixed) is picked up without a
	// restart. Its error is reported as a credentials failure, with its
	// text: it must never hold the secret itself.
	ClientSecretFunc func() (string, error)
	// Now is the clock for token expiry (default Clock.Now, else
	// time.Now); tests inject one to cross a token's end of life without
	// waiting.
	Now func() time.Time
	// Clock is the clock of the pacer NewClient makes when Pacer is nil
	// (default SystemClock); tests inject one to cross a rate-limit window
	// without waiting. Rate-limit resets are read on the pacer's clock.
	Clock Clock
	// Timeout bounds one HTTP exchange (default 30s). Waiting for the
	// budget is not part of it.
	Timeout time.Duration
	// UserAgent is sent on every request (default "mfa-worker").
	UserAgent string
	// MaxBodyBytes limits how much of a response is read (default 1 MiB).
	MaxBodyBytes int64
	// TokenEarlyExpiry refreshes the access token this long before OneLogin
	// says it expires (default 5m).
	TokenEarlyExpiry time.Duration
	// TokenMaxElapsed bounds the retries of one token fetch (default 20s).
	TokenMaxElapsed time.Duration
	// Transport is the underlying round tripper (default a clone of
	// http.DefaultTransport).
	Transport http.RoundTripper
	// Pacer is shared by every user of the account; NewClient makes one when
	// nil.
	Pacer *Pacer
	// RateLimitReserve is how many calls of each window the pacer leaves
	// unspent: the number of other replicas sharing the account.
	RateLimitReserve int
	// QueryReserve is the share of the rate limit (0..1) that calls made at
	// PriorityQuery may not spend: below it they fail with ErrBusy at once.
	QueryReserve float64
	// Observer receives request metrics; nil discards them.
	Observer Observer
}

// SubdomainURL returns the base URL of a OneLogin account.
func SubdomainURL(subdomain string) string {
	return "https://" + subdomain + ".onelogin.com"
}

// Client talks to OneLogin's MFA API v1. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	http      *http.Client
	tokens    *tokenSource
	pacer     *Pacer
	observer  Observer
	userAgent string
	maxBody   int64
}

// NewClient returns a client for cfg.
func NewClient(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("onelogin: base URL is empty")
	}
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/") + "/")
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return nil, fmt.Errorf("onelogin: base URL %q is not an http(s) URL", cfg.BaseURL)
	}
	if cfg.ClientID == "" || (cfg.ClientSecret == "" && cfg.ClientSecretFunc == nil) {
		return nil, errors.New("onelogin: client id and client secret are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock
	}
	if cfg.Now == nil {
		cfg.Now = cfg.Clock.Now
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "mfa-worker"
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.TokenEarlyExpiry <= 0 {
		cfg.TokenEarlyExpiry = 5 * time.Minute
	}
	if cfg.TokenMaxElapsed <= 0 {
		cfg.TokenMaxElapsed = 20 * time.Second
	}
	if cfg.Transport == nil {
		cfg.Transport = NewTransport()
	}
	if cfg.Pacer == nil {
		cfg.Pacer = NewPacerWithClock(0, cfg.Clock)
	}
	if cfg.RateLimitReserve > 0 {
		cfg.Pacer.SetReserve(cfg.RateLimitReserve)
	}
	if cfg.QueryReserve > 0 {
		cfg.Pacer.SetQueryReserve(cfg.QueryReserve)
	}
	c := &Client{
		base:      base,
		pacer:     cfg.Pacer,
		observer:  cfg.Observer,
		userAgent: cfg.UserAgent,
		maxBody:   cfg.MaxBodyBytes,
	}
	c.tokens = newTokenSource(cfg, base.ResolveReference(&url.URL{Path: "auth/oauth2/v2/token"}).String(), c.observe)
	c.http = &http.Client{
		Timeout:   cfg.Timeout,
		Transport: &authTransport{src: c.tokens, base: cfg.Transport},
		// OneLogin does not redirect API calls; following one could leak the
		// bearer token to another host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// NewTransport returns the transport the client uses unless its Config
// names one. Every call goes to one host: it keeps enough idle connections
// for the worker's concurrency, or most calls would pay for a new TCP and
// TLS handshake (http.DefaultTransport keeps two per host).
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 128
	t.MaxIdleConns = 128
	return t
}

// Token fetches (or returns the cached) access token, proving that the
// credentials work. The token itself is not returned. A refused credential
// is a *TokenError for which errors.Is(err, ErrCredentials) holds.
func (c *Client) Token(ctx context.Context) error {
	_, err := c.tokens.token(ctx)
	return err
}

// TokenStatus says, without a request, whether the client holds a valid
// access token and why not: for a readiness check or a credentials gauge.
func (c *Client) TokenStatus() TokenStatus { return c.tokens.status() }

// Response is a OneLogin answer with its rate-limit headers parsed.
type Response struct {
	*http.Response
	Rate RateLimit
	// RequestID is OneLogin's own X-Request-Id of the answer, for support
	// cases; empty when OneLogin sent none.
	RequestID string
	// AfterCursor is the After-Cursor header of a v2 list answer: pass it
	// back to get the next page; empty on the last page.
	AfterCursor string
	// body is the response body, already read (within the size limit).
	body []byte
}

type requestIDKey struct{}

// WithRequestID returns a context whose OneLogin calls carry id in an
// X-Request-Id header, so that an effect can be traced to the job behind it.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// NewRequest builds a request for path (relative to the base URL) with body
// encoded as JSON when not nil.
func (c *Client) NewRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	u := c.base.ResolveReference(&url.URL{Path: strings.TrimLeft(path, "/")})
	var buf []byte
	if body != nil {
		var err error
		if buf, err = json.Marshal(body); err != nil {
			return nil, &usageError{msg: fmt.Sprintf("encode %s body: %v", path, err)}
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(buf))
	if err != nil {
		return nil, &usageError{msg: fmt.Sprintf("build request: %v", err)}
	}
	if body == nil {
		req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if id, ok := ctx.Value(requestIDKey{}).(string); ok && id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	return req, nil
}

// maxRateLimitWaits bounds how often Do waits out a 429 before returning it.
const maxRateLimitWaits = 5

// BudgetResetsAt returns when the account's current rate-limit window ends
// (see Pacer.BudgetResetsAt).
func (c *Client) BudgetResetsAt() time.Time { return c.pacer.BudgetResetsAt() }

// Do sends req, waiting for the budget first. A 429 is waited out (the pacer
// holds the request until the window resets; OneLogin did not process it)
// up to five times, except on the Users API v2, whose limits are not the v1
// budget's: its 429 is returned at once. A 401 refreshes the token and
// re-sends the request once with its body intact; a second 401 is returned.
// A verify (endpoint EndpointVerify) is never re-sent on a 401:
// VerifyFactor tells a stale token from a wrong OTP without sending the OTP
// twice. Non-2xx answers become *ErrorResponse or *RateLimitError.
func (c *Client) Do(req *http.Request, endpoint string) (*Response, error) {
	return c.do(req, endpoint, endpoint != EndpointVerify)
}

func (c *Client) do(req *http.Request, endpoint string, resend401 bool) (*Response, error) {
	ctx := req.Context()
	refreshed, waits := false, 0
	for {
		resp, err := c.send(ctx, req, endpoint)
		if err == nil {
			return resp, nil
		}
		var er *ErrorResponse
		var rl *RateLimitError
		switch {
		case errors.As(err, &rl) && waits < maxRateLimitWaits && ctx.Err() == nil && endpoint != EndpointUsers:
			// The pacer, told Remaining 0, holds the re-send until the
			// window resets. A Users API 429 is not the v1 budget's: the
			// pacer knows nothing of it, so it goes back to the caller.
			waits++
		case resend401 && !refreshed && errors.As(err, &er) && er.StatusCode == http.StatusUnauthorized:
			// Never judged by the message: OneLogin's 401 wording varies.
			refreshed = true
			c.tokens.invalidate(sentToken(resp))
		default:
			return resp, err
		}
		if req, err = rewind(req); err != nil {
			return resp, err
		}
	}
}

func rewind(req *http.Request) (*http.Request, error) {
	r := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, &usageError{msg: fmt.Sprintf("rewind request body: %v", err)}
		}
		r.Body = body
	}
	return r, nil
}

func (c *Client) send(ctx context.Context, req *http.Request, endpoint string) (*Response, error) {
	if err := c.pacer.Wait(ctx, priorityFrom(ctx)); err != nil {
		return nil, fmt.Errorf("onelogin %s: %w: %w", endpoint, ErrBudgetWait, err)
	}
	start := time.Now()
	// The reset is counted from when the request was sent, on the pacer's
	// clock.
	sent := c.pacer.now()
	hr, err := c.http.Do(req)
	if err != nil {
		c.pacer.Observe(RateLimit{}, false)
		c.observe(endpoint, "error", time.Since(start))
		var te *TokenError
		if errors.As(err, &te) {
			return nil, te
		}
		return nil, fmt.Errorf("onelogin %s: %w", endpoint, scrubURLError(err))
	}
	body, readErr := readBody(hr.Body, c.maxBody)
	resp := &Response{Response: hr, body: body, RequestID: requestIDOf(hr.Header), AfterCursor: strings.TrimSpace(hr.Header.Get("After-Cursor"))}
	rate, hasRate := parseRate(hr.Header, sent)
	if hr.StatusCode == http.StatusTooManyRequests {
		if !hasRate {
			rate = RateLimit{Limit: 1, Reset: retryAfter(hr.Header, sent)}
			hasRate = true
		}
		rate.Remaining = 0
	}
	resp.Rate = rate
	switch {
	case endpoint == EndpointUsers:
		// The Users API v2 is not counted in the v1 budget and its answers
		// carry no rate-limit headers: whatever it answers (a 429 of its
		// own included) says nothing about the v1 budget.
		c.pacer.Observe(RateLimit{}, false)
	default:
		// An answer without the rate-limit headers tells the pacer
		// something (a proxy strips them: there is nothing to pace by)
		// only where OneLogin sends them: its 401s carry none, so they
		// leave the budget view as it was.
		c.pacer.Observe(rate, hasRate || (readErr == nil && hr.StatusCode != http.StatusUnauthorized))
	}
	c.observe(endpoint, strconv.Itoa(hr.StatusCode), time.Since(start))
	if hasRate && c.observer != nil && endpoint != EndpointUsers {
		c.observer.ObserveRateLimit(rate)
	}
	if readErr != nil {
		return resp, fmt.Errorf("onelogin %s: read response: %w", endpoint, readErr)
	}
	if hr.StatusCode == http.StatusTooManyRequests {
		return resp, &RateLimitError{Endpoint: endpoint, Rate: rate, RequestID: resp.RequestID}
	}
	status := decodeStatus(body)
	if hr.StatusCode < 200 || hr.StatusCode > 299 || (status != nil && status.Error) {
		er := &ErrorResponse{Endpoint: endpoint, StatusCode: hr.StatusCode, RequestID: resp.RequestID}
		if status != nil {
			er.Status = *status
			if er.StatusCode < 300 && status.Code >= 400 {
				er.StatusCode = status.Code
			}
		} else {
			er.Status.Message.Description = bareMessage(body)
			er.Status.Type = bareType(body)
		}
		return resp, er
	}
	return resp, nil
}

// requestIDOf returns OneLogin's X-Request-Id, made safe to log.
func requestIDOf(h http.Header) string {
	id := h.Get("X-Request-Id")
	if len(id) > 128 {
		id = id[:128]
	}
	return sanitize(id)
}

func (c *Client) observe(endpoint, code string, d time.Duration) {
	if c.observer != nil {
		c.observer.ObserveRequest(endpoint, code, d)
	}
}

// scrubURLError drops the query string from a *url.Error: paths hold only
// numeric ids, but a query could hold anything.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery, u.User = "", nil
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

func readBody(r io.ReadCloser, limit int64) ([]byte, error) {
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, ErrBodyTooLarge
	}
	return b, nil
}

// parseRate reads X-RateLimit-*; Reset is seconds until the window resets,
// counted from when the request was sent (the conservative end).
func parseRate(h http.Header, sent time.Time) (RateLimit, bool) {
	limit, err1 := strconv.Atoi(strings.TrimSpace(h.Get("X-RateLimit-Limit")))
	remaining, err2 := strconv.Atoi(strings.TrimSpace(h.Get("X-RateLimit-Remaining")))
	reset, err3 := strconv.ParseFloat(strings.TrimSpace(h.Get("X-RateLimit-Reset")), 64)
	if err1 != nil || err2 != nil || err3 != nil || limit <= 0 || reset < 0 || reset > 7*24*3600 {
		return RateLimit{}, false
	}
	if remaining < 0 {
		remaining = 0
	}
	return RateLimit{Limit: limit, Remaining: remaining, Reset: sent.Add(time.Duration(reset * float64(time.Second)))}, true
}

func retryAfter(h http.Header, sent time.Time) time.Time {
	if s, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil && s >= 0 && s < 24*3600 {
		return sent.Add(time.Duration(s) * time.Second)
	}
	return sent.Add(time.Minute)
}
