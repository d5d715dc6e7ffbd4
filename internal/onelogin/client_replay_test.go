package onelogin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

const tokenBody = `{"access_token":"tok-1","created_at":"2015-11-11T03:36:18.714Z","expires_in":36000,"refresh_token":"r","token_type":"bearer","account_id":555555}`

// replay answers the token endpoint and then the given body for every other
// call, with the rate-limit headers.
type replay struct {
	status  int
	body    string
	headers map[string]string

	mu       sync.Mutex
	requests []*http.Request
	bodies   []string
}

func (r *replay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/auth/oauth2/v2/token" {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, tokenBody)
		return
	}
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.requests = append(r.requests, req)
	r.bodies = append(r.bodies, string(b))
	r.mu.Unlock()
	w.Header().Set("X-RateLimit-Limit", "5000")
	w.Header().Set("X-RateLimit-Remaining", "4321")
	w.Header().Set("X-RateLimit-Reset", "1200")
	for k, v := range r.headers {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.status)
	io.WriteString(w, r.body)
}

func replayClient(t *testing.T, h http.Handler) *onelogin.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := onelogin.NewClient(onelogin.Config{BaseURL: srv.URL, ClientID: "id", ClientSecret: "s3cret-value", Timeout: 5 * time.Second, UserAgent: "mfa-worker/test", Transport: srv.Client().Transport})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestReplayDocumentedBodies(t *testing.T) {
	ctx := context.Background()
	t.Run("available factors, documented", func(t *testing.T) {
		r := &replay{status: 200, body: `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"auth_factors":[{"factor_id":16282,"name":"OneLogin SMS"},{"factor_id":"16283","name":"OneLogin Voice"}]}}`}
		f, resp, err := replayClient(t, r).AvailableFactors(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(f) != 2 || f[0].ID != 16282 || f[1].ID != 16283 || f[1].Name != "OneLogin Voice" {
			t.Fatalf("factors = %+v", f)
		}
		if resp.Rate.Limit != 5000 || resp.Rate.Remaining != 4321 || time.Until(resp.Rate.Reset) < 1190*time.Second {
			t.Fatalf("rate = %+v", resp.Rate)
		}
		if got := r.requests[0].URL.Path; got != "/api/1/users/1/auth_factors" {
			t.Fatalf("path = %s", got)
		}
		if ua := r.requests[0].Header.Get("User-Agent"); ua != "mfa-worker/test" {
			t.Fatalf("user agent = %q", ua)
		}
		if a := r.requests[0].Header.Get("Authorization"); a != "Bearer tok-1" {
			t.Fatalf("authorization = %q", a)
		}
	})
	t.Run("available factors, bare array", func(t *testing.T) {
		r := &replay{status: 200, body: `{"status":{"error":false,"code":200,"type":"Success","message":"Success"},"data":[{"factor_id":1,"name":"OneLogin SMS"}]}`}
		f, _, err := replayClient(t, r).AvailableFactors(ctx, 1)
		if err != nil || len(f) != 1 || f[0].ID != 1 {
			t.Fatalf("factors = %+v, err = %v", f, err)
		}
	})
	t.Run("enroll, data array, string id", func(t *testing.T) {
		r := &replay{status: 200, body: `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":[{"active":false,"default":false,"state_token":"5xxx604x8xx9x694xx860173xxx3x78x3x870x56","auth_factor_name":"OneLogin SMS","phone_number":"+1xxxxxxxxxx","type_display_name":"OneLogin SMS","needs_trigger":false,"user_display_name":"Rich's Phone","id":"1649045"}]}`}
		d, _, err := replayClient(t, r).EnrollFactor(ctx, 1, onelogin.EnrollRequest{FactorID: 16282, DisplayName: "Rich's Phone", Number: "+15555550100"})
		if err != nil {
			t.Fatal(err)
		}
		if d.ID != 1649045 || d.StateToken == "" || d.UserDisplayName != "Rich's Phone" {
			t.Fatalf("device = %+v", d)
		}
		// factor_id must be in the body: the generated SDKs drop it.
		if !strings.Contains(r.bodies[0], `"factor_id":16282`) || !strings.Contains(r.bodies[0], `"verified":false`) {
			t.Fatalf("enroll body = %s", r.bodies[0])
		}
	})
	t.Run("enroll, data object", func(t *testing.T) {
		r := &replay{status: 201, body: `{"status":{"error":false,"code":201,"type":"created","message":"Success"},"data":{"id":77,"active":true}}`}
		d, _, err := replayClient(t, r).EnrollFactor(ctx, 1, onelogin.EnrollRequest{FactorID: 1, DisplayName: "x", Number: "+15555550100", Verified: true})
		if err != nil || d.ID != 77 || !d.Active {
			t.Fatalf("device = %+v, err = %v", d, err)
		}
	})
	t.Run("enrolled factors", func(t *testing.T) {
		r := &replay{status: 200, body: `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"otp_devices":[{"active":true,"default":false,"auth_factor_name":"Google Authenticator","phone_number":null,"type_display_name":"Google Authenticator","needs_trigger":false,"user_display_name":"Google Authenticator","id":525509},{"active":true,"default":true,"auth_factor_name":"OneLogin Protect","type_display_name":"OneLogin Protect","needs_trigger":false,"user_display_name":"Pixel","id":"525510"}]}}`}
		d, _, err := replayClient(t, r).EnrolledFactors(ctx, 1)
		if err != nil || len(d) != 2 || d[0].ID != 525509 || d[1].ID != 525510 || !d[1].Default {
			t.Fatalf("devices = %+v, err = %v", d, err)
		}
	})
	t.Run("enrolled factors, none", func(t *testing.T) {
		r := &replay{status: 200, body: `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"otp_devices":[]}}`}
		d, _, err := replayClient(t, r).EnrolledFactors(ctx, 1)
		if err != nil || len(d) != 0 {
			t.Fatalf("devices = %+v, err = %v", d, err)
		}
	})
	t.Run("activate", func(t *testing.T) {
		r := &replay{status: 200, body: `{"status":{"type":"success","message":"SMS token sent to your mobile device. Authentication pending.","code":200,"error":false},"data":[{"auth_factor_name":"OneLogin SMS","type_display_name":"OneLogin SMS","user_display_name":"+1xxxxxxxxxx","device_id":"4444","state_token":"f8a7ab0c","id":1}]}`}
		a, _, err := replayClient(t, r).ActivateFactor(ctx, 1, 4444, &onelogin.ActivateRequest{StateTokenExpiresIn: 600, SMSMessage: "Code {{otp_code}}"})
		if err != nil || a.DeviceID != 4444 || a.StateToken != "f8a7ab0c" || a.UserID != 1 {
			t.Fatalf("activation = %+v, err = %v", a, err)
		}
		if r.requests[0].URL.Path != "/api/1/users/1/otp_devices/4444/trigger" || !strings.Contains(r.bodies[0], `"state_token_expires_in":600`) {
			t.Fatalf("request = %s %s", r.requests[0].URL.Path, r.bodies[0])
		}
	})
	t.Run("verify", func(t *testing.T) {
		r := &replay{status: 200, body: `{"status":{"type":"success","message":"Success","code":200,"error":false}}`}
		if _, err := replayClient(t, r).VerifyFactor(ctx, 1, 4444, onelogin.VerifyRequest{OTPToken: "123456", StateToken: "st"}); err != nil {
			t.Fatal(err)
		}
		if r.requests[0].URL.Path != "/api/1/users/1/otp_devices/4444/verify" || r.bodies[0] != `{"otp_token":"123456","state_token":"st"}` {
			t.Fatalf("request = %s %s", r.requests[0].URL.Path, r.bodies[0])
		}
	})
	t.Run("remove", func(t *testing.T) {
		r := &replay{status: 200, body: `{}`}
		if _, err := replayClient(t, r).RemoveFactor(ctx, 1, 4444); err != nil {
			t.Fatal(err)
		}
		if r.requests[0].Method != http.MethodDelete || r.requests[0].URL.Path != "/api/1/users/1/otp_devices/4444" {
			t.Fatalf("request = %s %s", r.requests[0].Method, r.requests[0].URL.Path)
		}
	})
	t.Run("remove, already gone", func(t *testing.T) {
		r := &replay{status: 400, body: `{"status":{"error":true,"code":400,"type":"bad request","message":"Factor could not be found"}}`}
		_, err := replayClient(t, r).RemoveFactor(ctx, 1, 4444)
		if !onelogin.IsFactorNotFound(err) || onelogin.Classify(err) != onelogin.Permanent {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("mfa token, no envelope, misspelt", func(t *testing.T) {
		r := &replay{status: 201, body: `{"mfa_token":"55647655","resuable":true,"expires_at":"2019-01-16T22:16:38Z"}`}
		tok, _, err := replayClient(t, r).GenerateMFAToken(ctx, 1, onelogin.MFATokenRequest{ExpiresIn: 259200})
		if err != nil || tok.Token != "55647655" || !tok.Reusable || tok.ExpiresAt.Year() != 2019 {
			t.Fatalf("token = %+v, err = %v", tok, err)
		}
	})
	t.Run("mfa token, enveloped", func(t *testing.T) {
		r := &replay{status: 200, body: `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":[{"mfa_token":55647655,"reusable":false,"expires_at":"2019-01-16T22:16:38.000Z"}]}`}
		tok, _, err := replayClient(t, r).GenerateMFAToken(ctx, 1, onelogin.MFATokenRequest{})
		if err != nil || tok.Token != "55647655" || tok.Reusable {
			t.Fatalf("token = %+v, err = %v", tok, err)
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		r := &replay{status: 200, body: `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"X-RateLimit-Limit":5000,"X-RateLimit-Remaining":4992,"X-RateLimit-Reset":1153}}`}
		rl, _, err := replayClient(t, r).RateLimitStatus(ctx)
		if err != nil || rl.Limit != 5000 || rl.Remaining != 4992 || time.Until(rl.Reset) < 1100*time.Second {
			t.Fatalf("rate limit = %+v, err = %v", rl, err)
		}
	})
}

func TestReplayErrorShapes(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		status    int
		body      string
		wantCode  int
		wantClass onelogin.Class
		wantMsg   string
	}{
		{"user not found", 404, `{"status":{"error":true,"code":404,"type":"not found","message":"User for id 9 was not found"}}`, 404, onelogin.Permanent, "User for id 9 was not found"},
		{"message object", 400, `{"status":{"error":true,"code":400,"type":"Bad Request","message":{"description":"Validation failed","attribute":"number"}}}`, 400, onelogin.Permanent, "Validation failed (number)"},
		{"upper-case type", 401, `{"status":{"error":true,"code":401,"type":"UNAUTHORIZED","message":"Insufficient Permission"}}`, 401, onelogin.Permanent, "Insufficient Permission"},
		{"v2 style body", 404, `{"statusCode":404,"name":"NotFound","message":"No Route Exists"}`, 404, onelogin.Permanent, "No Route Exists"},
		{"html 502", 502, `<html><body>Bad Gateway</body></html>`, 502, onelogin.Transient, ""},
		{"500 envelope", 500, `{"status":{"error":true,"code":500,"type":"Internal Server Error","message":"Internal Server Error"}}`, 500, onelogin.Transient, "Internal Server Error"},
		{"200 carrying an error", 200, `{"status":{"error":true,"code":400,"type":"bad request","message":"Factor could not be found"}}`, 400, onelogin.Permanent, "Factor could not be found"},
		{"429 without body", 429, ``, 429, onelogin.RateLimited, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &replay{status: tc.status, body: tc.body}
			if tc.status == 429 {
				r.headers = map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0"}
			}
			_, err := replayClient(t, r).RemoveFactor(ctx, 1, 2)
			if err == nil {
				t.Fatal("no error")
			}
			if onelogin.StatusCode(err) != tc.wantCode || onelogin.Classify(err) != tc.wantClass {
				t.Fatalf("code %d class %v, err = %v", onelogin.StatusCode(err), onelogin.Classify(err), err)
			}
			var er *onelogin.ErrorResponse
			if tc.wantMsg != "" && (!errors.As(err, &er) || er.Message() != tc.wantMsg) {
				t.Fatalf("message: err = %v", err)
			}
		})
	}
}

func TestBodySizeLimit(t *testing.T) {
	r := &replay{status: 200, body: `{"status":{"error":false},"data":{"otp_devices":[` + strings.Repeat(`{"id":1},`, 200_000) + `{"id":2}]}}`}
	_, _, err := replayClient(t, r).EnrolledFactors(context.Background(), 1)
	if !errors.Is(err, onelogin.ErrBodyTooLarge) {
		t.Fatalf("err = %v", err)
	}
}

func TestUndecodableSuccessIsTransient(t *testing.T) {
	r := &replay{status: 200, body: `{"status":{"error":false},"data":{"otp_devices":"nope"}}`}
	_, _, err := replayClient(t, r).EnrolledFactors(context.Background(), 1)
	var de *onelogin.DecodeError
	if !errors.As(err, &de) || onelogin.Classify(err) != onelogin.Transient {
		t.Fatalf("err = %v", err)
	}
}

// flaky401 answers 401 to the first n resource calls, then succeeds; every
// token request gets a fresh token.
type flaky401 struct {
	n      int32
	calls  atomic.Int32
	tokens atomic.Int32
	mu     sync.Mutex
	bodies []string
	auths  []string
}

func (f *flaky401) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if req.URL.Path == "/auth/oauth2/v2/token" {
		n := f.tokens.Add(1)
		io.WriteString(w, strings.Replace(tokenBody, "tok-1", "tok-"+string(rune('0'+n)), 1))
		return
	}
	b, _ := io.ReadAll(req.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, string(b))
	f.auths = append(f.auths, req.Header.Get("Authorization"))
	f.mu.Unlock()
	if f.calls.Add(1) <= f.n {
		w.WriteHeader(401)
		io.WriteString(w, `{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}`)
		return
	}
	io.WriteString(w, `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":[{"id":5,"active":false}]}`)
}

func TestPostResentWithBodyAfterFirst401(t *testing.T) {
	f := &flaky401{n: 1}
	c := replayClient(t, f)
	d, _, err := c.EnrollFactor(context.Background(), 3, onelogin.EnrollRequest{FactorID: 100001, DisplayName: "Phone", Number: "+15555550100"})
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != 5 {
		t.Fatalf("device = %+v", d)
	}
	if len(f.bodies) != 2 || f.bodies[0] != f.bodies[1] || !strings.Contains(f.bodies[1], `"display_name":"Phone"`) {
		t.Fatalf("bodies = %q", f.bodies)
	}
	if f.tokens.Load() != 2 || f.auths[0] == f.auths[1] {
		t.Fatalf("token fetches = %d, auths = %q", f.tokens.Load(), f.auths)
	}
}

func TestSecond401IsPermanent(t *testing.T) {
	f := &flaky401{n: 100}
	c := replayClient(t, f)
	_, _, err := c.EnrollFactor(context.Background(), 3, onelogin.EnrollRequest{FactorID: 100001, DisplayName: "Phone", Number: "+15555550100"})
	if !onelogin.IsUnauthorized(err) || onelogin.Classify(err) != onelogin.Permanent {
		t.Fatalf("err = %v", err)
	}
	if f.calls.Load() != 2 || f.tokens.Load() != 2 {
		t.Fatalf("calls = %d, token fetches = %d; want 2 and 2", f.calls.Load(), f.tokens.Load())
	}
}

// eofTokens drops the first n token requests without an answer.
type eofTokens struct {
	n      int32
	tokens atomic.Int32
}

func (e *eofTokens) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/auth/oauth2/v2/token" {
		if e.tokens.Add(1) <= e.n {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		if u, p, ok := req.BasicAuth(); !ok || u != "id" || p != "s3cret-value" {
			w.WriteHeader(401)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, tokenBody)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{}`)
}

func TestTokenFetchRetriesEOFAndIsCached(t *testing.T) {
	e := &eofTokens{n: 2}
	c := replayClient(t, e)
	for i := 0; i < 5; i++ {
		if _, err := c.RemoveFactor(context.Background(), 1, 2); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.tokens.Load(); got != 3 {
		t.Fatalf("token requests = %d, want 3 (two EOFs, one success, then cached)", got)
	}
}

func TestBadCredentialsArePermanentAndSecretFree(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		io.WriteString(w, `{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}`)
	}))
	defer srv.Close()
	c, err := onelogin.NewClient(onelogin.Config{BaseURL: srv.URL, ClientID: "id", ClientSecret: "s3cret-value", TokenMaxElapsed: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.RemoveFactor(context.Background(), 1, 2)
	var te *onelogin.TokenError
	if !errors.As(err, &te) || te.StatusCode != 401 || onelogin.Classify(err) != onelogin.Permanent {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "Authentication Failure") {
		t.Fatalf("error text = %q", err.Error())
	}
	if err := c.Token(context.Background()); err == nil {
		t.Fatal("Token succeeded with bad credentials")
	}
}

func TestNewClientValidates(t *testing.T) {
	for _, cfg := range []onelogin.Config{
		{},
		{BaseURL: "ftp://x", ClientID: "a", ClientSecret: "b"},
		{BaseURL: "https://acme.onelogin.com"},
	} {
		if _, err := onelogin.NewClient(cfg); err == nil {
			t.Errorf("NewClient(%+v) succeeded", cfg)
		}
	}
	if got := onelogin.SubdomainURL("acme"); got != "https://acme.onelogin.com" {
		t.Fatalf("SubdomainURL = %s", got)
	}
}

// round3 reads a recorded answer from testdata/round3 (see its README for
// where each comes from).
func round3(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "round3", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// usersV2 answers GET /api/2/users as OneLogin does: two pages, the second
// reached by the opaque After-Cursor alone; a cursor together with limit or
// page is refused with the recorded 400; no rate-limit headers (v2 answers
// carry none). Every other call answers with the v1 headers and no devices.
type usersV2 struct {
	pages   [2]string
	cursor  string
	xor400  string
	repeat  bool // every page names the same After-Cursor
	mu      sync.Mutex
	queries []url.Values
}

func (u *usersV2) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/auth/oauth2/v2/token":
		io.WriteString(w, tokenBody)
		return
	case "/api/2/users":
	default:
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "4321")
		w.Header().Set("X-RateLimit-Reset", "1200")
		io.WriteString(w, `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"otp_devices":[]}}`)
		return
	}
	q := r.URL.Query()
	u.mu.Lock()
	u.queries = append(u.queries, q)
	u.mu.Unlock()
	c := q.Get("cursor")
	switch {
	case c != "" && (q.Has("limit") || q.Has("page")):
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, u.xor400)
	case c == "" || u.repeat:
		w.Header().Set("After-Cursor", u.cursor)
		io.WriteString(w, u.pages[0])
	case c == u.cursor:
		io.WriteString(w, u.pages[1])
	default:
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"status":400,"error":"BadRequestError","description":"Invalid pagination cursor"}`)
	}
}

// TestReplayRoundThree replays what OneLogin answers and the simulator did
// not: each subtest fails on a client that sends cursor and limit together,
// reads no v2 description, loops on a repeated cursor, takes header-less
// answers as a budget signal, or repeats a write answered 502.
func TestReplayRoundThree(t *testing.T) {
	ctx := context.Background()
	page1 := `[{"id":1001,"email":"ada@example.com","username":"ada","external_id":null,"firstname":"Ada","lastname":"Lovelace","status":1,"state":1}]`
	page2 := `[{"id":1002,"email":"Ada@Example.com","username":"ada2","external_id":"E-2","firstname":"Ada","lastname":"King","status":1,"state":1}]`

	t.Run("users paging: cursor xor limit, opaque cursor", func(t *testing.T) {
		h := &usersV2{pages: [2]string{page1, page2}, cursor: round3(t, "users_after_cursor.txt"), xor400: round3(t, "users_cursor_and_limit_400.json")}
		c := replayClient(t, h)
		_, _, err := c.FindUser(ctx, onelogin.UserSelector{Email: "ada@example.com"}, true)
		var le *onelogin.UserLookupError
		if !errors.As(err, &le) || le.Code != onelogin.CodeIdentityAmbiguous || le.Matches != 2 {
			t.Fatalf("err = %v; want both pages read and two matches", err)
		}
		if len(h.queries) != 2 || h.queries[0].Get("limit") != "50" || h.queries[1].Get("cursor") != h.cursor || h.queries[1].Has("limit") || h.queries[1].Has("page") {
			t.Fatalf("queries = %v", h.queries)
		}
		// The username is on page 2 only: found, through the cursor.
		u, _, err := c.FindUser(ctx, onelogin.UserSelector{Username: "ada2", ExternalID: "E-2"}, false)
		if err != nil || u.ID != 1002 {
			t.Fatalf("page-2 user: %+v, %v", u, err)
		}
	})

	t.Run("users paging: a repeated cursor ends the loop", func(t *testing.T) {
		h := &usersV2{pages: [2]string{page1, page2}, cursor: round3(t, "users_after_cursor.txt"), xor400: round3(t, "users_cursor_and_limit_400.json"), repeat: true}
		_, _, err := replayClient(t, h).FindUser(ctx, onelogin.UserSelector{Email: "ada@example.com"}, false)
		var pe *onelogin.PagingError
		if !errors.As(err, &pe) || onelogin.Classify(err) != onelogin.Transient {
			t.Fatalf("err = %v; want a transient PagingError", err)
		}
		if len(h.queries) != 2 {
			t.Fatalf("%d requests; the repeated cursor was followed", len(h.queries))
		}
	})

	t.Run("v2 error bodies keep their description", func(t *testing.T) {
		for _, tc := range []struct{ file, typ, msg string }{
			{"users_cursor_and_limit_400.json", "BadRequestError", "Requests can only have cursor xor pagination arguments"},
			{"users_invalid_cursor_400.json", "BadRequestError", "Invalid pagination cursor"},
			{"v2_statuscode_422.json", "UnprocessableEntityError", "Validation failed: Email must be unique within DOMAIN"},
		} {
			body := round3(t, tc.file)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if r.URL.Path == "/auth/oauth2/v2/token" {
					io.WriteString(w, tokenBody)
					return
				}
				var v struct {
					Status     int `json:"status"`
					StatusCode int `json:"statusCode"`
				}
				_ = json.Unmarshal([]byte(body), &v)
				w.WriteHeader(max(v.Status, v.StatusCode))
				io.WriteString(w, body)
			})
			_, _, err := replayClient(t, h).ListUsers(ctx, onelogin.ListUsersOptions{Email: "ada@example.com"}, false)
			var er *onelogin.ErrorResponse
			if !errors.As(err, &er) || !strings.Contains(er.Message(), tc.msg) || er.Status.Type != tc.typ || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s: err = %v", tc.file, err)
			}
			if onelogin.Classify(err) != onelogin.Permanent {
				t.Errorf("%s: class %v", tc.file, onelogin.Classify(err))
			}
		}
	})

	t.Run("header-less v2 and 401 answers leave the budget unknown", func(t *testing.T) {
		for _, first := range []string{"v2 lookup", "401"} {
			t.Run(first, func(t *testing.T) {
				var mu sync.Mutex
				inflight, unauthorized := 0, first == "401"
				release := make(chan struct{})
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					switch {
					case r.URL.Path == "/auth/oauth2/v2/token":
						io.WriteString(w, tokenBody)
						return
					case r.URL.Path == "/api/2/users":
						io.WriteString(w, page1) // no rate-limit headers, as recorded
						return
					}
					mu.Lock()
					if unauthorized {
						mu.Unlock()
						w.WriteHeader(http.StatusUnauthorized) // no rate-limit headers, as recorded
						io.WriteString(w, `{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}`)
						return
					}
					inflight++
					mu.Unlock()
					<-release
					mu.Lock()
					inflight--
					mu.Unlock()
					w.Header().Set("X-RateLimit-Limit", "5000")
					w.Header().Set("X-RateLimit-Remaining", "4321")
					w.Header().Set("X-RateLimit-Reset", "1200")
					io.WriteString(w, `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"otp_devices":[]}}`)
				})
				srv := httptest.NewServer(h)
				t.Cleanup(srv.Close)
				p := onelogin.NewPacer(0)
				c, err := onelogin.NewClient(onelogin.Config{BaseURL: srv.URL, ClientID: "id", ClientSecret: "s", Timeout: 5 * time.Second, Transport: srv.Client().Transport, Pacer: p})
				if err != nil {
					t.Fatal(err)
				}
				if first == "401" {
					if _, _, err := c.EnrolledFactors(ctx, 1); onelogin.StatusCode(err) != http.StatusUnauthorized {
						t.Fatalf("401: %v", err)
					}
					mu.Lock()
					unauthorized = false
					mu.Unlock()
				} else if _, _, err := c.FindUser(ctx, onelogin.UserSelector{Email: "ada@example.com"}, false); err != nil {
					t.Fatal(err)
				}
				if !c.BudgetResetsAt().IsZero() {
					t.Fatal("a header-less answer set a budget window")
				}
				// The budget is still unknown: the next v1 calls go one at a
				// time until an answer carries the headers.
				var wg sync.WaitGroup
				var once sync.Once
				free := func() { once.Do(func() { close(release) }) }
				// A failed wait still lets the held calls finish.
				defer func() { free(); wg.Wait() }()
				for range 3 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, _, _ = c.EnrolledFactors(ctx, 1)
					}()
				}
				inFlight := func() int {
					mu.Lock()
					defer mu.Unlock()
					return inflight
				}
				var n int
				testenv.Eventually(t, 5*time.Second, func() bool { n = inFlight(); return n+p.Waiting() == 3 }, func() string {
					return fmt.Sprintf("in flight %d, waiting %d, want 3 in all", inFlight(), p.Waiting())
				})
				if n != 1 {
					t.Errorf("%d calls sent at once while the budget was unknown; want one probe", n)
				}
				free()
				wg.Wait()
				if r := c.BudgetResetsAt(); time.Until(r) < 1100*time.Second {
					t.Fatalf("budget window after the v1 answers: %v", r)
				}
			})
		}
	})

	t.Run("a Users API 429 is not the v1 budget's", func(t *testing.T) {
		var users, v1 atomic.Int32
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			switch r.URL.Path {
			case "/auth/oauth2/v2/token":
				io.WriteString(w, tokenBody)
			case "/api/2/users":
				users.Add(1)
				w.WriteHeader(http.StatusTooManyRequests) // no rate-limit headers
			default:
				v1.Add(1)
				w.Header().Set("X-RateLimit-Limit", "5000")
				w.Header().Set("X-RateLimit-Remaining", "4000")
				w.Header().Set("X-RateLimit-Reset", "600")
				io.WriteString(w, `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"otp_devices":[]}}`)
			}
		})
		c := replayClient(t, h)
		if _, _, err := c.EnrolledFactors(ctx, 1); err != nil {
			t.Fatal(err)
		}
		reset := c.BudgetResetsAt()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, _, err := c.FindUser(cctx, onelogin.UserSelector{Email: "ada@example.com"}, true)
		var rl *onelogin.RateLimitError
		if !errors.As(err, &rl) || onelogin.Classify(err) != onelogin.RateLimited || users.Load() != 1 {
			t.Fatalf("err = %v after %d calls; want the 429 back at once", err, users.Load())
		}
		if !c.BudgetResetsAt().Equal(reset) {
			t.Fatalf("the v1 window moved from %v to %v", reset, c.BudgetResetsAt())
		}
		if _, _, err := c.EnrolledFactors(cctx, 1); err != nil || v1.Load() != 2 {
			t.Fatalf("a v1 call after the Users API 429: %v", err)
		}
	})

	t.Run("push device listed twice", func(t *testing.T) {
		r := &replay{status: 200, body: round3(t, "enrolled_push_pair.json")}
		d, _, err := replayClient(t, r).EnrolledFactors(ctx, 1)
		if err != nil || len(d) != 2 || d[0].ID != 3417001 || !d[0].NeedsTrigger || !d[0].Active || d[1].ID != 3417002 {
			t.Fatalf("devices = %+v, err = %v", d, err)
		}
	})

	t.Run("a 5xx after sending may have taken effect; 503, 429 and no connection did not", func(t *testing.T) {
		gateway := round3(t, "gateway_502.html")
		for _, tc := range []struct {
			status int
			body   string
			may    bool
		}{
			{502, gateway, true},
			{504, gateway, true},
			{500, `{"status":{"error":true,"code":500,"type":"Internal Server Error","message":"Internal Server Error"}}`, true},
			{503, `{"status":{"error":true,"code":503,"type":"service unavailable","message":"Service Unavailable"}}`, false},
			{429, ``, false},
		} {
			r := &replay{status: tc.status, body: tc.body}
			if tc.status == 429 {
				r.headers = map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0"}
			}
			c := replayClient(t, r)
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, _, err := c.ActivateFactor(cctx, 1, 2, nil)
			cancel()
			if err == nil || onelogin.MayHaveTakenEffect(err) != tc.may {
				t.Errorf("%d: may have taken effect = %v, want %v (err %v)", tc.status, onelogin.MayHaveTakenEffect(err), tc.may, err)
			}
			if tc.status >= 500 && onelogin.Classify(err) != onelogin.Transient {
				t.Errorf("%d: class %v; a read may be retried", tc.status, onelogin.Classify(err))
			}
		}
		// A refused connection: the token comes from a live server, the
		// activate goes to a closed port.
		live := httptest.NewServer(&replay{status: 200})
		t.Cleanup(live.Close)
		closed := httptest.NewServer(http.NotFoundHandler())
		closedHost := closed.Listener.Addr().String()
		closed.Close()
		rt := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			if r.URL.Path != "/auth/oauth2/v2/token" {
				r = r.Clone(r.Context())
				r.URL.Host = closedHost
			}
			return live.Client().Transport.RoundTrip(r)
		})
		c, err := onelogin.NewClient(onelogin.Config{BaseURL: live.URL, ClientID: "id", ClientSecret: "s", Timeout: 10 * time.Second, Transport: rt})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.ActivateFactor(ctx, 1, 2, nil); err == nil || onelogin.MayHaveTakenEffect(err) {
			t.Errorf("refused connection: may have taken effect (err %v)", err)
		}
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
