package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mfa-worker/mfa-worker/internal/dlq"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// timedBody is a job body with time fields (RFC 3339, empty: absent).
func timedBody(id, typ string, user int64, params map[string]any, fields map[string]time.Time) string {
	m := map[string]any{"id": id, "type": typ}
	if user != 0 {
		m["user_id"] = user
	}
	if params != nil {
		m["params"] = params
	}
	for k, v := range fields {
		m[k] = v.Format(time.RFC3339Nano)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func (e *env) jobState(id string) *ops.JobState {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), topology.BucketLedger)
	if err != nil {
		e.t.Fatal(err)
	}
	st, err := e.js.Stream(context.Background(), topology.StreamJobs)
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := ops.LookupJob(context.Background(), ledger.New(kv), st, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// hasSchedule reports whether MFA_JOBS holds a schedule for job id.
func (e *env) hasSchedule(id string) bool {
	e.t.Helper()
	st, err := e.js.Stream(context.Background(), topology.StreamJobs)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := jobs.FindSchedule(context.Background(), st, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return m != nil
}

func (e *env) ackPending() int {
	e.t.Helper()
	n := 0
	for _, c := range []string{topology.ConsumerUrgent, topology.ConsumerNormal} {
		info, err := e.js.Consumer(context.Background(), topology.StreamJobs, c)
		if err != nil {
			e.t.Fatal(err)
		}
		n += info.CachedInfo().NumAckPending
	}
	return n
}

// The timeline: a scheduled offboard runs within 2 s after its not_before
// and not before; a scheduled offboard cancelled before it is due never
// runs; a cancel that comes before its target wins; an enroll whose time is
// before the user's offboard is cancelled without a OneLogin call, also
// when delivered late and when replayed from the DLQ; a rehire's enroll
// runs.
func TestTimeline(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	e.start(testConfig())
	const leaver, moved, early, dlqUser = 200, 201, 202, 203
	for _, u := range []int64{leaver, moved, early} {
		if _, err := e.sim.EnrollDevice(u, "OneLogin SMS", "phone", true); err != nil {
			t.Fatal(err)
		}
	}
	sms := map[string]any{"factor_name": "OneLogin SMS", "display_name": "Work phone", "number": "+15551230001"}
	results := 0

	// Two offboards scheduled; the second is cancelled before it is due.
	nb1 := time.Now().Add(3*time.Second + 300*time.Millisecond)
	nb2 := time.Now().Add(4 * time.Second)
	e.publish("offboard", timedBody("off-1", "offboard", leaver, nil, map[string]time.Time{"not_before": nb1}), "off-1")
	e.publish("offboard", timedBody("off-2", "offboard", moved, nil, map[string]time.Time{"not_before": nb2}), "off-2")
	testenv.Eventually(t, 2*time.Second, func() bool {
		return e.jobState("off-1").State == ops.JobScheduled && e.jobState("off-2").State == ops.JobScheduled
	}, func() string { return fmt.Sprintf("states %+v %+v", e.jobState("off-1"), e.jobState("off-2")) })
	if s := e.jobState("off-1"); !s.DueAt.Equal(jobs.DueAt(nb1)) || s.DueAt.Before(nb1) || s.DueAt.Sub(nb1) >= time.Second {
		t.Fatalf("due_at %v for not_before %v", s.DueAt, nb1)
	}
	// The ledger shows the job scheduled a moment before its message is
	// acked (the schedule is published in between).
	testenv.Eventually(t, 2*time.Second, func() bool { return e.ackPending() == 0 }, func() string {
		return fmt.Sprintf("ack pending %d while jobs are scheduled", e.ackPending())
	})
	if !e.hasSchedule("off-2") {
		t.Fatal("off-2 is scheduled but MFA_JOBS holds no schedule for it")
	}
	e.publish("cancel", timedBody("cancel-2", "cancel", 0, map[string]any{"job_id": "off-2"}, nil), "cancel-2")
	results += 2
	rs := e.waitResults(results, 3*time.Second)
	if time.Now().After(nb1) {
		t.Fatal("the cancel took until off-1 was due; the timeline is void")
	}
	// The cancel removes off-2's schedule long before it is due; one left
	// behind would go only when it fires at nb2.
	testenv.Eventually(t, time.Until(nb2), func() bool { return !e.hasSchedule("off-2") }, func() string {
		return "off-2's schedule is still in MFA_JOBS as it falls due"
	})
	if !time.Now().Before(nb2) {
		t.Fatal("off-2's schedule stayed until it was due")
	}
	c := expectResult(t, rs, "cancel-2", "cancel", job.Succeeded, "")
	if c.Data["job_id"] != "off-2" || c.Data["target_outcome"] != "cancelled" {
		t.Fatalf("cancel data %v", c.Data)
	}
	r := expectResult(t, rs, "off-2", "offboard", job.Cancelled, job.CodeCancelled)
	if r.Data["cancelled_by"] != "cancel-2" {
		t.Fatalf("cancelled data %v", r.Data)
	}
	if len(e.sim.Devices(leaver)) != 1 {
		t.Fatal("off-1 ran before its not_before")
	}

	results++
	rs = e.waitResults(results, nb1.Sub(time.Now())+4*time.Second)
	r = expectResult(t, rs, "off-1", "offboard", job.Succeeded, "")
	var removedAt time.Time
	for _, ef := range e.sim.Effects() {
		if ef.RequestID == "off-1" && ef.Kind == simulator.EffectRemove {
			removedAt = ef.At
		}
	}
	if removedAt.Before(nb1) || r.StartedAt.Before(nb1) {
		t.Fatalf("off-1 ran early: removed %v, started %v, not_before %v", removedAt, r.StartedAt, nb1)
	}
	if late := removedAt.Sub(nb1); late > 2*time.Second {
		t.Fatalf("off-1 ran %v after its not_before", late)
	}
	if s := e.jobState("off-1"); s.State != ops.JobFinished || len(s.Result) == 0 {
		t.Fatalf("off-1 state %+v", s)
	}
	// off-2 never ran: once MFA_JOBS is empty and the worker holds
	// nothing, nothing is left that could run it. A schedule left behind
	// stays in the stream until it fires at nb2 and its job has been
	// handled, so the wait outlasts it.
	testenv.Eventually(t, time.Until(nb2)+5*time.Second, func() bool {
		return e.count(topology.StreamJobs) == 0 && e.ackPending() == 0
	}, func() string {
		var left []string
		for _, m := range e.streamMsgs(topology.StreamJobs) {
			left = append(left, m.Subject)
		}
		return fmt.Sprintf("left in MFA_JOBS: %v; ack pending %d", left, e.ackPending())
	})
	if len(e.sim.Devices(moved)) != 1 {
		t.Fatal("the cancelled offboard ran")
	}
	if n := e.count(topology.StreamResults); n != results {
		t.Fatalf("%d results, want %d: the cancelled offboard ended twice", n, results)
	}
	if s := e.jobState("off-2"); s.State != ops.JobFinished {
		t.Fatalf("off-2 is %s, want finished (cancelled)", s.State)
	}

	// A cancel before its target: the target, when it arrives, ends
	// cancelled; the cancel was a noop on an unknown target.
	e.publish("cancel", timedBody("cancel-3", "cancel", 0, map[string]any{"job_id": "off-3"}, nil), "cancel-3")
	results++
	rs = e.waitResults(results, 3*time.Second)
	c = expectResult(t, rs, "cancel-3", "cancel", job.Noop, "")
	if c.Data["target_outcome"] != "unknown" {
		t.Fatalf("cancel-3 data %v", c.Data)
	}
	if s := e.jobState("off-3"); s.State != ops.JobUnknown || s.CancelledBy != "cancel-3" {
		t.Fatalf("off-3 state %+v", s)
	}
	e.publish("offboard", timedBody("off-3", "offboard", early, nil, nil), "off-3")
	results++
	rs = e.waitResults(results, 3*time.Second)
	if r := expectResult(t, rs, "off-3", "offboard", job.Cancelled, job.CodeCancelled); r.Data["cancelled_by"] != "cancel-3" {
		t.Fatalf("off-3 data %v", r.Data)
	}
	if len(e.sim.Devices(early)) != 1 {
		t.Fatal("the cancelled offboard ran")
	}

	// No resurrection: an enroll asked for an hour before the offboard,
	// delivered after it.
	calls := e.sim.ResourceCalls()
	e.publish("enroll", timedBody("enr-stale", "enroll", leaver, sms, map[string]time.Time{"requested_at": nb1.Add(-time.Hour)}), "enr-stale")
	results++
	rs = e.waitResults(results, 3*time.Second)
	expectResult(t, rs, "enr-stale", "enroll", job.Cancelled, job.CodeSupersededByOffboard)
	if n := e.sim.ResourceCalls() - calls; n != 0 {
		t.Fatalf("the stale enroll made %d OneLogin calls", n)
	}

	// The same from the DLQ: an enroll that failed (a factor the user
	// cannot have), then the user left, then the dead letter is replayed.
	t0 := time.Now().Add(-2 * time.Hour)
	ga := map[string]any{"factor_name": "Google Authenticator", "display_name": "x", "number": "+15551230002"}
	e.publish("enroll", timedBody("enr-dlq", "enroll", dlqUser, ga, map[string]time.Time{"requested_at": t0}), "enr-dlq")
	results++
	rs = e.waitResults(results, 3*time.Second)
	expectResult(t, rs, "enr-dlq", "enroll", job.Failed, job.CodeOneLoginRejected)
	e.publish("offboard", timedBody("off-4", "offboard", dlqUser, nil, map[string]time.Time{"requested_at": t0.Add(time.Hour)}), "off-4")
	results++
	rs = e.waitResults(results, 3*time.Second)
	expectResult(t, rs, "off-4", "offboard", job.Noop, "")
	dl := e.deadLetterOf(t, "enroll", "enr-dlq")
	if dl.JobTime == "" {
		t.Fatalf("the dead letter carries no job time: %+v", dl)
	}
	results = e.replaySuperseded(t, dl, results)

	// A rehire: the enroll's time is a day after the offboard.
	e.publish("enroll", timedBody("enr-rehire", "enroll", leaver, sms, map[string]time.Time{"requested_at": nb1.Add(24 * time.Hour)}), "enr-rehire")
	results++
	rs = e.waitResults(results, 3*time.Second)
	expectResult(t, rs, "enr-rehire", "enroll", job.Succeeded, "")
	if len(e.sim.Devices(leaver)) != 1 {
		t.Fatal("the rehire's enroll made no device")
	}
	if e.count(topology.StreamResults) != results {
		t.Fatalf("%d results, want %d (one per job)", e.count(topology.StreamResults), results)
	}
}

// Schedules too far ahead, or after not_after, are rejected at once.
func TestScheduleRejections(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	e.start(testConfig())
	now := time.Now()
	e.publish("offboard", timedBody("far", "offboard", 7, nil, map[string]time.Time{"not_before": now.Add(367 * 24 * time.Hour)}), "far")
	e.publish("offboard", timedBody("inverted", "offboard", 7, nil, map[string]time.Time{"not_before": now.Add(2 * time.Hour), "not_after": now.Add(time.Hour)}), "inverted")
	rs := e.waitResults(2, 5*time.Second)
	expectResult(t, rs, "far", "offboard", job.Rejected, job.CodeOutOfRange)
	expectResult(t, rs, "inverted", "offboard", job.Rejected, job.CodeConflictingFields)
	for _, id := range []string{"far", "inverted"} {
		if s := e.jobState(id); s.State == ops.JobScheduled {
			t.Errorf("%s was scheduled", id)
		}
	}
}

// mfa_jobs_scheduled counts the jobs waiting for their not_before, from
// the server's count (so it survives restarts), and drops when one is
// cancelled.
func TestScheduledGauge(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	w := e.start(testConfig())
	nb := time.Now().Add(time.Hour)
	for i := range 3 {
		id := fmt.Sprintf("later-%d", i)
		e.publish("enroll", timedBody(id, "enroll", int64(300+i), map[string]any{"factor_id": 1, "display_name": "p", "number": "+15551230001"}, map[string]time.Time{"not_before": nb}), id)
	}
	gauge := func(want float64) {
		t.Helper()
		testenv.Eventually(t, 12*time.Second, func() bool { return testutil.ToFloat64(e.m.ScheduledGauge("enroll")) == want }, func() string {
			return fmt.Sprintf("mfa_jobs_scheduled{enroll} = %v, want %v", testutil.ToFloat64(e.m.ScheduledGauge("enroll")), want)
		})
	}
	gauge(3)
	e.publish("cancel", timedBody("c", "cancel", 0, map[string]any{"job_id": "later-1"}, nil), "c")
	gauge(2)
	w.stop(t)
	e.m.ScheduledGauge("enroll").Set(0)
	e.start(testConfig())
	gauge(2)
	if s := e.jobState("later-2"); s.State != ops.JobScheduled || !s.DueAt.Equal(jobs.DueAt(nb)) {
		t.Fatalf("later-2 after a restart: %+v", s)
	}

	// The ledger forgets a scheduled job after its TTL (7 days) while its
	// schedule waits up to 366 days: the schedule is then the record.
	kv, err := e.js.KeyValue(context.Background(), topology.BucketLedger)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(context.Background(), ledger.Key("later-0")); err != nil {
		t.Fatal(err)
	}
	if s := e.jobState("later-0"); s.State != ops.JobScheduled || s.DueAt == nil || !s.DueAt.Equal(jobs.DueAt(nb)) {
		t.Fatalf("later-0 without its ledger record: %+v", s)
	}
	e.publish("cancel", timedBody("c0", "cancel", 0, map[string]any{"job_id": "later-0"}, nil), "c0")
	gauge(1)
	rs := e.waitResults(4, 5*time.Second)
	if c := expectResult(t, rs, "c0", "cancel", job.Succeeded, ""); c.Data["target_outcome"] != "cancelled" {
		t.Fatalf("cancel of a forgotten schedule: %v", c.Data)
	}
	expectResult(t, rs, "later-0", "enroll", job.Cancelled, job.CodeCancelled)
	if s := e.jobState("later-0"); s.State != ops.JobFinished {
		t.Fatalf("later-0 after the cancel: %+v", s)
	}
}

// A job with neither not_before nor requested_at keeps the time its first
// message was stored, through the DLQ and a replay (Mfa-Job-Time): an
// enroll that failed before the user's offboard and is replayed after it
// is cancelled, not run.
func TestJobTimeTravelsThroughReplay(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	e.start(testConfig())
	ga := map[string]any{"factor_name": "Google Authenticator", "display_name": "x", "number": "+15551230002"}
	e.publish("enroll", timedBody("enr", "enroll", 400, ga, nil), "enr")
	rs := e.waitResults(1, 3*time.Second)
	expectResult(t, rs, "enr", "enroll", job.Failed, job.CodeOneLoginRejected)
	e.publish("offboard", timedBody("off", "offboard", 400, nil, nil), "off")
	rs = e.waitResults(2, 3*time.Second)
	expectResult(t, rs, "off", "offboard", job.Noop, "")
	all, err := dlq.ListDeadLetters(context.Background(), e.js, dlq.DeadLetterFilter{Type: "enroll"})
	if err != nil || len(all) != 1 || all[0].JobTime == "" {
		t.Fatalf("dead letters %+v %v", all, err)
	}
	calls := e.sim.ResourceCalls()
	if err := dlq.Replay(context.Background(), e.js, all[0]); err != nil {
		t.Fatal(err)
	}
	e.waitResults(3, 3*time.Second)
	var replayed []job.Result
	for _, m := range e.streamMsgs(topology.StreamResults) {
		if m.Result.JobID == "enr" && m.Header.Get("Nats-Msg-Id") != "enr:result" {
			replayed = append(replayed, m.Result)
		}
	}
	if len(replayed) != 1 || replayed[0].Outcome != job.Cancelled || replayed[0].Error.Code != job.CodeSupersededByOffboard {
		t.Fatalf("replayed enroll: %+v", replayed)
	}
	if n := e.sim.ResourceCalls() - calls; n != 0 {
		t.Fatalf("the replay made %d OneLogin calls", n)
	}
}

// An invalid job whose id a cancel already waits for gets its one result,
// the rejection; the tombstone does not make it a reused id.
func TestRejectedTargetOfATombstone(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	e.start(testConfig())
	e.publish("cancel", timedBody("c", "cancel", 0, map[string]any{"job_id": "bad"}, nil), "c")
	e.waitResults(1, 3*time.Second)
	e.publish("remove", `{"id":"bad","type":"remove","user_id":5,"params":{"device_id":"x"}}`, "bad")
	rs := e.waitResults(2, 3*time.Second)
	expectResult(t, rs, "bad", "remove", job.Rejected, job.CodeWrongType)
	if s := e.jobState("bad"); s.State != ops.JobFinished {
		t.Fatalf("bad: %+v", s)
	}
}
