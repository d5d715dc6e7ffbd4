package jobs_test

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

func expectResult(t *testing.T, rs map[string]stored, id, typ string, outcome job.Outcome, code string) job.Result {
	t.Helper()
	st, ok := rs[id]
	if !ok {
		t.Fatalf("%s: no result", id)
	}
	r := st.Result
	if r.Type != job.Type(typ) || r.Outcome != outcome {
		t.Fatalf("%s: got %s/%s, want %s/%s (%+v)", id, r.Type, r.Outcome, typ, outcome, r.Error)
	}
	if st.Subject != "mfa.results."+typ+"."+string(outcome) {
		t.Fatalf("%s: subject %s", id, st.Subject)
	}
	if code != "" && (r.Error == nil || r.Error.Code != code) {
		t.Fatalf("%s: error %+v, want code %s", id, r.Error, code)
	}
	if code == "" && r.Error != nil {
		t.Fatalf("%s: unexpected error %+v", id, r.Error)
	}
	if r.Attempts < 1 || r.FinishedAt.Before(r.StartedAt) {
		t.Fatalf("%s: attempts %d, started %v finished %v", id, r.Attempts, r.StartedAt, r.FinishedAt)
	}
	validResult(t, st.Data)
	return r
}

func TestEveryJobTypeEndToEnd(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	e.start(testConfig())
	const unknown = 5000 // beyond the simulator's users
	n := 0
	stage := func(jobs ...[3]string) map[string]stored {
		t.Helper()
		for _, j := range jobs {
			e.publish(j[0], j[2], j[1])
			n++
		}
		return e.waitResults(n, 20*time.Second)
	}
	sms := map[string]any{"factor_name": "onelogin sms", "display_name": "Work phone", "number": "+15551230001"}

	// enroll: succeeded, noop (same factor and display name), failed.
	rs := stage(
		[3]string{"enroll", "enroll-1", jobBody("enroll-1", "enroll", 101, sms)},
		[3]string{"enroll", "enroll-unknown", jobBody("enroll-unknown", "enroll", unknown, sms)},
		[3]string{"enroll", "enroll-ga", jobBody("enroll-ga", "enroll", 102, map[string]any{"factor_name": "Google Authenticator", "display_name": "x", "number": "+15551230002"})},
	)
	r := expectResult(t, rs, "enroll-1", "enroll", job.Succeeded, "")
	dev := int64(r.Data["device_id"].(float64))
	if r.Data["auth_factor_name"] != "OneLogin SMS" || r.Data["factor_id"].(float64) != 100001 || r.Data["active"] != false || r.Data["state_token"] == "" {
		t.Fatalf("enroll data = %v", r.Data)
	}
	if d := e.sim.Devices(101); len(d) != 1 || d[0].ID != dev || d[0].UserDisplayName != "Work phone" {
		t.Fatalf("simulator devices = %+v", d)
	}
	expectResult(t, rs, "enroll-unknown", "enroll", job.Failed, job.CodeUserNotFound)
	expectResult(t, rs, "enroll-ga", "enroll", job.Failed, job.CodeOneLoginRejected)

	rs = stage([3]string{"enroll", "enroll-2", jobBody("enroll-2", "enroll", 101, map[string]any{"factor_id": 100001, "display_name": "Work phone", "number": "+15551230001"})})
	if r := expectResult(t, rs, "enroll-2", "enroll", job.Noop, ""); int64(r.Data["device_id"].(float64)) != dev {
		t.Fatalf("noop enroll names device %v, want %d", r.Data["device_id"], dev)
	}

	// activate, then verify with the OTP the simulator sent; failures.
	rs = stage(
		[3]string{"activate", "act-1", jobBody("act-1", "activate", 101, map[string]any{"device_id": dev, "state_token_expires_in": 300})},
		[3]string{"activate", "act-missing", jobBody("act-missing", "activate", 103, map[string]any{"device_id": 42})},
	)
	r = expectResult(t, rs, "act-1", "activate", job.Succeeded, "")
	state, _ := r.Data["state_token"].(string)
	if state == "" || int64(r.Data["device_id"].(float64)) != dev {
		t.Fatalf("activate data = %v", r.Data)
	}
	expectResult(t, rs, "act-missing", "activate", job.Failed, job.CodeFactorNotFound)

	otp := e.sim.LastOTP(101, dev)
	wrong := "000000"
	if otp == wrong {
		wrong = "000001"
	}
	rs = stage(
		[3]string{"verify", "ver-bad", jobBody("ver-bad", "verify", 101, map[string]any{"device_id": dev, "otp_token": wrong, "state_token": state})},
	)
	expectResult(t, rs, "ver-bad", "verify", job.Failed, job.CodeVerificationFailed)
	rs = stage([3]string{"verify", "ver-1", jobBody("ver-1", "verify", 101, map[string]any{"device_id": dev, "otp_token": otp, "state_token": state})})
	if r := expectResult(t, rs, "ver-1", "verify", job.Succeeded, ""); r.Data["active"] != true {
		t.Fatalf("verify data = %v", r.Data)
	}
	if d := e.sim.Devices(101); !d[0].Active {
		t.Fatal("device not active after verify")
	}

	// generate_token sealed to a recipient key, which opens it.
	recipient, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	rpub, _ := recipient.PublicKey()
	rs = stage(
		[3]string{"generate_token", "tok-1", jobBody("tok-1", "generate_token", 104, map[string]any{"recipient_xkey": rpub, "expires_in": 600})},
		[3]string{"generate_token", "tok-unknown", jobBody("tok-unknown", "generate_token", unknown, map[string]any{"recipient_xkey": rpub})},
	)
	r = expectResult(t, rs, "tok-1", "generate_token", job.Succeeded, "")
	if _, plain := r.Data["mfa_token"]; plain {
		t.Fatal("a plain token reached the result stream")
	}
	sealed, err := base64.StdEncoding.DecodeString(r.Data["sealed_mfa_token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	token, err := recipient.Open(sealed, r.Data["sender_xkey"].(string))
	if err != nil {
		t.Fatalf("recipient cannot open the token: %v", err)
	}
	if !e.sim.MFATokenValid(104, string(token)) {
		t.Fatal("the sealed token is not the simulator's token")
	}
	expectResult(t, rs, "tok-unknown", "generate_token", job.Failed, job.CodeUserNotFound)

	// remove: succeeded, noop (already gone), failed (unknown user).
	ga, _ := e.sim.EnrollDevice(105, "Google Authenticator", "GA", true)
	rs = stage(
		[3]string{"remove", "rm-1", jobBody("rm-1", "remove", 105, map[string]any{"device_id": ga})},
		[3]string{"remove", "rm-unknown", jobBody("rm-unknown", "remove", unknown, map[string]any{"device_id": 1})},
	)
	expectResult(t, rs, "rm-1", "remove", job.Succeeded, "")
	expectResult(t, rs, "rm-unknown", "remove", job.Failed, job.CodeUserNotFound)
	rs = stage([3]string{"remove", "rm-2", jobBody("rm-2", "remove", 105, map[string]any{"device_id": ga})})
	expectResult(t, rs, "rm-2", "remove", job.Noop, "")

	// offboard: every factor removed; noop when none; failed for an unknown user.
	e.sim.EnrollDevice(106, "Google Authenticator", "GA", true)
	e.sim.EnrollDevice(106, "OneLogin Protect", "Pixel", true)
	rs = stage(
		[3]string{"offboard", "off-1", jobBody("off-1", "offboard", 106, nil)},
		[3]string{"offboard", "off-none", jobBody("off-none", "offboard", 107, map[string]any{})},
		[3]string{"offboard", "off-unknown", jobBody("off-unknown", "offboard", unknown, nil)},
	)
	if r := expectResult(t, rs, "off-1", "offboard", job.Succeeded, ""); len(r.Data["removed_device_ids"].([]any)) != 2 {
		t.Fatalf("offboard data = %v", r.Data)
	}
	if d := e.sim.Devices(106); len(d) != 0 {
		t.Fatalf("devices left after offboard: %+v", d)
	}
	if r := expectResult(t, rs, "off-none", "offboard", job.Noop, ""); len(r.Data["removed_device_ids"].([]any)) != 0 {
		t.Fatalf("offboard noop data = %v", r.Data)
	}
	expectResult(t, rs, "off-unknown", "offboard", job.Failed, job.CodeUserNotFound)

	// expired: not_after in the past; OneLogin is not called.
	before := e.sim.ResourceCalls()
	rs = stage([3]string{"offboard", "exp-1", `{"id":"exp-1","type":"offboard","user_id":108,"not_after":"2020-01-01T00:00:00Z"}`})
	expectResult(t, rs, "exp-1", "offboard", job.Expired, job.CodeExpired)
	if e.sim.ResourceCalls() != before {
		t.Fatal("an expired job called OneLogin")
	}

	// Every failed, rejected and expired job has a DLQ copy; the job stream is empty.
	dlq := e.streamMsgs(topology.StreamDLQ)
	want := map[string]bool{"enroll-unknown": true, "enroll-ga": true, "act-missing": true, "ver-bad": true, "tok-unknown": true, "rm-unknown": true, "off-unknown": true, "exp-1": true}
	for _, m := range dlq {
		id := m.Header.Get(job.HeaderJobID)
		if !want[id] {
			t.Errorf("unexpected DLQ copy %s", id)
		}
		delete(want, id)
		if m.Header.Get(job.HeaderReason) == "" || m.Header.Get(job.HeaderErrorCode) == "" || m.Header.Get(job.HeaderDeliveries) == "" || m.Header.Get(job.HeaderOriginalSubject) == "" {
			t.Errorf("DLQ copy %s lacks headers: %v", id, m.Header)
		}
	}
	if len(want) != 0 {
		t.Errorf("no DLQ copy for %v", want)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return e.count(topology.StreamJobs) == 0 }, func() string { return "job stream not empty" })
}
