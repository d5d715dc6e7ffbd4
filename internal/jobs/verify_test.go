package jobs_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// A push that is never approved answers 200 "pending": the verify is
// polled once per delivery (never quickly within one), and after the last
// delivery the job fails verification_pending, never active. A push
// approved while the job waits for its next delivery succeeds.
func TestVerifyPendingPushIsNeverActive(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	never, err := e.sim.EnrollDevice(61, "OneLogin Protect", "phone", false)
	if err != nil {
		t.Fatal(err)
	}
	later, err := e.sim.EnrollDevice(62, "OneLogin Protect", "phone", false)
	if err != nil {
		t.Fatal(err)
	}
	e.provision()
	cfg := testConfig()
	cfg.NakBase, cfg.NakMax = 300*time.Millisecond, 300*time.Millisecond
	e.publish("verify", jobBody("push-never", "verify", 61, map[string]any{"device_id": never}), "push-never")
	e.publish("verify", jobBody("push-later", "verify", 62, map[string]any{"device_id": later}), "push-later")
	e.start(cfg)
	// Approve the second push once its first poll was answered pending.
	testenv.Eventually(t, 10*time.Second, func() bool { return len(e.sim.VerifyAttempts()) >= 2 }, func() string { return "no verify polled" })
	e.sim.ApprovePush(62, later)
	rs := e.waitResults(2, 20*time.Second)
	r := rs["push-never"].Result
	if r.Outcome != job.Failed || r.Error == nil || r.Error.Code != job.CodeVerificationPending || !r.Error.Retryable || r.Attempts != cfg.MaxDeliver {
		t.Fatalf("never approved: %s attempts %d %+v data %v", r.Outcome, r.Attempts, r.Error, r.Data)
	}
	if r.Data["active"] == true {
		t.Fatal("a pending verify reported active")
	}
	polls := 0
	for _, a := range e.sim.VerifyAttempts() {
		if a.DeviceID == never {
			polls++
		}
	}
	if polls != cfg.MaxDeliver {
		t.Errorf("the never-approved push was polled %d times in %d deliveries: want one per delivery", polls, cfg.MaxDeliver)
	}
	ok := rs["push-later"].Result
	if ok.Outcome != job.Succeeded || ok.Data["active"] != true || ok.Attempts < 2 {
		t.Fatalf("approved later: %s attempts %d %+v data %v", ok.Outcome, ok.Attempts, ok.Error, ok.Data)
	}
}

// A verify whose reply is lost after OneLogin applied it is read back from
// the device's active flag: the job succeeds, active, with the OTP sent
// once; a verify of a temporary MFA token (device 0) cannot be read back
// and ends ambiguous_effect.
func TestVerifyLostReplyIsReadBack(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	dev, err := e.sim.EnrollDevice(71, "Google Authenticator", "ga", false)
	if err != nil {
		t.Fatal(err)
	}
	otp := e.sim.LastOTP(71, dev)
	if otp == "" {
		t.Fatal("the simulator has no code for the authenticator")
	}
	ol, err := onelogin.NewClient(onelogin.Config{BaseURL: e.bed.SimURL, ClientID: e.sim.Config().ClientID, ClientSecret: e.sim.Config().ClientSecret})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := ol.GenerateMFAToken(context.Background(), 72, onelogin.MFATokenRequest{ExpiresIn: 3600})
	if err != nil {
		t.Fatal(err)
	}
	e.provision()
	e.sim.SetFaults(simulator.Faults{LostReplyRate: 1})
	e.publish("verify", jobBody("lost-verify", "verify", 71, map[string]any{"device_id": dev, "otp_token": otp}), "lost-verify")
	e.publish("verify", jobBody("lost-verify-0", "verify", 72, map[string]any{"device_id": 0, "otp_token": tok.Token}), "lost-verify-0")
	e.start(testConfig())
	rs := e.waitResults(2, 20*time.Second)
	r := rs["lost-verify"].Result
	if r.Outcome != job.Succeeded || r.Data["active"] != true {
		t.Fatalf("lost verify: %s %+v data %v", r.Outcome, r.Error, r.Data)
	}
	sent := 0
	for _, a := range e.sim.VerifyAttempts() {
		if a.DeviceID == dev {
			sent++
		}
	}
	if sent != 1 {
		t.Errorf("the OTP reached OneLogin %d times, want once", sent)
	}
	if r0 := rs["lost-verify-0"].Result; r0.Outcome != job.Failed || r0.Error == nil || r0.Error.Code != job.CodeAmbiguousEffect {
		t.Errorf("lost verify of device 0: %s %+v", r0.Outcome, r0.Error)
	}
}

// Activate's result carries OneLogin's state_token_expires_at.
func TestActivateKeepsStateTokenExpiry(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	dev, err := e.sim.EnrollDevice(81, "OneLogin SMS", "phone", false)
	if err != nil {
		t.Fatal(err)
	}
	e.provision()
	e.publish("activate", jobBody("act-exp", "activate", 81, map[string]any{"device_id": dev, "state_token_expires_in": 300}), "act-exp")
	before := time.Now()
	e.start(testConfig())
	r := e.waitResults(1, 20*time.Second)["act-exp"].Result
	exp, _ := r.Data["state_token_expires_at"].(string)
	at, err := time.Parse(time.RFC3339, exp)
	if r.Outcome != job.Succeeded || err != nil {
		t.Fatalf("activate: %s %+v data %v", r.Outcome, r.Error, r.Data)
	}
	if d := at.Sub(before); d < 250*time.Second || d > 310*time.Second {
		t.Errorf("state_token_expires_at %s is %v after the job, want about 300s", exp, d)
	}
}

// A failed OneLogin call is logged with the job id and OneLogin's own
// X-Request-Id, for support cases.
func TestFailedCallLogsOneLoginRequestID(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	e.provision()
	e.publish("verify", jobBody("rid-1", "verify", 91, map[string]any{"device_id": 999999, "otp_token": "123456"}), "rid-1")
	e.start(testConfig())
	r := e.waitResults(1, 20*time.Second)["rid-1"].Result
	if r.Outcome != job.Failed {
		t.Fatalf("verify of an unknown device: %s", r.Outcome)
	}
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var l struct {
			Msg   string `json:"msg"`
			JobID string `json:"job_id"`
			RID   string `json:"onelogin_request_id"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "OneLogin call failed" && l.JobID == "rid-1" && l.RID != "" && l.RID != "rid-1" {
			return
		}
	}
	t.Fatalf("no log line with the job id and OneLogin's request id:\n%s", e.logs.String())
}
