package security

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/dlq"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// A job that fails for good: an offboard of a user OneLogin does not know.
func failingOffboard(id string) string {
	return fmt.Sprintf(`{"id":%q,"type":"offboard","user_id":999999}`, id)
}

// Attack: a job publisher re-runs a failed job by setting Mfa-Replay
// itself. Without a grant nothing runs again: no OneLogin call, no new
// result. The operator's replay (which writes the grant) runs it once.
func TestForgedReplayHeaderRunsNothing(t *testing.T) {
	e := secStart(t, simulator.Config{FirstUser: 1, LastUser: 1000})
	e.secPublish("mfa.jobs.offboard", failingOffboard("leaver-1"), map[string]string{jetstream.MsgIDHeader: "leaver-1"})
	e.secWait(10*time.Second, func() bool { return e.bed.Count(topology.StreamDLQ) == 1 }, func() string { return "no dead letter" })
	e.secSettled(10 * time.Second)
	rs := e.secResultsOf("leaver-1")
	if len(rs) != 1 || rs[0].Outcome != job.Failed || rs[0].MsgID != "leaver-1:result" {
		t.Fatalf("first results: %+v", rs)
	}
	dls, err := dlq.ListDeadLetters(context.Background(), e.js, dlq.DeadLetterFilter{})
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters: %v %v", dls, err)
	}
	dlqSeq := dls[0].Seq
	calls := e.sim.ResourceCalls()

	// Three forged headers: the right DLQ sequence, another one, and junk.
	for i, tag := range []string{job.ReplayTag(dlqSeq), "77", "1;rm"} {
		e.secPublish("mfa.jobs.offboard", failingOffboard("leaver-1"), map[string]string{
			jetstream.MsgIDHeader: fmt.Sprintf("forged-%d", i), job.HeaderReplay: tag,
		})
	}
	e.secSettled(10 * time.Second)
	if got := e.sim.ResourceCalls(); got != calls {
		t.Errorf("forged replays made %d OneLogin calls", got-calls)
	}
	if rs := e.secResultsOf("leaver-1"); len(rs) != 1 {
		t.Errorf("forged replays added results: %+v", rs)
	}
	if n := e.bed.Count(topology.StreamDLQ); n != 1 {
		t.Errorf("forged replays added dead letters: %d", n)
	}

	// The operator's replay holds a grant: the job runs once more.
	if err := dlq.Replay(context.Background(), e.js, dls[0]); err != nil {
		t.Fatal(err)
	}
	e.secWait(10*time.Second, func() bool { return len(e.secResultsOf("leaver-1")) == 2 }, func() string { return "no replay result" })
	rs = e.secResultsOf("leaver-1")
	if want := fmt.Sprintf("leaver-1:result:replay:%d", dlqSeq); rs[1].MsgID != want {
		t.Errorf("replay result id %q, want %q", rs[1].MsgID, want)
	}
	if e.sim.ResourceCalls() == calls {
		t.Error("the granted replay made no OneLogin call")
	}
	e.secSettled(10 * time.Second)

	// The grant is spent: the same header again runs nothing.
	calls = e.sim.ResourceCalls()
	e.secPublish("mfa.jobs.offboard", failingOffboard("leaver-1"), map[string]string{
		jetstream.MsgIDHeader: "forged-after", job.HeaderReplay: job.ReplayTag(dlqSeq),
	})
	e.secSettled(10 * time.Second)
	if got := e.sim.ResourceCalls(); got != calls || len(e.secResultsOf("leaver-1")) != 2 {
		t.Errorf("a spent grant ran again: %d calls, %d results", got-calls, len(e.secResultsOf("leaver-1")))
	}
}

// Attack: a forged dead letter on mfa.dlq.remove whose headers and body
// say offboard. `dlq replay --all --type remove` must not run an offboard:
// the type comes from the DLQ subject and must agree with the body.
func TestForgedDeadLetterCannotChooseItsSubject(t *testing.T) {
	e := secStart(t, simulator.Config{})
	const user = 4242
	for _, f := range []string{"Google Authenticator", "OneLogin Protect"} {
		if _, err := e.sim.EnrollDevice(user, f, "dev", true); err != nil {
			t.Fatal(err)
		}
	}
	forged := map[string]string{
		job.HeaderOriginalSubject: "mfa.jobs.offboard", job.HeaderReason: "failed", job.HeaderErrorCode: job.CodeRetriesExhausted,
		jetstream.MsgIDHeader: "forged-dl-1",
	}
	// 1: the body says offboard: refused.
	forged[job.HeaderJobID] = "evil-1"
	e.secPublish("mfa.dlq.remove", fmt.Sprintf(`{"id":"evil-1","type":"offboard","user_id":%d}`, user), forged)
	// 2: the body says remove (of a device that does not exist); the
	// Original-Subject header still says offboard.
	forged[job.HeaderJobID], forged[jetstream.MsgIDHeader] = "evil-2", "forged-dl-2"
	e.secPublish("mfa.dlq.remove", fmt.Sprintf(`{"id":"evil-2","type":"remove","user_id":%d,"params":{"device_id":1}}`, user), forged)
	// 3: the Mfa-Job-Id header names another job than the body.
	forged[job.HeaderJobID], forged[jetstream.MsgIDHeader] = "victim", "forged-dl-3"
	e.secPublish("mfa.dlq.remove", fmt.Sprintf(`{"id":"evil-3","type":"remove","user_id":%d,"params":{"device_id":1}}`, user), forged)

	ctx := context.Background()
	dls, err := dlq.ListDeadLetters(ctx, e.js, dlq.DeadLetterFilter{Type: "remove"})
	if err != nil || len(dls) != 3 {
		t.Fatalf("dead letters: %d %v", len(dls), err)
	}
	var refused []string
	for _, d := range dls {
		err := dlq.Replay(ctx, e.js, d)
		var re *dlq.RefusedError
		switch {
		case errors.As(err, &re):
			refused = append(refused, d.JobID)
		case err != nil:
			t.Fatal(err)
		}
	}
	if strings.Join(refused, ",") != "evil-1,victim" {
		t.Errorf("refused %v, want evil-1 and the mismatched job id", refused)
	}
	e.secWait(10*time.Second, func() bool { return len(e.secResultsOf("evil-2")) == 1 }, func() string { return "no result for the replayed remove" })
	e.secSettled(10 * time.Second)
	for _, r := range e.secResults() {
		if r.Type != job.TypeRemove {
			t.Errorf("a replay ran a %s: %+v", r.Type, r.Result)
		}
	}
	for _, ef := range e.sim.Effects() {
		t.Errorf("a forged dead letter made an effect: %+v", ef)
	}
	if n := len(e.sim.Devices(user)); n != 2 {
		t.Errorf("user has %d devices left, want 2", n)
	}
}

// Attack: job X:result:replay:9 and job X with "Mfa-Replay: 9:result"
// used to share the result id X:result:replay:9:result, so one result was
// dropped as a duplicate. Each now gets its own result.
func TestCollidingJobIDsEachGetTheirResult(t *testing.T) {
	e := secStart(t, simulator.Config{})
	e.secPublish("mfa.jobs.offboard", `{"id":"X:result:replay:9","type":"offboard","user_id":501}`, map[string]string{jetstream.MsgIDHeader: "X:result:replay:9"})
	e.secPublish("mfa.jobs.offboard", `{"id":"X","type":"offboard","user_id":502}`, map[string]string{jetstream.MsgIDHeader: "X", job.HeaderReplay: "9:result"})
	e.secWait(10*time.Second, func() bool { return len(e.secResults()) == 2 }, func() string { return fmt.Sprintf("%d results", len(e.secResults())) })
	e.secSettled(10 * time.Second)
	ids := map[string]string{}
	for _, r := range e.secResults() {
		ids[r.JobID] = r.MsgID
	}
	if ids["X:result:replay:9"] != "X:result:replay:9:result" || ids["X"] != "X:result" {
		t.Errorf("results: %v", ids)
	}
}

// Attack: a job just under the 1 MiB max payload is rejected, and its DLQ
// copy (body plus headers) used not to fit, leaving the message in
// MFA_JOBS for ever. The copy's body is cut to 64 KiB.
func TestNearMaxPayloadJobLeavesNothingBehind(t *testing.T) {
	e := secStart(t, simulator.Config{})
	pad := strings.Repeat("A", (1<<20)-150) // the job fits; a copy with ~200 bytes of DLQ headers would not
	body := `{"id":"huge-1","type":"offboard","user_id":7,"pad":"` + pad + `"}`
	e.secPublish("mfa.jobs.offboard", body, map[string]string{jetstream.MsgIDHeader: "huge-1"})
	e.secSettled(20 * time.Second)
	dl := e.secMsgs(topology.StreamDLQ)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters", len(dl))
	}
	h := dl[0].Header
	if len(dl[0].Data) > job.MaxDLQBody || h.Get(job.HeaderBodyTruncated) != "true" || len(h.Get(job.HeaderBodySHA256)) != 64 || h.Get(job.HeaderErrorCode) != job.CodeTooLarge {
		t.Errorf("dead letter: %d bytes, headers %v", len(dl[0].Data), h)
	}
	if rs := e.secResultsOf("huge-1"); len(rs) != 1 || rs[0].Outcome != job.Rejected {
		t.Errorf("results: %+v", rs)
	}
	// Such a dead letter is not replayed: its body is not the job.
	dls, _ := dlq.ListDeadLetters(context.Background(), e.js, dlq.DeadLetterFilter{})
	var re *dlq.RefusedError
	if err := dlq.Replay(context.Background(), e.js, dls[0]); !errors.As(err, &re) {
		t.Errorf("replay of a truncated dead letter: %v", err)
	}
}

// Attack: OTPs reached the DLQ in the clear when a verify body was
// published on mfa.jobs.enroll, when it had trailing bytes, or when
// otp_token sat at the top level. None reaches any stream or the log.
func TestNoOTPInAnyStream(t *testing.T) {
	e := secStart(t, simulator.Config{})
	const otp = "OTP-8841-SECRET"
	const state = "STATE-5519-SECRET"
	verify := func(id string) string {
		return fmt.Sprintf(`{"id":%q,"type":"verify","user_id":3,"params":{"device_id":12,"otp_token":%q,"state_token":%q}}`, id, otp, state)
	}
	sends := []struct{ subject, body string }{
		{"mfa.jobs.enroll", verify("leak-1")},
		{"mfa.jobs.verify", verify("leak-2") + ` trailing`},
		{"mfa.jobs.verify", fmt.Sprintf(`{"id":"leak-3","type":"verify","user_id":3,"otp_token":%q,"params":{"device_id":12}}`, otp)},
		{"mfa.jobs.remove", fmt.Sprintf(`{"id":"leak-4","type":"remove","user_id":3,"params":{"device_id":1,"deep":[{"MFA_TOKEN":%q}]}}`, otp)},
		{"mfa.jobs.verify", verify("leak-5")}, // a valid verify of a device that does not exist: failed
		{"mfa.jobs.verify", fmt.Sprintf(`{"id":"leak-6","type":"verify","user_id":3,"params":{"device_id":12,"otp\u005ftoken":%q}} x`, otp)},
	}
	for i, s := range sends {
		e.secPublish(s.subject, s.body, map[string]string{jetstream.MsgIDHeader: fmt.Sprintf("leak-msg-%d", i)})
	}
	e.secWait(15*time.Second, func() bool { return e.bed.Count(topology.StreamDLQ) == len(sends) }, func() string {
		return fmt.Sprintf("%d of %d dead letters", e.bed.Count(topology.StreamDLQ), len(sends))
	})
	e.secSettled(10 * time.Second)
	for _, secret := range []string{otp, state} {
		if where := e.secFindSecret(secret); len(where) > 0 {
			t.Errorf("%s found in %v", secret, where)
		}
	}
	// The scan can find what it looks for: the secrets were published.
	if e.sim.ResourceCalls() == 0 {
		t.Error("the valid verify never reached OneLogin")
	}
}

// Attack: absurd numbers cost far more CPU to validate than they weigh,
// and parsing ran one message at a time per lane. They are refused by a
// byte scan, and a valid job behind them is not held up.
func TestAbsurdNumbersDoNotStallTheLane(t *testing.T) {
	e := secStart(t, simulator.Config{})
	for i := 0; i < 200; i++ {
		e.secPublish("mfa.jobs.remove", fmt.Sprintf(`{"id":"num-%d","type":"remove","user_id":9,"params":{"device_id":1e999999}}`, i), map[string]string{jetstream.MsgIDHeader: fmt.Sprintf("num-%d", i)})
	}
	start := time.Now()
	e.secPublish("mfa.jobs.offboard", `{"id":"after-numbers","type":"offboard","user_id":10}`, map[string]string{jetstream.MsgIDHeader: "after-numbers"})
	e.secWait(20*time.Second, func() bool { return len(e.secResultsOf("after-numbers")) == 1 }, func() string { return "the valid job has no result" })
	t.Logf("valid job behind 200 absurd numbers finished in %v", time.Since(start))
	e.secSettled(10 * time.Second)
	for _, r := range e.secResults() {
		if strings.HasPrefix(r.JobID, "num-") && (r.Outcome != job.Rejected || r.Error.Code != job.CodeUnreasonableNumber) {
			t.Fatalf("%s: %s %+v", r.JobID, r.Outcome, r.Error)
		}
	}
}

// Attack: display_name and sms_message carried NUL, ANSI escapes and bidi
// overrides to OneLogin (and from there to people's phones and admin
// screens). They are rejected before any call.
func TestControlCharactersNeverReachOneLogin(t *testing.T) {
	e := secStart(t, simulator.Config{})
	bodies := []string{
		`{"id":"cc-1","type":"enroll","user_id":5,"params":{"factor_name":"OneLogin SMS","display_name":"\u001b[31mphone","number":"+15551230000"}}`,
		`{"id":"cc-2","type":"enroll","user_id":5,"params":{"factor_name":"OneLogin SMS","display_name":"phone\u202e","number":"+15551230000"}}`,
		`{"id":"cc-3","type":"activate","user_id":5,"params":{"device_id":3,"sms_message":"code\u0000"}}`,
		`{"id":"cc-4","type":"enroll","user_id":5,"params":{"factor_name":"OneLogin\u0085SMS","display_name":"p","number":"+15551230000"}}`,
	}
	for i, b := range bodies {
		subject := "mfa.jobs.enroll"
		if strings.Contains(b, `"activate"`) {
			subject = "mfa.jobs.activate"
		}
		e.secPublish(subject, b, map[string]string{jetstream.MsgIDHeader: fmt.Sprintf("cc-%d", i+1)})
	}
	e.secWait(10*time.Second, func() bool { return len(e.secResults()) == len(bodies) }, func() string { return "results missing" })
	for _, r := range e.secResults() {
		if r.Outcome != job.Rejected || r.Error.Code != job.CodeInvalidCharacters {
			t.Errorf("%s: %s %+v", r.JobID, r.Outcome, r.Error)
		}
	}
	if n := e.sim.ResourceCalls(); n != 0 {
		t.Errorf("%d OneLogin calls", n)
	}
}
