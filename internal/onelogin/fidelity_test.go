package onelogin_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

// Replay and probe tests for OneLogin's documented behaviour. Each names its
// source in onelogin-api.md; the probes failed on the client before these
// behaviours were built.

// simClient starts a simulator and a client for it, with optional changes
// to the client's configuration.
func simClient(t *testing.T, cfg simulator.Config, edit func(*onelogin.Config)) (*simulator.Server, *onelogin.Client) {
	t.Helper()
	sim := simulator.New(cfg)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	oc := onelogin.Config{
		BaseURL:      srv.URL,
		ClientID:     sim.Config().ClientID,
		ClientSecret: sim.Config().ClientSecret,
		Timeout:      5 * time.Second,
		Transport:    srv.Client().Transport,
	}
	if edit != nil {
		edit(&oc)
	}
	c, err := onelogin.NewClient(oc)
	if err != nil {
		t.Fatal(err)
	}
	return sim, c
}

// onelogin-api.md, endpoint 5: "a push still waiting answers 200 with type
// "pending" ... which is NOT verified" (official Ruby and older Python SDKs).
func TestVerifyPendingIsNotSuccess(t *testing.T) {
	r := &replay{status: 200, body: `{"status":{"type":"pending","message":"Authentication pending on OL push","code":200,"error":false}}`}
	_, err := replayClient(t, r).VerifyFactor(context.Background(), 1, 4444, onelogin.VerifyRequest{})
	var ve *onelogin.VerifyError
	if !errors.As(err, &ve) || ve.Code != onelogin.CodeVerificationPending || !errors.Is(err, onelogin.ErrVerificationPending) {
		t.Fatalf("pending verify: err = %v", err)
	}
	if onelogin.Classify(err) != onelogin.Transient || onelogin.MayHaveTakenEffect(err) || onelogin.ErrorCode(err) != "verification_pending" {
		t.Fatalf("pending: class %v, ambiguous %v, code %q", onelogin.Classify(err), onelogin.MayHaveTakenEffect(err), onelogin.ErrorCode(err))
	}
	// A 2xx whose status type is neither success nor pending is not success
	// either.
	r = &replay{status: 200, body: `{"status":{"type":"accepted","code":200,"error":false}}`}
	if _, err := replayClient(t, r).VerifyFactor(context.Background(), 1, 4444, onelogin.VerifyRequest{OTPToken: "1"}); err == nil {
		t.Fatal("type accepted counted as verified")
	}

	// Against the simulator: a push is pending until approved on the phone.
	sim, c := simClient(t, simulator.Config{}, nil)
	push, err := sim.EnrollDevice(8, "OneLogin Protect", "Pixel", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.VerifyFactor(context.Background(), 8, push, onelogin.VerifyRequest{}); !errors.Is(err, onelogin.ErrVerificationPending) {
		t.Fatalf("unapproved push: err = %v", err)
	}
	sim.ApprovePush(8, push)
	if _, err := c.VerifyFactor(context.Background(), 8, push, onelogin.VerifyRequest{}); err != nil {
		t.Fatalf("approved push: %v", err)
	}
}

// onelogin-api.md, errors table: a wrong OTP is a 401 whose wording varies;
// "never classify a 401 by its message text". The OTP must reach OneLogin
// once, whatever the wording.
func TestWrongOTPSentOnceWhateverTheWording(t *testing.T) {
	for _, wording := range []string{"Invalid OTP", "Failed authentication with this factor", "Authentication Failure"} {
		t.Run(wording, func(t *testing.T) {
			sim, c := simClient(t, simulator.Config{WrongOTPMessage: wording}, nil)
			ctx := context.Background()
			dev, _, err := c.EnrollFactor(ctx, 42, onelogin.EnrollRequest{FactorID: 100001, DisplayName: "p", Number: "+15551234567"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.VerifyFactor(ctx, 42, int64(dev.ID), onelogin.VerifyRequest{OTPToken: "WRONG1", StateToken: dev.StateToken})
			var ve *onelogin.VerifyError
			if !errors.As(err, &ve) || ve.Code != onelogin.CodeVerificationFailed || onelogin.StatusCode(err) != 401 || onelogin.Classify(err) != onelogin.Permanent {
				t.Fatalf("err = %v", err)
			}
			if n := len(sim.VerifyAttempts()); n != 1 {
				t.Fatalf("the wrong OTP reached OneLogin %d times", n)
			}
			if n := sim.Stats().Requests["token"]; n != 1 {
				t.Fatalf("token requests = %d, want 1 (the token was good)", n)
			}
			if strings.Contains(err.Error(), "WRONG1") {
				t.Fatal("the OTP is in the error text")
			}
		})
	}
}

// A verify refused because the token went stale is sent again, once, with
// a new token; a read call with the old token proved it stale.
func TestVerifyWithStaleTokenResentWithNewToken(t *testing.T) {
	sim, c := simClient(t, simulator.Config{}, nil)
	ctx := context.Background()
	dev, _, err := c.EnrollFactor(ctx, 42, onelogin.EnrollRequest{FactorID: 100001, DisplayName: "p", Number: "+15551234567"})
	if err != nil {
		t.Fatal(err)
	}
	sim.ExpireTokens()
	before := sim.Stats().Requests
	if _, err := c.VerifyFactor(ctx, 42, int64(dev.ID), onelogin.VerifyRequest{OTPToken: sim.LastOTP(42, int64(dev.ID)), StateToken: dev.StateToken}); err != nil {
		t.Fatal(err)
	}
	after := sim.Stats().Requests
	if v, p, tk := after["verify"]-before["verify"], after["enrolled_factors"]-before["enrolled_factors"], after["token"]-before["token"]; v != 2 || p != 1 || tk != 1 {
		t.Fatalf("verify sends %d, token checks %d, token fetches %d; want 2, 1, 1", v, p, tk)
	}
	if d := sim.Devices(42); !d[0].Active {
		t.Fatal("not verified")
	}
}

// The token check after a 401 uses the very token the verify was sent with.
func TestVerify401CheckedWithSameToken(t *testing.T) {
	var mu sync.Mutex
	var auths []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/auth/oauth2/v2/token" {
			io.WriteString(w, tokenBody)
			return
		}
		mu.Lock()
		auths = append(auths, r.Method+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("X-Request-Id", "ol-req-9")
		if strings.HasSuffix(r.URL.Path, "/verify") {
			w.WriteHeader(401)
			io.WriteString(w, `{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}`)
			return
		}
		io.WriteString(w, `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"otp_devices":[]}}`)
	})
	_, err := replayClient(t, h).VerifyFactor(context.Background(), 1, 2, onelogin.VerifyRequest{OTPToken: "123456", StateToken: "st"})
	if onelogin.ErrorCode(err) != onelogin.CodeVerificationFailed || onelogin.RequestIDOf(err) != "ol-req-9" {
		t.Fatalf("err = %v (request id %q)", err, onelogin.RequestIDOf(err))
	}
	if len(auths) != 2 || auths[0] != "POST Bearer tok-1" || auths[1] != "GET Bearer tok-1" {
		t.Fatalf("calls = %q", auths)
	}
}

// onelogin-api.md, errors table: "expired state token on verify: 400
// (documented)". Its own code, permanent.
func TestExpiredStateTokenIs400WithOwnCode(t *testing.T) {
	r := &replay{status: 400, body: `{"status":{"error":true,"code":400,"type":"bad request","message":"State token is invalid or expired"}}`}
	_, err := replayClient(t, r).VerifyFactor(context.Background(), 1, 4444, onelogin.VerifyRequest{OTPToken: "123456", StateToken: "st"})
	if onelogin.ErrorCode(err) != onelogin.CodeStateTokenExpired || onelogin.StatusCode(err) != 400 || onelogin.Classify(err) != onelogin.Permanent {
		t.Fatalf("err = %v", err)
	}
	// "User does not exist" stays a missing user.
	r = &replay{status: 400, body: `{"status":{"error":true,"code":400,"type":"bad request","message":"User does not exist"}}`}
	_, err = replayClient(t, r).VerifyFactor(context.Background(), 1, 4444, onelogin.VerifyRequest{OTPToken: "1", StateToken: "st"})
	if !onelogin.IsUserNotFound(err) || onelogin.ErrorCode(err) != "" {
		t.Fatalf("unknown user: err = %v", err)
	}

	clk := newClock()
	sim, c := simClient(t, simulator.Config{Now: clk.Now}, func(oc *onelogin.Config) { oc.Now = clk.Now })
	ctx := context.Background()
	dev, _, err := c.EnrollFactor(ctx, 3, onelogin.EnrollRequest{FactorID: 100001, DisplayName: "p", Number: "+15551234567"})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(121 * time.Second)
	_, err = c.VerifyFactor(ctx, 3, int64(dev.ID), onelogin.VerifyRequest{OTPToken: sim.LastOTP(3, int64(dev.ID)), StateToken: dev.StateToken})
	if onelogin.ErrorCode(err) != onelogin.CodeStateTokenExpired || len(sim.VerifyAttempts()) != 1 {
		t.Fatalf("simulator: err = %v, attempts %d", err, len(sim.VerifyAttempts()))
	}
}

// onelogin-api.md, "Hosts and authentication": the same token comes back
// with expires_in the full lifetime until it expires; the expiry is
// created_at + expires_in. 1,000 calls across the end of a token's life
// make at most 2 token requests.
func TestTokenRequestsAcrossTokenEnd(t *testing.T) {
	clk := newClock()
	sim, c := simClient(t, simulator.Config{Now: clk.Now, RateLimit: 100_000}, func(oc *onelogin.Config) { oc.Now = clk.Now })
	ctx := context.Background()
	if _, _, err := c.EnrolledFactors(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if st := c.TokenStatus(); !st.Valid || !st.ExpiresAt.Equal(clk.Now().Add(10*time.Hour)) {
		t.Fatalf("token status = %+v", st)
	}
	clk.Advance(10*time.Hour - 6*time.Minute)
	before := sim.Stats().Requests["token"]
	for i := 0; i < 1000; i++ {
		if _, _, err := c.EnrolledFactors(ctx, 1); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		clk.Advance(720 * time.Millisecond) // 1,000 calls over the last 6 minutes and 6 more
	}
	got := sim.Stats().Requests["token"] - before
	t.Logf("1,000 calls across the end of a token's life: %d token requests", got)
	if got > 2 || got < 1 {
		t.Fatalf("token requests = %d, want 1 or 2", got)
	}
	if n := len(sim.IssuedTokens()); n != 2 {
		t.Fatalf("tokens issued = %d, want 2", n)
	}
}

// The documented token body, replayed: created_at long before now.
func TestTokenExpiryFromCreatedAt(t *testing.T) {
	clk := newClock()
	created := clk.Now().Add(-9 * time.Hour)
	var tokens atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/auth/oauth2/v2/token" {
			tokens.Add(1)
			fmt.Fprintf(w, `{"access_token":"tok-1","created_at":%q,"expires_in":36000,"refresh_token":"r","token_type":"bearer","account_id":555555}`, created.Format("2006-01-02T15:04:05.000Z"))
			return
		}
		io.WriteString(w, `{}`)
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, err := onelogin.NewClient(onelogin.Config{BaseURL: srv.URL, ClientID: "id", ClientSecret: "s", Now: clk.Now, Transport: srv.Client().Transport})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := c.TokenStatus(); !st.ExpiresAt.Equal(created.Add(10 * time.Hour)) {
		t.Fatalf("expiry = %v, want created_at + 10h = %v", st.ExpiresAt, created.Add(10*time.Hour))
	}
}

// onelogin-api.md: "Send a documented form": JSON body with HTTP Basic.
func TestTokenRequestForm(t *testing.T) {
	var got struct {
		ctype, body, user, pass string
		basic                   bool
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/auth/oauth2/v2/token" {
			b, _ := io.ReadAll(r.Body)
			got.ctype, got.body = r.Header.Get("Content-Type"), string(b)
			got.user, got.pass, got.basic = r.BasicAuth()
			io.WriteString(w, tokenBody)
			return
		}
		io.WriteString(w, `{}`)
	})
	if _, err := replayClient(t, h).RemoveFactor(context.Background(), 1, 2); err != nil {
		t.Fatal(err)
	}
	if got.ctype != "application/json" || got.body != `{"grant_type":"client_credentials"}` || !got.basic || got.user != "id" || got.pass != "s3cret-value" {
		t.Fatalf("token request: %+v", got)
	}
	// The simulator accepts only documented forms; the client gets a token.
	_, c := simClient(t, simulator.Config{}, nil)
	if err := c.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// onelogin-api.md: "A 500 from the token endpoint means the credentials'
// owner was deleted (documented): a credentials failure".
func TestToken500IsCredentialsFailure(t *testing.T) {
	sim, c := simClient(t, simulator.Config{TokenStatus: 500}, nil)
	_, err := c.RemoveFactor(context.Background(), 1, 2)
	var te *onelogin.TokenError
	if !errors.As(err, &te) || !te.Credentials || !errors.Is(err, onelogin.ErrCredentials) || onelogin.Classify(err) != onelogin.Permanent || onelogin.ErrorCode(err) != onelogin.CodeCredentials {
		t.Fatalf("err = %v", err)
	}
	if n := sim.Stats().Requests["token"]; n != 1 {
		t.Fatalf("token requests = %d: a credentials failure is not retried", n)
	}
	if onelogin.MayHaveTakenEffect(err) || sim.ResourceCalls() != 0 {
		t.Fatal("the resource call was sent")
	}
	// 503 stays transient.
	r := &replay{status: 200, body: `{}`}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/auth/oauth2/v2/token" {
			w.WriteHeader(503)
			return
		}
		r.ServeHTTP(w, req)
	}))
	defer srv.Close()
	c2, _ := onelogin.NewClient(onelogin.Config{BaseURL: srv.URL, ClientID: "id", ClientSecret: "s", TokenMaxElapsed: 300 * time.Millisecond})
	if err := c2.Token(context.Background()); errors.Is(err, onelogin.ErrCredentials) || onelogin.Classify(err) != onelogin.Transient {
		t.Fatalf("503: err = %v", err)
	}
}

// The secret is read on every fetch, so that a fixed secret file is picked
// up without a restart; TokenStatus says why there is no token.
func TestClientSecretFuncAndTokenStatus(t *testing.T) {
	clk := newClock()
	var secret atomic.Value
	secret.Store("wrong")
	_, c := simClient(t, simulator.Config{}, func(oc *onelogin.Config) {
		oc.ClientSecret = ""
		oc.ClientSecretFunc = func() (string, error) { return secret.Load().(string), nil }
		oc.Now = clk.Now
	})
	ctx := context.Background()
	err := c.Token(ctx)
	if !errors.Is(err, onelogin.ErrCredentials) || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong secret: err = %v", err)
	}
	if st := c.TokenStatus(); st.Valid || st.Err == nil || st.Err.StatusCode != 401 {
		t.Fatalf("status = %+v", st)
	}
	secret.Store("sim-secret")
	clk.Advance(2 * time.Second) // past the cooldown of a failed fetch
	if err := c.Token(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.TokenStatus(); !st.Valid || st.Err != nil || st.Fetches != 1 {
		t.Fatalf("status = %+v", st)
	}
	_, c2 := simClient(t, simulator.Config{}, func(oc *onelogin.Config) {
		oc.ClientSecretFunc = func() (string, error) { return "", errors.New("open /run/secrets/ol: permission denied") }
	})
	if err := c2.Token(ctx); !errors.Is(err, onelogin.ErrCredentials) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("unreadable secret: err = %v", err)
	}
}

// onelogin-api.md, endpoint 7: 201 in the official Ruby SDK's check, 200
// elsewhere; "reusable" and the spec's "resuable".
func TestMFAToken201AndSpellings(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
	}{
		{201, `{"mfa_token":"55647655","reusable":true,"expires_at":"2019-01-16T22:16:38Z"}`},
		{201, `{"mfa_token":"55647655","resuable":true,"expires_at":"2019-01-16T22:16:38Z"}`},
		{200, `{"mfa_token":"55647655","reusable":true,"expires_at":"2019-01-16T22:16:38Z"}`},
	} {
		tok, _, err := replayClient(t, &replay{status: tc.status, body: tc.body}).GenerateMFAToken(context.Background(), 1, onelogin.MFATokenRequest{})
		if err != nil || tok.Token != "55647655" || !tok.Reusable {
			t.Fatalf("%d %s: %v, %v", tc.status, tc.body, tok, err)
		}
	}
}

// onelogin-api.md, Get Enrolled Factors: a device can be listed twice.
func TestEnrolledFactorsDeduplicated(t *testing.T) {
	r := &replay{status: 200, body: `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"otp_devices":[` +
		`{"id":525510,"active":false,"auth_factor_name":"OneLogin Protect","needs_trigger":false},` +
		`{"id":525509,"active":true,"auth_factor_name":"Google Authenticator"},` +
		`{"id":"525510","active":true,"auth_factor_name":"OneLogin Protect","needs_trigger":true}]}}`}
	d, _, err := replayClient(t, r).EnrolledFactors(context.Background(), 1)
	if err != nil || len(d) != 2 || d[0].ID != 525510 || d[1].ID != 525509 || !d[0].Active {
		t.Fatalf("devices = %+v, err = %v", d, err)
	}
	sim, c := simClient(t, simulator.Config{}, nil)
	if _, err := sim.EnrollDevice(5, "OneLogin Protect", "Pixel", true); err != nil {
		t.Fatal(err)
	}
	d, _, err = c.EnrolledFactors(context.Background(), 5)
	if err != nil || len(d) != 1 {
		t.Fatalf("simulator: devices = %+v, err = %v", d, err)
	}
}

// onelogin-api.md: "Activate's data also carries state_token_expires_at".
func TestActivateStateTokenExpiresAt(t *testing.T) {
	r := &replay{status: 200, body: `{"status":{"type":"success","message":"SMS token sent to your mobile device. Authentication pending.","code":200,"error":false},"data":[{"auth_factor_name":"OneLogin SMS","type_display_name":"OneLogin SMS","user_display_name":"+1xxxxxxxxxx","device_id":"4444","state_token":"f8a7ab0c","id":1,"state_token_expires_at":"2026-11-27T08:02:00.000Z"}]}`}
	a, _, err := replayClient(t, r).ActivateFactor(context.Background(), 1, 4444, nil)
	if err != nil || !a.StateTokenExpiresAt.Equal(time.Date(2026, 11, 27, 8, 2, 0, 0, time.UTC)) {
		t.Fatalf("activation = %+v, err = %v", a, err)
	}
	clk := newClock()
	sim, c := simClient(t, simulator.Config{Now: clk.Now}, func(oc *onelogin.Config) { oc.Now = clk.Now })
	dev, _, err := c.EnrollFactor(context.Background(), 1, onelogin.EnrollRequest{FactorID: 100001, DisplayName: "p", Number: "+15551234567"})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err = c.ActivateFactor(context.Background(), 1, int64(dev.ID), &onelogin.ActivateRequest{StateTokenExpiresIn: 300})
	if err != nil || !a.StateTokenExpiresAt.Equal(clk.Now().Add(300*time.Second)) {
		t.Fatalf("simulator activation = %+v, err = %v", a, err)
	}
	otp := sim.LastOTP(1, int64(dev.ID))
	if strings.Trim(otp, "0123456789") == "" {
		t.Fatalf("default code %q is digits only", otp)
	}
}

// contract 1.1 "Results": a verify whose reply was lost is read back from
// the device's active flag, through EnrolledFactors.
func TestLostVerifyReadBack(t *testing.T) {
	sim, c := simClient(t, simulator.Config{}, nil)
	ctx := context.Background()
	dev, _, err := c.EnrollFactor(ctx, 6, onelogin.EnrollRequest{FactorID: 100001, DisplayName: "p", Number: "+15551234567"})
	if err != nil {
		t.Fatal(err)
	}
	sim.SetFaults(simulator.Faults{LostReplyRate: 1})
	_, err = c.VerifyFactor(ctx, 6, int64(dev.ID), onelogin.VerifyRequest{OTPToken: sim.LastOTP(6, int64(dev.ID)), StateToken: dev.StateToken})
	if err == nil || !onelogin.MayHaveTakenEffect(err) {
		t.Fatalf("lost reply: err = %v", err)
	}
	sim.SetFaults(simulator.Faults{})
	d, _, err := c.EnrolledFactors(ctx, 6)
	if err != nil || len(d) != 1 || !d[0].Active {
		t.Fatalf("read back: %+v, %v", d, err)
	}
}

// onelogin-api.md: "OneLogin answers carry its own X-Request-Id".
func TestRequestIDKept(t *testing.T) {
	r := &replay{status: 400, body: `{"status":{"error":true,"code":400,"type":"bad request","message":"Factor could not be found"}}`, headers: map[string]string{"X-Request-Id": "b7e2c0de-1"}}
	_, err := replayClient(t, r).RemoveFactor(context.Background(), 1, 2)
	var er *onelogin.ErrorResponse
	if !errors.As(err, &er) || er.RequestID != "b7e2c0de-1" || onelogin.RequestIDOf(err) != "b7e2c0de-1" {
		t.Fatalf("err = %v", err)
	}
	r = &replay{status: 200, body: `{}`, headers: map[string]string{"X-Request-Id": "ok-2"}}
	resp, err := replayClient(t, r).RemoveFactor(context.Background(), 1, 2)
	if err != nil || resp.RequestID != "ok-2" {
		t.Fatalf("resp = %+v, err = %v", resp, err)
	}
	r = &replay{status: 429, body: ``, headers: map[string]string{"X-Request-Id": "rl-3", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0"}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = replayClient(t, r).RemoveFactor(ctx, 1, 2)
	if onelogin.RequestIDOf(err) != "rl-3" {
		t.Fatalf("429: err = %v", err)
	}
}

// The older reading (expires_in as the time left, with or without
// created_at) must not make the client fetch a token before every call.
func TestTokenRequestsWithLegacyExpiresIn(t *testing.T) {
	for _, noCreated := range []bool{false, true} {
		clk := newClock()
		sim, c := simClient(t, simulator.Config{Now: clk.Now, RateLimit: 100_000, TokenExpiresInLeft: true, TokenWithoutCreatedAt: noCreated}, func(oc *onelogin.Config) { oc.Now = clk.Now })
		ctx := context.Background()
		if _, _, err := c.EnrolledFactors(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(10*time.Hour - 6*time.Minute)
		before := sim.Stats().Requests["token"]
		for i := 0; i < 1000; i++ {
			if _, _, err := c.EnrolledFactors(ctx, 1); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			clk.Advance(720 * time.Millisecond)
		}
		got := sim.Stats().Requests["token"] - before
		t.Logf("without created_at %v: %d token requests", noCreated, got)
		if got > 3 {
			t.Fatalf("token requests = %d", got)
		}
	}
}
