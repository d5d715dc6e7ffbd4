package onelogin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// tokenSource fetches OneLogin access tokens with the client-credentials
// grant and caches one until shortly before it expires. It retries transient
// failures of the token endpoint (users report EOFs and time-outs there).
//
// The request is one of OneLogin's documented forms: a JSON body
// {"grant_type":"client_credentials"} with the credentials as HTTP Basic.
// (x/oauth2 sends a form body and HTTP Basic together, which no OneLogin
// sample does.)
//
// OneLogin hands out the same token until it expires, with expires_in the
// full lifetime and created_at the moment it was made: the expiry is
// created_at + expires_in. Getting the same token back from an early refresh
// is normal; the source then keeps it until it expires instead of asking
// again on every call.
type tokenSource struct {
	url        string
	clientID   string
	secret     func() (string, error)
	httpClient *http.Client
	early      time.Duration
	maxElapsed time.Duration
	maxBody    int64
	now        func() time.Time

	// sem serialises fetches so that a burst of callers waiting for a new
	// token causes one fetch, while each can still give up on its context.
	sem chan struct{}

	mu        sync.Mutex
	tok       string
	expiry    time.Time // zero: unknown, kept until a 401
	refreshAt time.Time // zero: never
	// lastErr is the failure of the last fetch: callers that queued behind
	// it get it at once instead of each retrying the endpoint in turn.
	lastErr   *TokenError
	lastErrAt time.Time
	fetches   int
}

// minRefetch is the shortest time between two fetches that returned the same
// token, should clocks disagree about when it expires.
const minRefetch = time.Second

// tokenCooldown is how long a failed fetch is answered from memory: while
// the token endpoint is down, callers fail at once instead of queueing for
// their own round of retries against it.
const tokenCooldown = time.Second

func newTokenSource(cfg Config, tokenURL string, observe func(endpoint, code string, d time.Duration)) *tokenSource {
	secret := cfg.ClientSecretFunc
	if secret == nil {
		s := cfg.ClientSecret
		secret = func() (string, error) { return s, nil }
	}
	return &tokenSource{
		url:      tokenURL,
		clientID: cfg.ClientID,
		secret:   secret,
		httpClient: &http.Client{
			Timeout:       cfg.Timeout,
			Transport:     &observedTransport{base: cfg.Transport, userAgent: cfg.UserAgent, observe: observe},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		early:      cfg.TokenEarlyExpiry,
		maxElapsed: cfg.TokenMaxElapsed,
		maxBody:    cfg.MaxBodyBytes,
		now:        cfg.Now,
		sem:        make(chan struct{}, 1),
	}
}

func (s *tokenSource) cached(now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok == "" || (!s.refreshAt.IsZero() && !now.Before(s.refreshAt)) {
		return ""
	}
	return s.tok
}

func (s *tokenSource) token(ctx context.Context) (string, error) {
	asked := s.now()
	if t := s.cached(asked); t != "" {
		return t, nil
	}
	s.mu.Lock()
	failed, failedAt := s.lastErr, s.lastErrAt
	s.mu.Unlock()
	if failed != nil && asked.Sub(failedAt) < tokenCooldown {
		return "", failed
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return "", &TokenError{Err: ctx.Err()}
	}
	defer func() { <-s.sem }()
	if t := s.cached(s.now()); t != "" {
		return t, nil // another caller fetched it while we waited
	}
	s.mu.Lock()
	failed, failedAt = s.lastErr, s.lastErrAt
	s.mu.Unlock()
	if failed != nil && failedAt.After(asked) {
		return "", failed // a fetch that started after we asked just failed
	}
	var got fetched
	fetch := func() error {
		f, err := s.fetch(ctx)
		if err != nil {
			if Classify(err) != Transient || isContextErr(ctx.Err()) {
				return backoff.Permanent(err)
			}
			return err
		}
		got = f
		return nil
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(s.maxElapsed),
	)
	if err := backoff.Retry(fetch, backoff.WithContext(b, ctx)); err != nil {
		var te *TokenError
		if !errors.As(err, &te) {
			te = &TokenError{Err: err}
		}
		now := s.now()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.lastErr, s.lastErrAt = te, now
		// A token that has not expired yet is still good: use it while
		// the endpoint recovers, and ask again after the cooldown.
		if s.tok != "" && !te.Credentials && (s.expiry.IsZero() || now.Before(s.expiry)) {
			s.refreshAt = now.Add(tokenCooldown)
			return s.tok, nil
		}
		return "", te
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshAt = s.scheduleLocked(got, now)
	s.tok, s.expiry, s.lastErr = got.token, got.expiry, nil
	return got.token, nil
}

// scheduleLocked decides when to ask for a new token.
func (s *tokenSource) scheduleLocked(f fetched, now time.Time) time.Time {
	if f.expiry.IsZero() {
		return time.Time{}
	}
	// A short-lived token is refreshed at half its life at the latest.
	at := f.expiry.Add(-min(s.early, f.life/2))
	if f.token == s.tok {
		// An early refresh got the same token back: OneLogin issues a new
		// one only when this one has expired.
		at = f.expiry
	}
	if floor := now.Add(minRefetch); at.Before(floor) {
		at = floor
	}
	return at
}

type fetched struct {
	token  string
	expiry time.Time
	life   time.Duration // expires_in
}

// fetch makes one token request.
func (s *tokenSource) fetch(ctx context.Context) (fetched, error) {
	secret, err := s.secret()
	if err != nil {
		return fetched{}, &TokenError{Credentials: true, Message: "cannot read the client secret: " + sanitize(err.Error())}
	}
	if secret == "" {
		return fetched{}, &TokenError{Credentials: true, Message: "the client secret is empty"}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader([]byte(`{"grant_type":"client_credentials"}`)))
	if err != nil {
		return fetched{}, &TokenError{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 form-encodes both parts before the Basic encoding.
	req.SetBasicAuth(url.QueryEscape(s.clientID), url.QueryEscape(secret))
	sent := s.now()
	resp, err := s.httpClient.Do(req)
	if err != nil {
		return fetched{}, &TokenError{Err: scrubURLError(err)}
	}
	body, readErr := readBody(resp.Body, min(s.maxBody, 64<<10))
	rid := requestIDOf(resp.Header)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		te := &TokenError{StatusCode: resp.StatusCode, RequestID: rid}
		if readErr == nil {
			if st := decodeStatus(body); st != nil {
				te.Message = sanitize(st.Message.String())
			} else {
				te.Message = bareMessage(body)
			}
		}
		te.Credentials = credentialsFailure(resp.StatusCode)
		return fetched{}, te
	}
	if readErr != nil {
		return fetched{}, &TokenError{Err: fmt.Errorf("read token answer: %w", readErr), RequestID: rid}
	}
	f, err := parseToken(body, sent)
	if err != nil {
		return fetched{}, &TokenError{Err: fmt.Errorf("decode token answer: %w", err), RequestID: rid}
	}
	s.mu.Lock()
	s.fetches++
	s.mu.Unlock()
	return f, nil
}

// credentialsFailure says whether a token endpoint status means the
// credentials themselves are refused: every 4xx but a time-out or a rate
// limit, and 500, which OneLogin documents for credentials whose owner was
// deleted. 502, 503 and 504 are the way to OneLogin failing, not the
// credentials.
func credentialsFailure(status int) bool {
	switch {
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests:
		return false
	case status >= 400 && status < 500:
		return true
	default:
		return status == http.StatusInternalServerError
	}
}

// parseToken reads the token answer. The expiry is created_at + expires_in
// when created_at is present (and that is still ahead), else sent +
// expires_in.
func parseToken(body []byte, sent time.Time) (fetched, error) {
	var raw struct {
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
		CreatedAt   json.RawMessage `json:"created_at"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return fetched{}, errors.New("not a token object")
	}
	if raw.AccessToken == "" {
		return fetched{}, errors.New("no access_token")
	}
	f := fetched{token: raw.AccessToken}
	secs, err := strconv.ParseFloat(strings.TrimSpace(looseString(raw.ExpiresIn)), 64)
	if err != nil || secs <= 0 || secs > 366*24*3600 {
		return f, nil // unknown lifetime: kept until a 401
	}
	life := time.Duration(secs * float64(time.Second))
	f.expiry, f.life = sent.Add(life), life
	if c := looseString(raw.CreatedAt); c != "" {
		// A created_at that makes the token already expired cannot be
		// (OneLogin just handed it out): expires_in was then the time left,
		// or the clocks disagree; sent + expires_in is the better guess.
		if at, err := parseTime(c); err == nil && at.Add(life).After(sent) {
			f.expiry = at.Add(life)
		}
	}
	return f, nil
}

// invalidate drops the cached token if it is tok, so that a 401 refreshes it
// once however many requests saw the 401.
func (s *tokenSource) invalidate(tok string) {
	if tok == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok == tok {
		s.tok, s.expiry, s.refreshAt = "", time.Time{}, time.Time{}
	}
}

// status reports whether a usable token is held, and the last failure.
func (s *tokenSource) status() TokenStatus {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := TokenStatus{ExpiresAt: s.expiry, Fetches: s.fetches}
	st.Valid = s.tok != "" && (s.expiry.IsZero() || now.Before(s.expiry))
	if s.lastErr != nil {
		st.Err = s.lastErr
	}
	return st
}

// TokenStatus says whether the client holds a usable access token. It is
// cheap: no request is made.
type TokenStatus struct {
	// Valid is true while a token is held and has not expired.
	Valid bool
	// ExpiresAt is when the held token expires (zero: unknown or none).
	ExpiresAt time.Time
	// Err is the failure of the last token fetch, nil after a success.
	// It never holds a secret or a token.
	Err *TokenError
	// Fetches counts successful token requests since the client started.
	Fetches int
}

type tokenKey struct{}

// withToken pins the access token a request is sent with.
func withToken(ctx context.Context, tok string) context.Context {
	return context.WithValue(ctx, tokenKey{}, tok)
}

// authTransport adds the bearer token to every resource request.
type authTransport struct {
	src  *tokenSource
	base http.RoundTripper
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, _ := req.Context().Value(tokenKey{}).(string)
	if tok == "" {
		var err error
		if tok, err = t.src.token(req.Context()); err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return t.base.RoundTrip(r)
}

// sentToken returns the access token a response's request carried.
func sentToken(resp *Response) string {
	if resp == nil || resp.Response == nil || resp.Request == nil {
		return ""
	}
	return strings.TrimPrefix(resp.Request.Header.Get("Authorization"), "Bearer ")
}

// observedTransport reports token-endpoint exchanges to the metrics.
type observedTransport struct {
	base      http.RoundTripper
	userAgent string
	observe   func(endpoint, code string, d time.Duration)
}

// RoundTrip sets the User-Agent on a clone: a RoundTripper must not modify
// the request it is given.
func (t *observedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Set("User-Agent", t.userAgent)
	start := time.Now()
	resp, err := t.base.RoundTrip(r)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.observe(EndpointToken, code, time.Since(start))
	return resp, err
}
