package simulator

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

type harness struct {
	t   *testing.T
	sim *Server
	srv *httptest.Server
	tok string
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	sim := New(cfg)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	h := &harness{t: t, sim: sim, srv: srv}
	status, body, _ := h.tokenRequest(basicAuthHeader(sim.cfg.ClientID, sim.cfg.ClientSecret), "application/json", `{"grant_type":"client_credentials"}`)
	if status != 200 {
		t.Fatalf("token: %d %s", status, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal([]byte(body), &tr); err != nil || tr.AccessToken == "" || tr.TokenType != "bearer" || tr.ExpiresIn < 35990 {
		t.Fatalf("token body %s: %v", body, err)
	}
	h.tok = tr.AccessToken
	return h
}

func (h *harness) tokenRequest(auth, ctype, body string) (int, string, http.Header) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/auth/oauth2/v2/token", strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", ctype)
	return h.do(req)
}

func (h *harness) call(method, path, body string) (int, string, http.Header) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "bearer:"+h.tok)
	req.Header.Set("Content-Type", "application/json")
	return h.do(req)
}

func (h *harness) do(req *http.Request) (int, string, http.Header) {
	h.t.Helper()
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestTokenEndpoint(t *testing.T) {
	h := newHarness(t, Config{ClientID: "cid", ClientSecret: "sec"})
	// The documented forms (onelogin-api.md, "Hosts and authentication"),
	// each getting the same token back until it expires.
	for _, tc := range []struct{ name, auth, ctype, body string }{
		{"form body, no Authorization", "", "application/x-www-form-urlencoded", "grant_type=client_credentials&client_id=cid&client_secret=sec"},
		{"JSON body, HTTP Basic", basicAuthHeader("cid", "sec"), "application/json", `{"grant_type":"client_credentials"}`},
		{"JSON body, OneLogin header", "client_id:cid, client_secret:sec", "application/json", `{"grant_type":"client_credentials"}`},
	} {
		status, body, _ := h.tokenRequest(tc.auth, tc.ctype, tc.body)
		if status != 200 || !strings.Contains(body, h.tok) {
			t.Fatalf("%s: %d %s", tc.name, status, body)
		}
	}
	// Form body and HTTP Basic together (what x/oauth2 sends) is in no
	// OneLogin sample: refused.
	status, body, _ := h.tokenRequest(basicAuthHeader("cid", "sec"), "application/x-www-form-urlencoded", "grant_type=client_credentials")
	if status != 400 {
		t.Fatalf("form + Basic: %d %s", status, body)
	}
	status, body, _ = h.tokenRequest("", "application/json", `{"grant_type":"client_credentials","client_id":"cid","client_secret":"sec"}`)
	if status != 400 {
		t.Fatalf("JSON credentials without a header: %d %s", status, body)
	}
	status, body, _ = h.tokenRequest(basicAuthHeader("cid", "wrong"), "application/json", `{"grant_type":"client_credentials"}`)
	if status != 401 || !strings.Contains(body, "Authentication Failure") {
		t.Fatalf("bad secret: %d %s", status, body)
	}
	status, _, _ = h.tokenRequest(basicAuthHeader("cid", "sec"), "application/json", `{"grant_type":"password"}`)
	if status != 400 {
		t.Fatalf("bad grant: %d", status)
	}
	h.sim.ExpireTokens()
	status, body, _ = h.call("GET", "/api/1/users/1/otp_devices", "")
	if status != 401 || !strings.Contains(body, "Authentication Failure") {
		t.Fatalf("expired token: %d %s", status, body)
	}
}

// TestTokenLifetime: the same token until it expires, expires_in the full
// lifetime, created_at when it was made (onelogin-api.md, recorded session).
func TestTokenLifetime(t *testing.T) {
	clock := newClock()
	sim := New(Config{Now: clock.Now, ClientID: "c", ClientSecret: "s"})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	h := &harness{t: t, sim: sim, srv: srv}
	fetch := func() (tok string, expiresIn int, createdAt string) {
		t.Helper()
		status, body, _ := h.tokenRequest(basicAuthHeader("c", "s"), "application/json", `{"grant_type":"client_credentials"}`)
		var tr struct {
			AccessToken string `json:"access_token"`
			ExpiresIn   int    `json:"expires_in"`
			CreatedAt   string `json:"created_at"`
		}
		if status != 200 || json.Unmarshal([]byte(body), &tr) != nil {
			t.Fatalf("token: %d %s", status, body)
		}
		return tr.AccessToken, tr.ExpiresIn, tr.CreatedAt
	}
	t0 := clock.Now()
	tok1, in1, created1 := fetch()
	clock.Advance(9*time.Hour + 59*time.Minute)
	tok2, in2, created2 := fetch()
	if tok2 != tok1 || in1 != 36000 || in2 != 36000 || created1 != created2 || created1 != t0.UTC().Format("2006-01-02T15:04:05.000Z") {
		t.Fatalf("near the end: %s/%d/%s then %s/%d/%s", tok1[:4], in1, created1, tok2[:4], in2, created2)
	}
	clock.Advance(time.Minute)
	if tok3, _, _ := fetch(); tok3 == tok1 {
		t.Fatal("an expired token was handed out again")
	}
	// The older readings, as modes.
	sim2 := New(Config{Now: clock.Now, TokenExpiresInLeft: true, TokenWithoutCreatedAt: true})
	srv2 := httptest.NewServer(sim2)
	defer srv2.Close()
	h2 := &harness{t: t, sim: sim2, srv: srv2}
	h2.tokenRequest(basicAuthHeader("sim-client", "sim-secret"), "application/json", `{"grant_type":"client_credentials"}`)
	clock.Advance(time.Hour)
	_, body, _ := h2.tokenRequest(basicAuthHeader("sim-client", "sim-secret"), "application/json", `{"grant_type":"client_credentials"}`)
	if !strings.Contains(body, `"expires_in":32400`) || strings.Contains(body, "created_at") {
		t.Fatalf("legacy token answer: %s", body)
	}
}

// clock is a settable clock for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestRoutesAndQuirks(t *testing.T) {
	h := newHarness(t, Config{LastUser: 100})
	for _, path := range []string{"/api/1/users/1/auth_factors", "/api/1/users/1/auth_factor"} {
		status, body, _ := h.call("GET", path, "")
		if status != 200 || !strings.Contains(body, `"auth_factors"`) {
			t.Fatalf("%s: %d %s", path, status, body)
		}
	}
	status, body, _ := h.call("GET", "/api/1/users/101/auth_factors", "")
	if status != 404 || !strings.Contains(body, "User for id 101 was not found") {
		t.Fatalf("unknown user: %d %s", status, body)
	}
	status, body, _ = h.call("PUT", "/api/1/users/1/otp_devices", "")
	if status != 404 || !strings.Contains(body, "No Route Exists") {
		t.Fatalf("wrong method: %d %s", status, body)
	}
	status, body, _ = h.call("DELETE", "/api/1/users/1/otp_devices/123", "")
	if status != 400 || !strings.Contains(body, "Factor could not be found") {
		t.Fatalf("missing device: %d %s", status, body)
	}
	status, body, _ = h.call("POST", "/api/1/users/1/mfa_token", `{"expires_in":300}`)
	// 201 as in the official Ruby SDK's check (onelogin-api.md, endpoint 7).
	if status != 201 || strings.Contains(body, `"status"`) || !strings.Contains(body, `"mfa_token"`) {
		t.Fatalf("mfa token must be un-enveloped, 201: %d %s", status, body)
	}
	status, body, _ = h.call("POST", "/api/1/users/1/otp_devices/0/verify", `{"otp_token":"nope"}`)
	if status != 401 {
		t.Fatalf("bad temp token: %d %s", status, body)
	}
	h.sim.DenyScope(true)
	status, body, _ = h.call("DELETE", "/api/1/users/1/otp_devices/123", "")
	if status != 401 || !strings.Contains(body, "Insufficient Permission") {
		t.Fatalf("deny scope: %d %s", status, body)
	}
	if n := len(h.sim.Effects()); n != 1 {
		t.Fatalf("effects = %d, want 1 (the mfa token)", n)
	}
}

func TestRateLimitWindow(t *testing.T) {
	clock := newClock()
	h := newHarness(t, Config{RateLimit: 3, RateWindow: 1500 * time.Millisecond, Now: clock.Now})
	for i := 0; i < 3; i++ {
		status, _, hdr := h.call("GET", "/api/1/users/1/otp_devices", "")
		if status != 200 || hdr.Get("X-RateLimit-Remaining") != string(rune('2'-i)) || hdr.Get("X-RateLimit-Limit") != "3" || hdr.Get("X-RateLimit-Reset") != "2" {
			t.Fatalf("call %d: %d %v", i, status, hdr)
		}
	}
	status, body, hdr := h.call("GET", "/api/1/users/1/otp_devices", "")
	if status != 429 || hdr.Get("X-RateLimit-Remaining") != "0" || !strings.Contains(body, `"code":429`) {
		t.Fatalf("spent budget: %d %s %v", status, body, hdr)
	}
	_, body, _ = h.call("GET", "/auth/rate_limit", "")
	if !strings.Contains(body, `"X-RateLimit-Remaining":0`) {
		t.Fatalf("rate_limit: %s", body)
	}
	clock.Advance(1499 * time.Millisecond)
	if status, _, hdr := h.call("GET", "/api/1/users/1/otp_devices", ""); status != 429 || hdr.Get("X-RateLimit-Reset") != "1" {
		t.Fatalf("a moment before the reset: %d %v", status, hdr)
	}
	clock.Advance(time.Millisecond)
	status, _, hdr = h.call("GET", "/api/1/users/1/otp_devices", "")
	if status != 200 || hdr.Get("X-RateLimit-Remaining") != "2" || hdr.Get("X-RateLimit-Reset") != "2" {
		t.Fatalf("after the reset: %d %v", status, hdr)
	}
}

func TestFaults(t *testing.T) {
	clock := newClock()
	h := newHarness(t, Config{Seed: 7, Now: clock.Now})
	h.sim.SetFaults(Faults{ErrorRate: 1})
	if status, _, _ := h.call("GET", "/api/1/users/1/otp_devices", ""); status < 500 {
		t.Fatalf("error rate 1: %d", status)
	}
	h.sim.SetFaults(Faults{DropRate: 1})
	if status, _, _ := h.call("GET", "/api/1/users/1/otp_devices", ""); status != 0 {
		t.Fatalf("drop rate 1: %d", status)
	}
	h.sim.SetFaults(Faults{OutageUntil: clock.Now().Add(time.Minute)})
	if status, _, _ := h.call("GET", "/api/1/users/1/otp_devices", ""); status != 503 {
		t.Fatalf("outage: %d", status)
	}
	clock.Advance(time.Minute)
	if status, _, _ := h.call("GET", "/api/1/users/1/otp_devices", ""); status != 200 {
		t.Fatalf("after the outage: %d", status)
	}
	h.sim.SetFaults(Faults{Burst429: 2})
	for i := 0; i < 2; i++ {
		if status, _, hdr := h.call("GET", "/api/1/users/1/otp_devices", ""); status != 429 || hdr.Get("X-RateLimit-Reset") != "1" {
			t.Fatalf("burst %d: %d", i, status)
		}
	}
	if status, _, _ := h.call("GET", "/api/1/users/1/otp_devices", ""); status != 200 {
		t.Fatalf("after burst: %d", status)
	}
	h.sim.SetFaults(Faults{StormUntil: clock.Now().Add(1500 * time.Millisecond)})
	if status, _, hdr := h.call("GET", "/api/1/users/1/otp_devices", ""); status != 429 || hdr.Get("X-RateLimit-Reset") != "2" || hdr.Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("storm: %d %v", status, hdr)
	}
	clock.Advance(1500 * time.Millisecond)
	if status, _, _ := h.call("GET", "/api/1/users/1/otp_devices", ""); status != 200 {
		t.Fatalf("after the storm: %d", status)
	}
	h.sim.SetFaults(Faults{Latency: 100 * time.Millisecond})
	t0 := time.Now()
	h.call("GET", "/api/1/users/1/otp_devices", "")
	if d := time.Since(t0); d < 100*time.Millisecond {
		t.Fatalf("latency: answered in %v", d)
	}
	// A lost reply: the effect happens, the caller hears nothing.
	h.sim.SetFaults(Faults{LostReplyRate: 1})
	status, _, _ := h.call("POST", "/api/1/users/1/otp_devices", `{"factor_id":100001,"display_name":"p","number":"+15555550100"}`)
	if status != 0 || len(h.sim.Devices(1)) != 1 || len(h.sim.Effects()) != 1 {
		t.Fatalf("lost reply: status %d, devices %d, effects %d", status, len(h.sim.Devices(1)), len(h.sim.Effects()))
	}
	st := h.sim.Stats()
	// Go's transport re-sends a GET once when a reused connection closes
	// without an answer, so the dropped GET may count twice.
	if st.ServerError != 2 || st.Dropped < 2 || st.Dropped > 3 || st.TooMany != 3 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestEnrollVerifyWithStateToken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
	}{{"documented 400", 0}, {"legacy 401", 401}} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			h := newHarness(t, Config{Now: clock.Now, StateTokenExpiredStatus: tc.status})
			_, body, _ := h.call("POST", "/api/1/users/3/otp_devices", `{"factor_id":100002,"display_name":"desk","number":"+15555550100"}`)
			var env struct {
				Data []struct {
					ID         int64  `json:"id"`
					StateToken string `json:"state_token"`
				} `json:"data"`
			}
			if err := json.Unmarshal([]byte(body), &env); err != nil || len(env.Data) != 1 {
				t.Fatalf("enroll: %s", body)
			}
			d := env.Data[0]
			otp := h.sim.LastOTP(3, d.ID)
			clock.Advance(121 * time.Second) // the state token lives 120 s
			status, body, _ := h.call("POST", "/api/1/users/3/otp_devices/"+itoa(d.ID)+"/verify", `{"otp_token":"`+otp+`","state_token":"`+d.StateToken+`"}`)
			want := 400
			if tc.status != 0 {
				want = tc.status
			}
			if status != want || !strings.Contains(body, "state token has expired") {
				t.Fatalf("expired state token: %d %s", status, body)
			}
			if h.sim.Devices(3)[0].Active {
				t.Fatal("verified with an expired state token")
			}
		})
	}
	h := newHarness(t, Config{})
	if _, err := h.sim.EnrollDevice(3, "OneLogin Voice", "again", false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sim.EnrollDevice(1<<40, "OneLogin Voice", "x", false); err == nil {
		t.Fatal("seeded a device for a user who does not exist")
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// basicAuthHeader builds an HTTP Basic header value, for tests of the token
// endpoint.
func basicAuthHeader(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}
