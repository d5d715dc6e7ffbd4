package jobs_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/mfa-worker/mfa-worker/internal/dlq"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

func retriesTotal(e *env) float64 {
	n := 0.0
	for _, typ := range job.Types {
		n += testutil.ToFloat64(e.m.RetryCounter(string(typ)))
	}
	return n
}

func TestFivexxStormStillSucceeds(t *testing.T) {
	e := newEnv(t, simulator.Config{Seed: 3})
	e.sim.SetFaults(simulator.Faults{ErrorRate: 0.3, Latency: 2 * time.Millisecond, Jitter: 8 * time.Millisecond})
	planned := mixedJobs(t, e.sim, 200, 20_000)
	e.provision()
	for _, p := range planned {
		e.publish(p.typ, p.body, p.id)
	}
	cfg := testConfig()
	cfg.RetryWithin = 2 * time.Second
	e.start(cfg)
	rs := e.waitResults(len(planned), 60*time.Second)
	for _, p := range planned {
		if o := rs[p.id].Result.Outcome; o != job.Succeeded && o != job.Noop {
			t.Errorf("%s: %s %+v", p.id, o, rs[p.id].Result.Error)
		}
	}
	checkEffectsOnce(t, e.sim, planned, nil)
	st := e.sim.Stats()
	retries := retriesTotal(e)
	t.Logf("%d injected 5xx, %v retries counted", st.ServerError, retries)
	if st.ServerError == 0 || retries < float64(st.ServerError)/2 {
		t.Errorf("retries counted %v for %d injected 5xx", retries, st.ServerError)
	}
}

func TestOutageExhaustsRetriesThenReplaySucceeds(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	e.sim.SetFaults(simulator.Faults{OutageUntil: time.Now().Add(time.Hour)})
	planned := mixedJobs(t, e.sim, 20, 30_000)
	e.provision()
	for _, p := range planned {
		e.publish(p.typ, p.body, p.id)
	}
	e.start(testConfig())
	rs := e.waitResults(len(planned), 60*time.Second)
	for _, p := range planned {
		r := rs[p.id].Result
		if r.Outcome != job.Failed || r.Error == nil || r.Error.Code != job.CodeRetriesExhausted || r.Attempts != testConfig().MaxDeliver || !r.Error.Retryable {
			t.Fatalf("%s: %s attempts %d %+v", p.id, r.Outcome, r.Attempts, r.Error)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return e.count(topology.StreamDLQ) == len(planned) }, func() string {
		return fmt.Sprintf("%d dead letters", e.count(topology.StreamDLQ))
	})
	if n := len(e.sim.Effects()); n != 0 {
		t.Fatalf("%d effects during the outage", n)
	}

	// The outage ends; the operator replays the dead letters.
	e.sim.SetFaults(simulator.Faults{})
	ctx := context.Background()
	dls, err := dlq.ListDeadLetters(ctx, e.js, dlq.DeadLetterFilter{Code: job.CodeRetriesExhausted})
	if err != nil || len(dls) != len(planned) {
		t.Fatalf("list: %d, %v", len(dls), err)
	}
	for _, d := range dls {
		if d.Reason != string(job.Failed) || d.Deliveries != testConfig().MaxDeliver || d.JobID == "" {
			t.Fatalf("dead letter %+v", d)
		}
		if err := dlq.Replay(ctx, e.js, d); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return e.count(topology.StreamResults) == 2*len(planned) }, func() string {
		return fmt.Sprintf("%d results", e.count(topology.StreamResults))
	})
	ok := 0
	for _, m := range e.streamMsgs(topology.StreamResults) {
		if m.Result.Outcome == job.Succeeded {
			ok++
			validResult(t, m.Data)
		}
	}
	if ok != len(planned) {
		t.Fatalf("%d of %d replayed jobs succeeded", ok, len(planned))
	}
	if n := e.count(topology.StreamDLQ); n != 0 {
		t.Fatalf("%d dead letters left after replay", n)
	}
	checkEffectsOnce(t, e.sim, planned, nil)
}

func TestHardStopMidBatchThenFreshWorker(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	// Slow enough that the kill lands mid-batch.
	e.sim.SetFaults(simulator.Faults{Latency: 3 * time.Millisecond, Jitter: 5 * time.Millisecond})
	planned := mixedJobs(t, e.sim, 300, 40_000)
	e.provision()
	for _, p := range planned {
		e.publish(p.typ, p.body, p.id)
	}
	w := e.start(testConfig())
	testenv.Eventually(t, 30*time.Second, func() bool { return e.count(topology.StreamResults) >= 100 }, func() string { return "first results" })
	w.kill(t)
	killedAt := e.count(topology.StreamResults)
	e.start(testConfig())
	e.waitResults(len(planned), 60*time.Second)
	testenv.Eventually(t, 20*time.Second, func() bool { return e.count(topology.StreamJobs) == 0 }, func() string { return "job stream not empty" })
	seen := map[string]int{}
	for _, m := range e.streamMsgs(topology.StreamResults) {
		seen[m.Result.JobID]++
	}
	for _, p := range planned {
		if seen[p.id] != 1 {
			t.Errorf("%s: %d results", p.id, seen[p.id])
		}
	}
	// A job cut off between its call and the ledger ends ambiguous_effect
	// (activate, verify of device 0) and may have no effect; a
	// generate_token whose reply the kill lost is retried; every other
	// effect once.
	ambiguous := map[string]bool{}
	for _, m := range e.streamMsgs(topology.StreamResults) {
		if m.Result.Error != nil && m.Result.Error.Code == job.CodeAmbiguousEffect {
			ambiguous[m.Result.JobID] = true
		} else if m.Result.Outcome != job.Succeeded && m.Result.Outcome != job.Noop {
			t.Errorf("%s: %s %+v", m.Result.JobID, m.Result.Outcome, m.Result.Error)
		}
	}
	checkEffectsAfterKill(t, e.sim, planned, ambiguous)
	t.Logf("killed after %d results; %d jobs ended ambiguous_effect", killedAt, len(ambiguous))
}

func TestOffboardingJumpsTheQueueUnderBudget(t *testing.T) {
	e := newEnv(t, simulator.Config{RateLimit: 150, RateWindow: time.Second})
	e.provision()
	for i := 0; i < 500; i++ {
		id := fmt.Sprintf("enr-%d", i)
		e.publish("enroll", jobBody(id, "enroll", int64(50_000+i), map[string]any{"factor_id": 100001, "display_name": "Phone", "number": "+15551230000"}), id)
	}
	for i := 0; i < 50; i++ {
		user := int64(60_000 + i)
		e.sim.EnrollDevice(user, "Google Authenticator", "GA", true)
		id := fmt.Sprintf("off-%d", i)
		e.publish("offboard", jobBody(id, "offboard", user, nil), id)
	}
	e.start(testConfig())
	e.waitResults(550, 120*time.Second)
	type fin struct {
		at  time.Time
		typ job.Type
	}
	var all []fin
	for _, m := range e.streamMsgs(topology.StreamResults) {
		if m.Result.Outcome != job.Succeeded {
			t.Fatalf("%s: %s %+v", m.Result.JobID, m.Result.Outcome, m.Result.Error)
		}
		all = append(all, fin{m.Result.FinishedAt, m.Result.Type})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at.Before(all[j].at) })
	enrollsBefore, offboards := 0, 0
	for _, f := range all {
		if f.typ == job.TypeOffboard {
			offboards++
			if offboards == 50 {
				break
			}
		} else {
			enrollsBefore++
		}
	}
	st := e.sim.Stats()
	t.Logf("enrolls finished before the last offboard: %d of 500; 429s: %d", enrollsBefore, st.TooMany)
	if enrollsBefore > 100 {
		t.Errorf("%d enrolls finished before the last offboard; offboarding should go first", enrollsBefore)
	}
}

func TestSecretsNeverLeak(t *testing.T) {
	const clientSecret = "planted-client-secret-7f3a9c"
	const plantedOTP = "739184"
	const plantedState = "planted-state-token-5b2e"
	e := newEnv(t, simulator.Config{ClientSecret: clientSecret})
	w := e.start(testConfig())
	e.publish("enroll", jobBody("s-enroll", "enroll", 7, map[string]any{"factor_name": "OneLogin SMS", "display_name": "Phone", "number": "+15551234567"}), "s-enroll")
	rs := e.waitResults(1, 10*time.Second)
	dev := int64(rs["s-enroll"].Result.Data["device_id"].(float64))
	e.publish("activate", jobBody("s-act", "activate", 7, map[string]any{"device_id": dev}), "s-act")
	rs = e.waitResults(2, 10*time.Second)
	realState := rs["s-act"].Result.Data["state_token"].(string)
	realOTP := e.sim.LastOTP(7, dev)
	e.publish("verify", jobBody("s-bad", "verify", 7, map[string]any{"device_id": dev, "otp_token": plantedOTP, "state_token": plantedState}), "s-bad")
	e.waitResults(3, 10*time.Second)
	e.publish("verify", jobBody("s-ok", "verify", 7, map[string]any{"device_id": dev, "otp_token": realOTP, "state_token": realState}), "s-ok")
	kp, xkey := curveKey(t)
	e.publish("generate_token", jobBody("s-tok", "generate_token", 7, map[string]any{"recipient_xkey": xkey}), "s-tok")
	rs = e.waitResults(5, 10*time.Second)
	if rs["s-bad"].Result.Outcome != job.Failed || rs["s-ok"].Result.Outcome != job.Succeeded {
		t.Fatalf("verify outcomes: %s, %s", rs["s-bad"].Result.Outcome, rs["s-ok"].Result.Outcome)
	}
	mfaToken := openToken(t, kp, rs["s-tok"].Result)
	w.stop(t)

	secrets := map[string]string{"client secret": clientSecret, "planted OTP": plantedOTP, "planted state token": plantedState, "real OTP": realOTP, "MFA token": mfaToken}
	for i, tok := range e.sim.IssuedTokens() {
		secrets[fmt.Sprintf("access token %d", i)] = tok
	}
	var results, dlqHeaders, dlqBodies strings.Builder
	for _, m := range e.streamMsgs(topology.StreamResults) {
		results.Write(m.Data)
	}
	for _, m := range e.streamMsgs(topology.StreamDLQ) {
		fmt.Fprintf(&dlqHeaders, "%v\n", m.Header)
		dlqBodies.Write(m.Data)
	}
	if dlqBodies.Len() == 0 {
		t.Fatal("the failed verify left no DLQ copy")
	}
	metricsText, err := testutil.CollectAndFormat(e.reg, expfmt.TypeTextPlain)
	if err != nil {
		t.Fatal(err)
	}
	places := map[string]string{"logs": e.logs.String(), "results": results.String(), "DLQ headers": dlqHeaders.String(), "DLQ bodies": dlqBodies.String(), "metrics": string(metricsText)}
	for what, s := range secrets {
		for where, text := range places {
			if strings.Contains(text, s) {
				t.Errorf("%s found in %s", what, where)
			}
		}
	}
	// State tokens belong in activate results, and nowhere else.
	for _, where := range []string{"logs", "DLQ headers", "DLQ bodies", "metrics"} {
		if strings.Contains(places[where], realState) {
			t.Errorf("activate's state token found in %s", where)
		}
	}
}
