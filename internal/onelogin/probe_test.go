package onelogin_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// Probes of the defects found in the fidelity audit. They use only the API
// the client had before, so each one can be run against the old client, on
// which it failed.

func probeClient(t *testing.T, h http.Handler) *onelogin.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := onelogin.NewClient(onelogin.Config{BaseURL: srv.URL, ClientID: "id", ClientSecret: "s3cret-value", Timeout: 5 * time.Second, TokenMaxElapsed: time.Second, Transport: srv.Client().Transport})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Defect 1: a pending push counted as verified.
func TestProbePendingVerify(t *testing.T) {
	r := &replay{status: 200, body: `{"status":{"type":"pending","message":"Authentication pending","code":200,"error":false}}`}
	if _, err := probeClient(t, r).VerifyFactor(context.Background(), 1, 2, onelogin.VerifyRequest{}); err == nil {
		t.Fatal("a pending verify returned no error")
	}
}

// Defect 2: a wrong OTP worded "Invalid OTP" was sent twice.
func TestProbeWrongOTPSentOnce(t *testing.T) {
	var verifies atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/auth/oauth2/v2/token":
			io.WriteString(w, tokenBody)
		case strings.HasSuffix(r.URL.Path, "/verify"):
			verifies.Add(1)
			w.WriteHeader(401)
			io.WriteString(w, `{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Invalid OTP"}}`)
		default:
			io.WriteString(w, `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"otp_devices":[]}}`)
		}
	})
	_, err := probeClient(t, h).VerifyFactor(context.Background(), 1, 2, onelogin.VerifyRequest{OTPToken: "123456", StateToken: "st"})
	if onelogin.StatusCode(err) != 401 || onelogin.Classify(err) != onelogin.Permanent {
		t.Fatalf("err = %v", err)
	}
	if n := verifies.Load(); n != 1 {
		t.Fatalf("the OTP was sent %d times", n)
	}
}

// Defect 3: a token fetch before every call in a token's last minutes.
// The token endpoint gives the same token back with created_at and an
// expires_in that leaves 4 minutes.
func TestProbeNoTokenFetchBeforeEveryCall(t *testing.T) {
	var fetches atomic.Int32
	created := time.Now().UTC().Add(-10*time.Hour + 4*time.Minute).Format("2006-01-02T15:04:05.000Z")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/auth/oauth2/v2/token" {
			fetches.Add(1)
			io.WriteString(w, `{"access_token":"same","created_at":"`+created+`","expires_in":240,"token_type":"bearer"}`)
			return
		}
		io.WriteString(w, `{}`)
	})
	c := probeClient(t, h)
	for i := 0; i < 1000; i++ {
		if _, err := c.RemoveFactor(context.Background(), 1, 2); err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches.Load(); n > 2 {
		t.Fatalf("%d token requests for 1,000 calls", n)
	}
}

// Defect 4: the token request sent a form body and HTTP Basic together.
func TestProbeTokenRequestForm(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/auth/oauth2/v2/token" {
			_, _, basic := r.BasicAuth()
			if basic && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
				w.WriteHeader(400)
				io.WriteString(w, `{"status":{"error":true,"code":400,"type":"bad request","message":"Unsupported token request form"}}`)
				return
			}
			io.WriteString(w, tokenBody)
			return
		}
		io.WriteString(w, `{}`)
	})
	if err := probeClient(t, h).Token(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Defect 7: a device listed twice came back twice.
func TestProbeDuplicateDevice(t *testing.T) {
	r := &replay{status: 200, body: `{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"otp_devices":[{"id":7,"active":true},{"id":7,"active":true}]}}`}
	d, _, err := probeClient(t, r).EnrolledFactors(context.Background(), 1)
	if err != nil || len(d) != 1 {
		t.Fatalf("devices = %+v, err = %v", d, err)
	}
}

// Defect 9: a 500 from the token endpoint was a transient failure.
func TestProbeToken500(t *testing.T) {
	var fetches atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.WriteHeader(500)
	})
	err := probeClient(t, h).Token(context.Background())
	if err == nil || onelogin.Classify(err) != onelogin.Permanent || fetches.Load() != 1 {
		t.Fatalf("err = %v (class %v), %d requests", err, onelogin.Classify(err), fetches.Load())
	}
}
