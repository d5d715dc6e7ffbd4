package onelogin

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// tokenSource fetches OneLogin access tokens with the client-credentials
// grant, caches one until shortly before it expires, and retries transient
// failures of the token endpoint (users report EOFs and time-outs there).
type tokenSource struct {
	cfg        clientcredentials.Config
	httpClient *http.Client
	early      time.Duration
	maxElapsed time.Duration

	// sem serialises fetches so that a burst of callers waiting for a new
	// token causes one fetch, while each can still give up on its context.
	sem chan struct{}
	mu  sync.Mutex
	tok *oauth2.Token
	// lastErr is the failure of the last fetch: callers that queued behind
	// it get it at once instead of each retrying the endpoint in turn.
	lastErr   error
	lastErrAt time.Time
}

func newTokenSource(cfg Config, tokenURL string, observe func(endpoint, code string, d time.Duration)) *tokenSource {
	return &tokenSource{
		cfg: clientcredentials.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			TokenURL:     tokenURL,
			AuthStyle:    oauth2.AuthStyleInHeader,
		},
		httpClient: &http.Client{
			Timeout:       cfg.Timeout,
			Transport:     &observedTransport{base: cfg.Transport, userAgent: cfg.UserAgent, observe: observe},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		early:      cfg.TokenEarlyExpiry,
		maxElapsed: cfg.TokenMaxElapsed,
		sem:        make(chan struct{}, 1),
	}
}

func (s *tokenSource) cached(now time.Time) *oauth2.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok == nil || s.tok.AccessToken == "" {
		return nil
	}
	if !s.tok.Expiry.IsZero() && !now.Add(s.early).Before(s.tok.Expiry) {
		return nil
	}
	return s.tok
}

// tokenCooldown is how long a failed fetch is answered from memory: while
// the token endpoint is down, callers fail at once instead of queueing for
// their own round of retries against it.
const tokenCooldown = time.Second

func (s *tokenSource) token(ctx context.Context) (*oauth2.Token, error) {
	asked := time.Now()
	if t := s.cached(asked); t != nil {
		return t, nil
	}
	s.mu.Lock()
	failed, failedAt := s.lastErr, s.lastErrAt
	s.mu.Unlock()
	if failed != nil && asked.Sub(failedAt) < tokenCooldown {
		return nil, failed
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, &TokenError{Err: ctx.Err()}
	}
	defer func() { <-s.sem }()
	if t := s.cached(time.Now()); t != nil {
		return t, nil // another caller fetched it while we waited
	}
	s.mu.Lock()
	failed, failedAt = s.lastErr, s.lastErrAt
	s.mu.Unlock()
	if failed != nil && failedAt.After(asked) {
		return nil, failed // a fetch that started after we asked just failed
	}
	var tok *oauth2.Token
	fetch := func() error {
		t, err := s.cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, s.httpClient))
		if err != nil {
			te := tokenError(err)
			if Classify(te) != Transient || isContextErr(ctx.Err()) {
				return backoff.Permanent(te)
			}
			return te
		}
		tok = t
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
		s.mu.Lock()
		s.lastErr, s.lastErrAt = te, time.Now()
		s.mu.Unlock()
		return nil, te
	}
	s.mu.Lock()
	s.tok, s.lastErr = tok, nil
	s.mu.Unlock()
	return tok, nil
}

// invalidate drops the cached token if it is the one req was sent with, so
// that a 401 refreshes it once however many requests saw the 401.
func (s *tokenSource) invalidate(req *http.Request) {
	if req == nil {
		return
	}
	used := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.tok.AccessToken == used {
		s.tok = nil
	}
}

// tokenError turns an oauth2 error into a TokenError that holds neither the
// secret nor the response body verbatim.
func tokenError(err error) *TokenError {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		msg := re.ErrorDescription
		if msg == "" {
			msg = re.ErrorCode
		}
		if msg == "" {
			if st := decodeStatus(re.Body); st != nil {
				msg = st.Message.String()
			} else {
				msg = bareMessage(re.Body)
			}
		}
		return &TokenError{StatusCode: re.Response.StatusCode, Message: sanitize(msg)}
	}
	return &TokenError{Err: scrubURLError(unwrapOAuth(err))}
}

// unwrapOAuth strips oauth2's "cannot fetch token" prefix from a transport
// error while keeping it inspectable with errors.Is.
func unwrapOAuth(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// authTransport adds the bearer token to every resource request.
type authTransport struct {
	src  *tokenSource
	base http.RoundTripper
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.src.token(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	return t.base.RoundTrip(r)
}

// observedTransport reports token-endpoint exchanges to the metrics.
type observedTransport struct {
	base      http.RoundTripper
	userAgent string
	observe   func(endpoint, code string, d time.Duration)
}

func (t *observedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req.Header.Set("User-Agent", t.userAgent)
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.observe(EndpointToken, code, time.Since(start))
	return resp, err
}
