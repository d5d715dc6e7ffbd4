package jobs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mfa-worker/mfa-worker/internal/dlq"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	peoplebucket "github.com/mfa-worker/mfa-worker/internal/people"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// publishCancel sends a cancel of target on mfa.jobs.cancel.<scope> (the
// bare subject for an empty scope).
func (e *env) publishCancel(scope, id, target string) {
	e.t.Helper()
	m := nats.NewMsg(job.CancelSubject(scope))
	m.Data = []byte(timedBody(id, "cancel", 0, map[string]any{"job_id": target}, nil))
	m.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		e.t.Fatalf("publish cancel on %s: %v", m.Subject, err)
	}
}

// sourcedBody is a job body with a source and time fields.
func sourcedBody(id, typ string, user int64, source string, fields map[string]time.Time) string {
	b := timedBody(id, typ, user, nil, fields)
	return b[:len(b)-1] + fmt.Sprintf(",%q:%q}", "source", source)
}

// Cancel authority is the subject: a cancel scoped to another source can
// end an HR offboard neither before nor after it arrives, and its
// tombstone does not bind it; an operator's bare cancel can, and the HR
// source's own scope can; a cancelled offboard is counted by source, and
// both results say who cancelled.
func TestCancelAuthorityIsTheSubject(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	e.start(testConfig())
	const src = "hr.cloudevents"
	const sched, early, ownScope, notBound = 300, 301, 302, 303
	for _, u := range []int64{sched, early, ownScope, notBound} {
		if _, err := e.sim.EnrollDevice(u, "OneLogin SMS", "phone", true); err != nil {
			t.Fatal(err)
		}
	}
	cancelled := func() float64 { return testutil.ToFloat64(e.m.OffboardsCancelled(src)) }
	results := 0

	// After it arrives: a scheduled HR offboard.
	nb := time.Now().Add(time.Hour)
	e.publish("offboard", sourcedBody("off-s", "offboard", sched, src, map[string]time.Time{"not_before": nb}), "off-s")
	testenv.Eventually(t, 3*time.Second, func() bool { return e.jobState("off-s").State == ops.JobScheduled }, func() string {
		return fmt.Sprintf("off-s %+v", e.jobState("off-s"))
	})
	e.publishCancel("hr.other", "c-other", "off-s")
	results++
	rs := e.waitResults(results, 3*time.Second)
	r := expectResult(t, rs, "c-other", "cancel", job.Failed, job.CodeCancelNotPermitted)
	validResult(t, rs["c-other"].Data)
	if r.Error.Retryable {
		t.Fatalf("c-other: %+v", r.Error)
	}
	if s := e.jobState("off-s"); s.State != ops.JobScheduled {
		t.Fatalf("a foreign scope's cancel changed the offboard: %+v", s)
	}
	if cancelled() != 0 {
		t.Fatal("counted a cancelled offboard that was not cancelled")
	}
	e.publishCancel("", "c-operator", "off-s")
	results += 2
	rs = e.waitResults(results, 3*time.Second)
	c := expectResult(t, rs, "c-operator", "cancel", job.Succeeded, "")
	if c.Data["target_outcome"] != "cancelled" || c.Data["cancel_scope"] != nil {
		t.Fatalf("c-operator data %v", c.Data)
	}
	r = expectResult(t, rs, "off-s", "offboard", job.Cancelled, job.CodeCancelled)
	validResult(t, rs["off-s"].Data)
	if r.Data["cancelled_by"] != "c-operator" || r.Data["cancel_scope"] != nil || r.Source != src {
		t.Fatalf("off-s: source %q data %v", r.Source, r.Data)
	}
	if cancelled() != 1 {
		t.Fatalf("mfa_offboards_cancelled_total{source=%q} = %v, want 1", src, cancelled())
	}

	// Before it arrives: a foreign tombstone, then the source's own.
	e.publishCancel("hr.other", "c-early-other", "off-e")
	e.publishCancel("hr.cloudevents", "c-early-own", "off-e")
	results += 2
	rs = e.waitResults(results, 3*time.Second)
	for _, id := range []string{"c-early-other", "c-early-own"} {
		if c := expectResult(t, rs, id, "cancel", job.Noop, ""); c.Data["target_outcome"] != "unknown" {
			t.Fatalf("%s data %v", id, c.Data)
		}
	}
	e.publish("offboard", sourcedBody("off-e", "offboard", early, src, nil), "off-e")
	results++
	rs = e.waitResults(results, 3*time.Second)
	r = expectResult(t, rs, "off-e", "offboard", job.Cancelled, job.CodeCancelled)
	if r.Data["cancelled_by"] != "c-early-own" || r.Data["cancel_scope"] != src {
		t.Fatalf("off-e data %v", r.Data)
	}
	if len(e.sim.Devices(early)) != 1 {
		t.Fatal("the cancelled offboard ran")
	}
	if cancelled() != 2 {
		t.Fatalf("mfa_offboards_cancelled_total{source=%q} = %v, want 2", src, cancelled())
	}

	// Only a foreign tombstone waits: it does not bind, the offboard runs,
	// also when it is scheduled.
	e.publishCancel("hr.other", "c-nb", "off-n")
	e.publishCancel("hr.other", "c-nb-later", "off-n2")
	results += 2
	e.waitResults(results, 3*time.Second)
	e.publish("offboard", sourcedBody("off-n", "offboard", notBound, src, nil), "off-n")
	e.publish("offboard", sourcedBody("off-n2", "offboard", ownScope, src, map[string]time.Time{"not_before": time.Now().Add(time.Hour)}), "off-n2")
	results++
	rs = e.waitResults(results, 3*time.Second)
	expectResult(t, rs, "off-n", "offboard", job.Succeeded, "")
	if len(e.sim.Devices(notBound)) != 0 {
		t.Fatal("the offboard left factors")
	}
	testenv.Eventually(t, 3*time.Second, func() bool { return e.jobState("off-n2").State == ops.JobScheduled }, func() string {
		return fmt.Sprintf("off-n2 %+v (a foreign tombstone held it?)", e.jobState("off-n2"))
	})
	// The source's own scope may end it once scheduled.
	e.publishCancel("hr.cloudevents", "c-own-n2", "off-n2")
	results += 2
	rs = e.waitResults(results, 3*time.Second)
	if c := expectResult(t, rs, "c-own-n2", "cancel", job.Succeeded, ""); c.Data["cancel_scope"] != src {
		t.Fatalf("c-own-n2 data %v", c.Data)
	}
	if r := expectResult(t, rs, "off-n2", "offboard", job.Cancelled, job.CodeCancelled); r.Data["cancel_scope"] != src {
		t.Fatalf("off-n2 data %v", r.Data)
	}
	if cancelled() != 3 {
		t.Fatalf("mfa_offboards_cancelled_total{source=%q} = %v, want 3", src, cancelled())
	}
	if n := e.count(topology.StreamResults); n != results {
		t.Fatalf("%d results, want %d (one per job)", n, results)
	}
}

// Job time is bounded by the time JetStream stored the job plus 5
// minutes: an offboard dated 2099 records that, not 2099; a later enroll
// (a rehire) runs; an enroll dated 2099 that an offboard stored later
// follows is still superseded.
func TestJobTimeIsBounded(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	e.start(testConfig())
	const poisoned, stale = 400, 401
	far := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	sms := map[string]any{"factor_name": "OneLogin SMS", "display_name": "Work phone", "number": "+15551230001"}
	kv, err := e.js.KeyValue(context.Background(), topology.BucketPeople)
	if err != nil {
		t.Fatal(err)
	}
	storedAt := func(id string) time.Time {
		for _, m := range e.streamMsgs(topology.StreamResults) {
			if m.Result.JobID == id {
				return m.Result.StartedAt
			}
		}
		t.Fatalf("%s: no result", id)
		return time.Time{}
	}
	results := 0

	before := time.Now()
	e.publish("offboard", timedBody("off-2099", "offboard", poisoned, nil, map[string]time.Time{"requested_at": far}), "off-2099")
	results++
	rs := e.waitResults(results, 3*time.Second)
	expectResult(t, rs, "off-2099", "offboard", job.Noop, "")
	rec, err := peoplebucket.Show(context.Background(), kv, poisoned)
	if err != nil || rec == nil {
		t.Fatalf("MFA_PEOPLE record %+v, %v", rec, err)
	}
	limit := storedAt("off-2099").Add(job.MaxClockAhead)
	if rec.OffboardedAt.Before(before.Add(job.MaxClockAhead-time.Second)) || rec.OffboardedAt.After(limit) || rec.Poisoned(time.Now()) {
		t.Fatalf("recorded offboard time %v; want the stored time + 5m (at most %v), not 2099", rec.OffboardedAt, limit)
	}

	// A scheduled offboard's time is its not_before: the message that
	// runs it is stored when it is due, and the bound keeps it.
	const scheduled = 402
	nb := time.Now().Add(1500 * time.Millisecond)
	e.publish("offboard", timedBody("off-nb", "offboard", scheduled, nil, map[string]time.Time{"not_before": nb}), "off-nb")
	results++
	rs = e.waitResults(results, 5*time.Second)
	expectResult(t, rs, "off-nb", "offboard", job.Noop, "")
	if rec, err := peoplebucket.Show(context.Background(), kv, scheduled); err != nil || rec == nil || !rec.OffboardedAt.Equal(nb) {
		t.Fatalf("scheduled offboard recorded %+v (%v), want its not_before %v", rec, err, nb)
	}

	// A rehire, published later (its clock 10 minutes ahead: its time too
	// is its stored time + 5m, later than the offboard's).
	time.Sleep(10 * time.Millisecond)
	e.publish("enroll", timedBody("enr-rehire", "enroll", poisoned, sms, map[string]time.Time{"requested_at": time.Now().Add(10 * time.Minute)}), "enr-rehire")
	results++
	rs = e.waitResults(results, 3*time.Second)
	expectResult(t, rs, "enr-rehire", "enroll", job.Succeeded, "")

	// An enroll dated 2099, stored first (it fails and is dead-lettered),
	// an offboard stored later, then the enroll replayed: its time is its
	// first stored time + 5m, before the offboard's.
	ga := map[string]any{"factor_name": "Google Authenticator", "display_name": "x", "number": "+15551230002"}
	e.publish("enroll", timedBody("enr-2099", "enroll", stale, ga, map[string]time.Time{"requested_at": far}), "enr-2099")
	results++
	rs = e.waitResults(results, 3*time.Second)
	expectResult(t, rs, "enr-2099", "enroll", job.Failed, job.CodeOneLoginRejected)
	time.Sleep(10 * time.Millisecond)
	e.publish("offboard", timedBody("off-later", "offboard", stale, nil, map[string]time.Time{"requested_at": far}), "off-later")
	results++
	rs = e.waitResults(results, 3*time.Second)
	expectResult(t, rs, "off-later", "offboard", job.Noop, "")
	dl := e.deadLetterOf(t, "enroll", "enr-2099")
	if jt, err := time.Parse(time.RFC3339Nano, dl.JobTime); err != nil || jt.Year() == 2099 {
		t.Fatalf("the dead letter carries job time %q", dl.JobTime)
	}
	e.replaySuperseded(t, dl, results)
}

// A publisher's own Mfa-Job-Time header is bounded like a declared time.
func TestJobTimeHeaderIsBounded(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	e.start(testConfig())
	const user = 410
	m := nats.NewMsg(job.TypeOffboard.Subject())
	m.Data = []byte(timedBody("off-hdr", "offboard", user, nil, nil))
	m.Header.Set(jetstream.MsgIDHeader, "off-hdr")
	m.Header.Set(job.HeaderJobTime, "2099-01-01T00:00:00Z")
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	e.waitResults(1, 3*time.Second)
	kv, err := e.js.KeyValue(context.Background(), topology.BucketPeople)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := peoplebucket.Show(context.Background(), kv, user)
	if err != nil || rec == nil {
		t.Fatalf("MFA_PEOPLE record %+v, %v", rec, err)
	}
	if rec.Poisoned(time.Now()) || rec.OffboardedAt.Year() == 2099 {
		t.Fatalf("recorded offboard time %v from a forged header", rec.OffboardedAt)
	}
}

// MFA_JOBS at the worker's limits: a job whose not_before is ahead is not
// parked but fails jobs_stream_full (dead-lettered, one result); a job due
// now still runs; the usage gauge says how full the stream is.
func TestJobsStreamLimit(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	const limit = 100
	// The schedules are parked by a replica with the default limits
	// (while they are parked, their messages count too), then a replica
	// with the limit takes over.
	first := e.start(testConfig())
	later := time.Now().Add(time.Hour)
	for i := range limit {
		id := fmt.Sprintf("sched-%d", i)
		e.publish("enroll", timedBody(id, "enroll", int64(500+i), map[string]any{"factor_name": "OneLogin SMS", "display_name": "x", "number": "+15551230001"},
			map[string]time.Time{"not_before": later}), id)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return e.count(topology.StreamJobs) == limit && e.ackPending() == 0 }, func() string {
		return fmt.Sprintf("%d messages in MFA_JOBS, %d ack pending", e.count(topology.StreamJobs), e.ackPending())
	})
	first.stop(t)
	w, err := e.bed.StartWorker(testConfig(), testenv.WorkerOptions{Timeout: 5 * time.Second, TokenMaxElapsed: time.Second,
		Topology: topology.Config{JobsMaxMsgs: limit}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	usage := func() float64 { return testutil.ToFloat64(e.m.JobsStreamUsage()) }
	testenv.Eventually(t, 20*time.Second, func() bool { return usage() >= 1 }, func() string {
		return fmt.Sprintf("usage %v with %d messages in MFA_JOBS", usage(), e.count(topology.StreamJobs))
	})
	e.publish("offboard", timedBody("off-over", "offboard", 900, nil, map[string]time.Time{"not_before": later}), "off-over")
	e.publish("offboard", timedBody("off-now", "offboard", 901, nil, nil), "off-now")
	rs := e.waitResults(2, 5*time.Second)
	r := expectResult(t, rs, "off-over", "offboard", job.Failed, job.CodeJobsStreamFull)
	validResult(t, rs["off-over"].Data)
	if r.Error.Retryable {
		t.Fatalf("off-over: %+v", r.Error)
	}
	expectResult(t, rs, "off-now", "offboard", job.Noop, "")
	if n := e.count(topology.StreamJobs); n != limit {
		t.Fatalf("%d messages in MFA_JOBS, want the %d schedules", n, limit)
	}
	dls, err := dlq.ListDeadLetters(context.Background(), e.js, dlq.DeadLetterFilter{Type: "offboard"})
	if err != nil || len(dls) != 1 || dls[0].JobID != "off-over" || dls[0].ErrorCode != job.CodeJobsStreamFull {
		t.Fatalf("dead letters %+v, %v", dls, err)
	}
	// The same message again is answered from the ledger: one result.
	e.publish("offboard", timedBody("off-over", "offboard", 900, nil, map[string]time.Time{"not_before": later}), "")
	testenv.Eventually(t, 5*time.Second, func() bool { return e.count(topology.StreamJobs) == limit && e.ackPending() == 0 }, func() string {
		return fmt.Sprintf("%d messages in MFA_JOBS, %d ack pending", e.count(topology.StreamJobs), e.ackPending())
	})
	if st := e.jobState("off-over"); st.State != ops.JobFinished {
		t.Fatalf("off-over %+v", st)
	}
	if n := e.count(topology.StreamResults); n != 2 {
		t.Fatalf("%d results, want 2 (one per job)", n)
	}
}
