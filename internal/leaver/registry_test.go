package leaver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/testenv/leak"
)

func TestMain(m *testing.M) { leak.VerifyTestMain(m) }

type env struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	svc *leaver.Service
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	_, nc, js := testenv.JetStream(tb)
	ctx := context.Background()
	for _, s := range []jetstream.StreamConfig{
		{Name: "MFA_RESULTS", Subjects: []string{"mfa.results.>"}, Duplicates: 10 * time.Minute},
		{Name: "MFA_DLQ", Subjects: []string{"mfa.dlq.>"}},
	} {
		if _, err := js.CreateOrUpdateStream(ctx, s); err != nil {
			tb.Fatal(err)
		}
	}
	return &env{nc: nc, js: js}
}

// start runs the registry until the test ends; before each runs first.
func (e *env) start(tb testing.TB, before ...func(*leaver.Service)) *leaver.Service {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := leaver.Start(ctx, e.js, 1, nil, testenv.Quiet())
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range before {
		f(svc)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("registry: %v", err)
		}
	})
	e.svc = svc
	return svc
}

func (e *env) result(tb testing.TB, body, msgID string, outcome string) {
	tb.Helper()
	m := nats.NewMsg("mfa.results.offboard." + outcome)
	m.Data = []byte(body)
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		tb.Fatal(err)
	}
}

func (e *env) waitState(tb testing.TB, key string, st leaver.State, reason string) leaver.Record {
	tb.Helper()
	var r leaver.Record
	testenv.Eventually(tb, 10*time.Second, func() bool {
		var err error
		r, _, err = e.svc.Store.Get(context.Background(), key)
		return err == nil && r.State == st && r.Reason == reason
	}, func() string { return fmt.Sprintf("%s is %s/%s, want %s/%s", key, r.State, r.Reason, st, reason) })
	return r
}

const t0 = "2026-12-01T09:00:00Z"

func offboardResult(job string, user int64, sel, outcome, code string) string {
	u := ""
	if sel != "" {
		u = fmt.Sprintf(`,"user":{"email":%q}`, sel)
	}
	e := ""
	if code != "" {
		e = fmt.Sprintf(`,"error":{"code":%q,"message":"m","retryable":false}`, code)
	}
	return fmt.Sprintf(`{"job_id":%q,"type":"offboard","user_id":%d%s,"outcome":%q,"attempts":1,"started_at":%q,"finished_at":%q,"duration_ms":1%s,"data":{"removed_device_ids":[1,2]}}`,
		job, user, u, outcome, t0, t0, e)
}

// TestSelectorRecordMergesIntoTheUser: a person known first by email
// (the door, a user_not_found) becomes one user.<id> record when an
// offboard resolves them; the sel.* record is gone and its event kept.
func TestSelectorRecordMergesIntoTheUser(t *testing.T) {
	e := newEnv(t)
	svc := e.start(t)
	ctx := context.Background()
	sel := &leaver.Selector{Email: "ada@example.com"}
	skey, _ := leaver.SelectorKey(*sel)
	if err := svc.Store.Accepted(ctx, leaver.Acceptance{JobID: "hr:scim:e1:offboard", User: sel, HRSource: "scim", EventID: "e1", ReceivedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	e.result(t, offboardResult("hr:scim:e1:offboard", 0, "ada@example.com", "failed", "user_not_found"), "hr:scim:e1:offboard:result", "failed")
	e.waitState(t, skey, leaver.Open, leaver.ReasonUserNotFound)
	e.result(t, offboardResult("fix-1", 42, "ADA@example.com", "succeeded", ""), "fix-1:result", "succeeded")
	r := e.waitState(t, leaver.UserKey(42), leaver.Offboarded, "")
	if r.EventID != "e1" || r.Source != "scim" || r.FactorsRemoved != 2 {
		t.Fatalf("merged record %+v", r)
	}
	if p, _, err := svc.Store.Get(ctx, skey); err != nil || p.MovedTo != leaver.UserKey(42) || p.State != "" {
		t.Fatalf("the sel.* record is not a pointer to the user's: %+v, %v", p, err)
	}
	// A late step that knows only the email (the door's, after the
	// result) lands in the user's record and, its job being finished,
	// changes nothing; a new leaving by email alone is followed there.
	if err := svc.Store.Running(ctx, leaver.Acceptance{JobID: "hr:scim:e1:offboard", User: sel}); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, leaver.UserKey(42), leaver.Offboarded, "")
	if err := svc.Store.Accepted(ctx, leaver.Acceptance{JobID: "hr:scim:e9:offboard", User: &leaver.Selector{Email: "Ada@Example.com"}, HRSource: "scim", EventID: "e9"}); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, leaver.UserKey(42), leaver.Scheduled, "")
	// The view drops it too.
	testenv.Eventually(t, 5*time.Second, func() bool { return svc.View.Len() == 1 }, func() string { return fmt.Sprint(svc.View.Len(), " records in the view") })
}

// TestRedeliveryChangesNothing: a result delivered again after a later
// one (a replica died before its ack) does not reopen the record, and
// two stores updating one record at once both land.
func TestRedeliveryChangesNothing(t *testing.T) {
	e := newEnv(t)
	svc := e.start(t)
	e.result(t, offboardResult("a", 7, "", "failed", "retries_exhausted"), "a:result", "failed")
	e.waitState(t, leaver.UserKey(7), leaver.Open, leaver.ReasonFailed)
	e.result(t, offboardResult("b", 7, "", "succeeded", ""), "b:result", "succeeded")
	r := e.waitState(t, leaver.UserKey(7), leaver.Offboarded, "")
	// Apply the first result again, with its stream sequence, as a
	// redelivery does.
	res, _ := leaver.ParseResult([]byte(offboardResult("a", 7, "", "failed", "retries_exhausted")), 1)
	got, applied, err := svc.Store.ApplyResult(context.Background(), res)
	if err != nil || applied || got.State != leaver.Offboarded || got.ResultSeq != r.ResultSeq {
		t.Fatalf("redelivery: applied %v, %+v, %v", applied, got, err)
	}
	// Concurrent steps from many goroutines (replicas) all land.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := svc.Store.Held(context.Background(), leaver.Acceptance{JobID: fmt.Sprintf("h%d", i), UserID: 8}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	r8, _, err := svc.Store.Get(context.Background(), leaver.UserKey(8))
	if err != nil || len(r8.Holds) != 16 || r8.State != leaver.Held {
		t.Fatalf("after 20 concurrent holds: %d holds kept (cap 16), state %s, %v", len(r8.Holds), r8.State, err)
	}
}

// TestQueryLeavers answers over NATS micro, with filters and errors.
func TestQueryLeavers(t *testing.T) {
	e := newEnv(t)
	svc := e.start(t)
	e.result(t, offboardResult("a", 1, "", "failed", "user_not_found"), "a:result", "failed")
	e.result(t, offboardResult("b", 2, "", "succeeded", ""), "b:result", "succeeded")
	e.result(t, offboardResult("c", 3, "", "cancelled", "cancelled"), "c:result", "cancelled")
	e.waitState(t, leaver.UserKey(3), leaver.Open, leaver.ReasonCancelled)
	srv, err := micro.AddService(e.nc, micro.Config{Name: "mfa", Version: "1.2.0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if err := srv.AddGroup("mfa.query").AddEndpoint("leavers", leaver.NewHandler(svc.View)); err != nil {
		t.Fatal(err)
	}
	ask := func(body string) (leaver.QueryReply, *nats.Msg) {
		t.Helper()
		m, err := e.nc.Request("mfa.query.leavers", []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rep leaver.QueryReply
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			t.Fatal(err)
		}
		return rep, m
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		rep, _ := ask(`{"state":"open"}`)
		return rep.Data != nil && rep.Data.Total == 2
	}, func() string { return "the view does not show two open records" })
	rep, _ := ask(`{"state":"open","limit":1}`)
	if len(rep.Data.Leavers) != 1 || rep.Data.Total != 2 || rep.Data.Counts[leaver.Offboarded] != 1 || rep.Data.Counts[leaver.Held] != 0 {
		t.Fatalf("reply %+v", rep.Data)
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if rep, _ := ask(`{"since":"` + future + `"}`); rep.Data == nil || rep.Data.Total != 0 {
		t.Fatalf("since the future: %+v", rep)
	}
	for body, code := range map[string]string{
		`{"state":"gone"}`: "invalid_value", `{"since":"yesterday"}`: "invalid_format", `{"limit":5000}`: "out_of_range", `{"who":1}`: "invalid_request", `[`: "invalid_request",
	} {
		rep, m := ask(body)
		if rep.Error == nil || rep.Error.Code != code || m.Header.Get(micro.ErrorHeader) != code || m.Header.Get(micro.ErrorCodeHeader) != "400" {
			t.Errorf("%s: %+v", body, rep)
		}
	}
}

// TestExportCSVIsSafe: values from HR are not formulas in a spreadsheet.
func TestExportCSVIsSafe(t *testing.T) {
	e := newEnv(t)
	svc := e.start(t)
	ctx := context.Background()
	if err := svc.Store.Accepted(ctx, leaver.Acceptance{JobID: "j", UserID: 9, HRSource: "=cmd|' /C calc'!A0", EventID: "@x", EffectiveAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	n, err := leaver.Export(ctx, e.js, &b, leaver.EvidenceOptions{Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Hour), Target: time.Hour, Format: "csv"})
	if err != nil || n != 1 {
		t.Fatalf("%d rows, %v", n, err)
	}
	if !strings.Contains(b.String(), `'=cmd`) || !strings.Contains(b.String(), `'@x`) {
		t.Fatalf("csv:\n%s", b.String())
	}
}

// TestSeveralIdentifiers: a person named by email in one job and by email
// and external id in the next is one leaver; their offboard closes both.
func TestSeveralIdentifiers(t *testing.T) {
	e := newEnv(t)
	svc := e.start(t)
	ctx := context.Background()
	byEmail := &leaver.Selector{Email: "grace@example.com"}
	both := &leaver.Selector{Email: "grace@example.com", ExternalID: "E-77"}
	ekey, _ := leaver.SelectorKey(*byEmail)
	e.result(t, offboardResult("first", 0, "grace@example.com", "failed", "user_not_found"), "first:result", "failed")
	e.waitState(t, ekey, leaver.Open, leaver.ReasonUserNotFound)
	// The next step names both: it lands in the email's record.
	if err := svc.Store.Accepted(ctx, leaver.Acceptance{JobID: "second", User: both}); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, ekey, leaver.Scheduled, "")
	// A result without any readable person is a job.* record, not an error.
	e.result(t, `{"job_id":"weird","type":"offboard","user_id":0,"user":{},"outcome":"rejected","attempts":1,"started_at":"2026-12-01T09:00:00Z","finished_at":"2026-12-01T09:00:00Z","duration_ms":0,"error":{"code":"invalid_user_id","message":"m","retryable":false}}`, "weird:result", "rejected")
	e.waitState(t, leaver.JobKey("weird"), leaver.Open, leaver.ReasonRejected)
	body := `{"job_id":"second","type":"offboard","user_id":77,"user":{"email":"grace@example.com","external_id":"E-77"},"outcome":"succeeded","attempts":1,"started_at":"2026-12-01T09:00:00Z","finished_at":"2026-12-01T09:00:01Z","duration_ms":1,"data":{"removed_device_ids":[5]}}`
	e.result(t, body, "second:result", "succeeded")
	r := e.waitState(t, leaver.UserKey(77), leaver.Offboarded, "")
	if len(r.Transitions) < 3 {
		t.Errorf("the email's history was not merged: %+v", r.Transitions)
	}
	var open int
	if err := leaver.Scan(ctx, e.js, func(r leaver.Record) error {
		if r.State == leaver.Open && r.Key != leaver.JobKey("weird") {
			open++
		}
		return nil
	}); err != nil || open != 0 {
		t.Fatalf("%d records still open, %v", open, err)
	}
}

// TestNoteJob: the hooks' one-line form reads a job body.
func TestNoteJob(t *testing.T) {
	e := newEnv(t)
	svc := e.start(t)
	ctx := context.Background()
	ev := leaver.HREvent{Source: "hibob", ID: "ev-9", ReceivedAt: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	body := `{"id":"hr:hibob:ev-9:offboard","type":"offboard","user":{"external_id":"E9"},"source":"hr.hibob","requested_at":"2026-11-30T17:00:00Z","not_before":"2026-12-01T00:00:00+01:00"}`
	if err := svc.Store.NoteJob(ctx, leaver.Scheduled, []byte(body), ev); err != nil {
		t.Fatal(err)
	}
	key, _ := leaver.SelectorKey(leaver.Selector{ExternalID: "E9"})
	r := e.waitState(t, key, leaver.Scheduled, "")
	if r.EventID != "ev-9" || r.Source != "hibob" || !r.EffectiveAt.Equal(time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)) || !r.ReceivedAt.Equal(ev.ReceivedAt) {
		t.Fatalf("record %+v", r)
	}
	if err := svc.Store.NoteJob(ctx, leaver.Held, []byte(body), leaver.HREvent{}); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, key, leaver.Held, "")
	// A requested_at of 2099 is bounded as the job's time is: 5 minutes
	// after the event was received.
	far := `{"id":"hr:hibob:ev-10:offboard","type":"offboard","user":{"external_id":"E10"},"source":"hr.hibob","requested_at":"2099-01-01T00:00:00Z"}`
	ev10 := leaver.HREvent{Source: "hibob", ID: "ev-10", ReceivedAt: ev.ReceivedAt}
	if err := svc.Store.NoteJob(ctx, leaver.Scheduled, []byte(far), ev10); err != nil {
		t.Fatal(err)
	}
	key10, _ := leaver.SelectorKey(leaver.Selector{ExternalID: "E10"})
	if r := e.waitState(t, key10, leaver.Scheduled, ""); !r.EffectiveAt.Equal(ev.ReceivedAt.Add(5 * time.Minute)) {
		t.Fatalf("effective time of an offboard dated 2099: %v", r.EffectiveAt)
	}
	// Other types and unreadable bodies are ignored.
	for _, b := range []string{`{"id":"x","type":"enroll","user_id":3}`, `nope`, `{"id":"y","type":"offboard"}`} {
		if err := svc.Store.NoteJob(ctx, leaver.Running, []byte(b), leaver.HREvent{}); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
	if err := svc.Store.NoteJob(ctx, leaver.Verified, []byte(body), leaver.HREvent{}); err == nil {
		t.Error("verified is not a step")
	}
	if svc.View.Len() > 2 {
		t.Errorf("ignored bodies made records: %d", svc.View.Len())
	}
}

// TestRunningNoteOfADirectJob: an offboard published straight to the job
// subjects is first written without a read (the registry has most likely
// not heard of it); when the record exists after all (held first), the
// note reads it and keeps what it held.
func TestRunningNoteOfADirectJob(t *testing.T) {
	e := newEnv(t)
	svc := e.start(t)
	ctx := context.Background()
	fresh := `{"id":"off-71","type":"offboard","user_id":71,"source":"offboarding-service","requested_at":"2026-12-01T09:00:00Z"}`
	if err := svc.Store.NoteJob(ctx, leaver.Running, []byte(fresh), leaver.HREvent{}); err != nil {
		t.Fatal(err)
	}
	if r := e.waitState(t, leaver.UserKey(71), leaver.Running, ""); r.JobID != "off-71" || r.UserID != 71 {
		t.Fatalf("record of a new direct offboard %+v", r)
	}
	// The job path's form, from the parsed job, makes the same record.
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	if err := svc.Store.NoteParsed(ctx, leaver.Running, &job.Job{ID: "off-73", Type: job.TypeOffboard, UserID: 73, Source: "offboarding-service", RequestedAt: at}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	r71, _, _ := svc.Store.Get(ctx, leaver.UserKey(71))
	r73 := e.waitState(t, leaver.UserKey(73), leaver.Running, "")
	if r73.JobID != "off-73" || r73.UserID != 73 || !r73.EffectiveAt.Equal(r71.EffectiveAt) || r73.Source != r71.Source {
		t.Fatalf("record from the parsed job %+v, from the body %+v", r73, r71)
	}
	if err := svc.Store.NoteParsed(ctx, leaver.Running, &job.Job{ID: "enr-74", Type: job.TypeEnroll, UserID: 74}, at); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Store.Get(ctx, leaver.UserKey(74)); !errors.Is(err, leaver.ErrNotFound) {
		t.Fatalf("an enroll noted as running made a record: %v", err)
	}
	held := `{"id":"off-72","type":"offboard","user_id":72,"source":"offboarding-service","requested_at":"2026-12-01T09:00:00Z"}`
	if err := svc.Store.NoteJob(ctx, leaver.Held, []byte(held), leaver.HREvent{}); err != nil {
		t.Fatal(err)
	}
	first := e.waitState(t, leaver.UserKey(72), leaver.Held, "")
	if err := svc.Store.NoteJob(ctx, leaver.Running, []byte(held), leaver.HREvent{}); err != nil {
		t.Fatal(err)
	}
	r := e.waitState(t, leaver.UserKey(72), leaver.Running, "")
	if !r.CreatedAt.Equal(first.CreatedAt) || r.JobID != "off-72" {
		t.Fatalf("a held record noted running lost what it held: %+v, first %+v", r, first)
	}
}

// jobTimes is MFA_PEOPLE for the indexer: the job time of each user's
// latest offboard, counting the reads.
type jobTimes struct {
	mu    sync.Mutex
	times map[int64]time.Time
	reads map[int64]int
}

func (j *jobTimes) Offboarded(_ context.Context, userID int64) (time.Time, string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.reads[userID]++
	return j.times[userID], fmt.Sprintf("off-%d", userID), nil
}

func (j *jobTimes) readsOf(userID int64) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.reads[userID]
}

// TestJobTimeFromTheRunningNote: the job path's running note gives the
// record the job's time, so the indexer reads MFA_PEOPLE for the result
// only when the record does not hold the time of that job.
func TestJobTimeFromTheRunningNote(t *testing.T) {
	e := newEnv(t)
	noted, unnoted := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	times := &jobTimes{times: map[int64]time.Time{81: noted, 82: unnoted}, reads: map[int64]int{}}
	svc := e.start(t, func(s *leaver.Service) { s.SetJobTimes(times) })
	ctx := context.Background()
	if err := svc.Store.NoteParsed(ctx, leaver.Running, &job.Job{ID: "off-81", Type: job.TypeOffboard, UserID: 81}, noted); err != nil {
		t.Fatal(err)
	}
	if r := e.waitState(t, leaver.UserKey(81), leaver.Running, ""); !r.EffectiveAt.Equal(noted) {
		t.Fatalf("running note without requested_at: effective %v, want the job time %v", r.EffectiveAt, noted)
	}
	e.result(t, offboardResult("off-81", 81, "", "noop", ""), "off-81:result", "noop")
	e.result(t, offboardResult("off-82", 82, "", "noop", ""), "off-82:result", "noop")
	r81 := e.waitState(t, leaver.UserKey(81), leaver.Offboarded, "")
	r82 := e.waitState(t, leaver.UserKey(82), leaver.Offboarded, "")
	if !r81.EffectiveAt.Equal(noted) || !r82.EffectiveAt.Equal(unnoted) {
		t.Fatalf("effective times %v and %v, want %v and %v", r81.EffectiveAt, r82.EffectiveAt, noted, unnoted)
	}
	if n := times.readsOf(81); n != 0 {
		t.Errorf("MFA_PEOPLE read %d times for a job whose time the record held", n)
	}
	if n := times.readsOf(82); n != 1 {
		t.Errorf("MFA_PEOPLE read %d times for a job the registry had not heard of, want 1", n)
	}
}
