package onelogin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

// newSim starts a simulator and a client for it.
func newSim(t *testing.T, cfg simulator.Config) (*simulator.Server, *onelogin.Client) {
	t.Helper()
	sim := simulator.New(cfg)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	c, err := onelogin.NewClient(onelogin.Config{
		BaseURL:      srv.URL,
		ClientID:     sim.Config().ClientID,
		ClientSecret: sim.Config().ClientSecret,
		Timeout:      5 * time.Second,
		Transport:    srv.Client().Transport,
	})
	if err != nil {
		t.Fatal(err)
	}
	return sim, c
}

func effectsOf(sim *simulator.Server, kind string) []simulator.Effect {
	var out []simulator.Effect
	for _, e := range sim.Effects() {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func TestAvailableFactors(t *testing.T) {
	sim, c := newSim(t, simulator.Config{})
	ctx := context.Background()
	factors, resp, err := c.AvailableFactors(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(factors) != 4 || factors[0].Name != "OneLogin SMS" || factors[0].ID != 100001 {
		t.Fatalf("factors = %+v", factors)
	}
	if resp.Rate.Limit != 5000 || resp.Rate.Remaining != 4999 || !resp.Rate.Reset.After(time.Now()) {
		t.Fatalf("rate = %+v", resp.Rate)
	}
	if _, err := sim.EnrollDevice(7, "Google Authenticator", "phone", true); err != nil {
		t.Fatal(err)
	}
	factors, _, err = c.AvailableFactors(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range factors {
		if f.Name == "Google Authenticator" {
			t.Fatalf("an enrolled factor is still listed: %+v", factors)
		}
	}
	_, _, err = c.AvailableFactors(ctx, 99_999_999)
	if !onelogin.IsUserNotFound(err) || onelogin.StatusCode(err) != 404 || onelogin.Classify(err) != onelogin.Permanent {
		t.Fatalf("unknown user: err = %v", err)
	}
}

func TestEnrollActivateVerifyRemove(t *testing.T) {
	sim, c := newSim(t, simulator.Config{})
	ctx := onelogin.WithRequestID(context.Background(), "job-1")
	dev, _, err := c.EnrollFactor(ctx, 42, onelogin.EnrollRequest{FactorID: 100001, DisplayName: "Work phone", Number: "+15551234567"})
	if err != nil {
		t.Fatal(err)
	}
	if dev.ID == 0 || dev.Active || dev.AuthFactorName != "OneLogin SMS" || dev.StateToken == "" {
		t.Fatalf("device = %+v", dev)
	}
	if e := effectsOf(sim, simulator.EffectEnroll); len(e) != 1 || e[0].UserID != 42 || e[0].DeviceID != int64(dev.ID) || e[0].RequestID != "job-1" {
		t.Fatalf("enroll effects = %+v", e)
	}

	devices, _, err := c.EnrolledFactors(ctx, 42)
	if err != nil {
		t.Fatal(err)
	}
	if len(devices) != 1 || devices[0].ID != dev.ID || devices[0].PhoneNumber != "+15551234567" || !devices[0].NeedsTrigger {
		t.Fatalf("enrolled = %+v", devices)
	}

	act, _, err := c.ActivateFactor(ctx, 42, int64(dev.ID), &onelogin.ActivateRequest{StateTokenExpiresIn: 300})
	if err != nil {
		t.Fatal(err)
	}
	if act.DeviceID != dev.ID || act.StateToken == "" || act.UserID != 42 {
		t.Fatalf("activation = %+v", act)
	}

	// A wrong OTP is a permanent 401 and is not re-sent with a new token.
	before := sim.Stats()
	_, err = c.VerifyFactor(ctx, 42, int64(dev.ID), onelogin.VerifyRequest{OTPToken: "000000x", StateToken: act.StateToken})
	if onelogin.StatusCode(err) != http.StatusUnauthorized || onelogin.Classify(err) != onelogin.Permanent {
		t.Fatalf("wrong otp: err = %v", err)
	}
	if got := sim.Stats().Requests["verify"] - before.Requests["verify"]; got != 1 {
		t.Fatalf("wrong otp was sent %d times", got)
	}

	otp := sim.LastOTP(42, int64(dev.ID))
	if _, err := c.VerifyFactor(ctx, 42, int64(dev.ID), onelogin.VerifyRequest{OTPToken: otp, StateToken: act.StateToken}); err != nil {
		t.Fatal(err)
	}
	if d := sim.Devices(42); len(d) != 1 || !d[0].Active {
		t.Fatalf("device not active after verify: %+v", d)
	}

	if _, err := c.RemoveFactor(ctx, 42, int64(dev.ID)); err != nil {
		t.Fatal(err)
	}
	if d := sim.Devices(42); len(d) != 0 {
		t.Fatalf("device still there: %+v", d)
	}
	_, err = c.RemoveFactor(ctx, 42, int64(dev.ID))
	if !onelogin.IsFactorNotFound(err) || onelogin.StatusCode(err) != 400 {
		t.Fatalf("second remove: err = %v", err)
	}
	if n := len(effectsOf(sim, simulator.EffectRemove)); n != 1 {
		t.Fatalf("remove effects = %d", n)
	}
}

func TestEnrollErrors(t *testing.T) {
	_, c := newSim(t, simulator.Config{})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  onelogin.EnrollRequest
		want string
	}{
		{"bad number", onelogin.EnrollRequest{FactorID: 100001, DisplayName: "x", Number: "555"}, "Invalid phone number"},
		{"unknown factor", onelogin.EnrollRequest{FactorID: 1, DisplayName: "x", Number: "+15551234567"}, "Invalid factor_id"},
		{"not enrollable", onelogin.EnrollRequest{FactorID: 100003, DisplayName: "x", Number: "+15551234567"}, "cannot be enrolled"},
	} {
		_, _, err := c.EnrollFactor(ctx, 5, tc.req)
		if onelogin.StatusCode(err) != 400 || !strings.Contains(err.Error(), tc.want) || onelogin.Classify(err) != onelogin.Permanent {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
	if _, _, err := c.EnrollFactor(ctx, 0, onelogin.EnrollRequest{FactorID: 100001}); err == nil || onelogin.Classify(err) != onelogin.Permanent {
		t.Errorf("user 0: err = %v", err)
	}
}

func TestGenerateAndVerifyMFAToken(t *testing.T) {
	for _, misspell := range []bool{false, true} {
		sim, c := newSim(t, simulator.Config{MisspellReusable: misspell})
		ctx := context.Background()
		tok, _, err := c.GenerateMFAToken(ctx, 9, onelogin.MFATokenRequest{ExpiresIn: 600, Reusable: true})
		if err != nil {
			t.Fatal(err)
		}
		if tok.Token == "" || !tok.Reusable || tok.ExpiresAt.Before(time.Now().Add(590*time.Second)) {
			t.Fatalf("misspell=%v: token = %v", misspell, tok)
		}
		if strings.Contains(tok.String(), tok.Token) {
			t.Fatal("String() prints the token")
		}
		if _, err := c.VerifyFactor(ctx, 9, 0, onelogin.VerifyRequest{OTPToken: tok.Token}); err != nil {
			t.Fatalf("verify temp token: %v", err)
		}
		if !sim.MFATokenValid(9, tok.Token) {
			t.Fatal("a reusable token was used up")
		}
		_, _, err = c.GenerateMFAToken(ctx, 9, onelogin.MFATokenRequest{ExpiresIn: 60})
		if onelogin.StatusCode(err) != 400 {
			t.Fatalf("expires_in 60: err = %v", err)
		}
	}
}

func TestVerifyUnknownUser(t *testing.T) {
	_, c := newSim(t, simulator.Config{LastUser: 10})
	_, err := c.VerifyFactor(context.Background(), 11, 5, onelogin.VerifyRequest{OTPToken: "1"})
	if onelogin.StatusCode(err) != 400 || !onelogin.IsUserNotFound(err) {
		t.Fatalf("err = %v", err)
	}
}

func TestRateLimitStatus(t *testing.T) {
	_, c := newSim(t, simulator.Config{RateLimit: 77})
	ctx := context.Background()
	if _, _, err := c.EnrolledFactors(ctx, 1); err != nil {
		t.Fatal(err)
	}
	rl, _, err := c.RateLimitStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rl.Limit != 77 || rl.Remaining != 76 || !rl.Reset.After(time.Now()) {
		t.Fatalf("rate limit = %+v", rl)
	}
}
