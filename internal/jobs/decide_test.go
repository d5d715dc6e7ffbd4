package jobs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

func TestDecide(t *testing.T) {
	p := policy{maxDeliver: 4, nakBase: time.Second, nakMax: 5 * time.Second}
	const first, last = 1, 4
	status := func(code int) error { return &onelogin.ErrorResponse{Endpoint: "x", StatusCode: code} }
	rateLimited := &onelogin.RateLimitError{Endpoint: "x"}
	network := fmt.Errorf("dial: %w", errors.New("connection refused"))
	ambiguous := &AmbiguousError{Op: "op", Err: context.DeadlineExceeded}
	earlier := &AmbiguousError{Op: "op", Earlier: true}
	permanent := &PermanentError{Code: job.CodeFactorUnavailable, Message: "m"}
	seal := &PermanentError{Code: job.CodeSealFailed, Message: "m"}
	later := &RetryLaterError{Err: errors.New("locked"), Delay: 3 * time.Second}
	laterNoDelay := &RetryLaterError{Err: status(503)}
	expired := &expiredError{notAfter: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	rejected := &job.Rejection{Code: job.CodeIDReused, Message: "m"}
	cancelled := &CancelledError{Code: job.CodeCancelled, Message: "m", CancelledBy: "c"}
	superseded := &CancelledError{Code: job.CodeSupersededByOffboard, Message: "m"}
	discarded := &CancelledError{Code: job.CodeDiscarded, Message: "m"}
	undecided := &RetryLaterError{Err: errors.New("blast-radius guard undecided: nats: timeout")}
	pending := &onelogin.VerifyError{Code: onelogin.CodeVerificationPending, StatusCode: 200}
	stateExpired := &onelogin.VerifyError{Code: onelogin.CodeStateTokenExpired, StatusCode: 400}
	credentials := fmt.Errorf("onelogin enroll: %w", &onelogin.TokenError{StatusCode: 401, Credentials: true})

	type want struct {
		outcome job.Outcome
		code    string
		action  action
		delay   time.Duration
	}
	nak := func(d time.Duration) want { return want{action: actNak, delay: d} }
	exhausted := want{job.Failed, job.CodeRetriesExhausted, actTerm, 0}
	cases := []struct {
		name     string
		done     job.Outcome
		err      error
		attempts int
		typ      job.Type
		want     want
	}{
		{"succeeded", job.Succeeded, nil, first, job.TypeEnroll, want{job.Succeeded, "", actAck, 0}},
		{"cancelled by a cancel", "", cancelled, first, job.TypeOffboard, want{job.Cancelled, job.CodeCancelled, actAck, 0}},
		{"superseded on the last delivery", "", superseded, last, job.TypeActivate, want{job.Cancelled, job.CodeSupersededByOffboard, actAck, 0}},
		{"held, then discarded by an operator", "", discarded, first, job.TypeOffboard, want{job.Cancelled, job.CodeDiscarded, actAck, 0}},
		{"guard undecided: given back", "", undecided, first, job.TypeRemove, nak(time.Second)},
		{"guard undecided on the last delivery: retries exhausted, never run unguarded", "", undecided, last, job.TypeOffboard, exhausted},
		{"noop on the last delivery", job.Noop, nil, last, job.TypeRemove, want{job.Noop, "", actAck, 0}},
		{"succeeded at most once", job.Succeeded, nil, last, job.TypeActivate, want{job.Succeeded, "", actAck, 0}},
		{"permanent first", "", permanent, first, job.TypeEnroll, want{job.Failed, job.CodeFactorUnavailable, actTerm, 0}},
		{"permanent last", "", permanent, last, job.TypeEnroll, want{job.Failed, job.CodeFactorUnavailable, actTerm, 0}},
		{"seal failed", "", seal, first, job.TypeGenerateToken, want{job.Failed, job.CodeSealFailed, actTerm, 0}},
		{"OneLogin 400", "", status(400), first, job.TypeEnroll, want{job.Failed, job.CodeOneLoginRejected, actTerm, 0}},
		{"OneLogin 401 to verify", "", status(401), first, job.TypeVerify, want{job.Failed, job.CodeVerificationFailed, actTerm, 0}},
		{"OneLogin 401 to remove", "", status(401), first, job.TypeRemove, want{job.Failed, job.CodeUnauthorized, actTerm, 0}},
		{"OneLogin 403 last", "", status(403), last, job.TypeOffboard, want{job.Failed, job.CodeUnauthorized, actTerm, 0}},
		{"OneLogin 503 first", "", status(503), first, job.TypeEnroll, nak(time.Second)},
		{"OneLogin 503 second", "", status(503), 2, job.TypeEnroll, nak(2 * time.Second)},
		{"OneLogin 503 third capped", "", status(503), 3, job.TypeEnroll, nak(4 * time.Second)},
		{"OneLogin 503 last", "", status(503), last, job.TypeEnroll, exhausted},
		{"network first, at most once", "", network, first, job.TypeVerify, nak(time.Second)},
		{"network last, at most once", "", network, last, job.TypeVerify, exhausted},
		{"rate limited first", "", rateLimited, first, job.TypeOffboard, nak(time.Second)},
		{"rate limited last", "", rateLimited, last, job.TypeOffboard, exhausted},
		{"ambiguous first, at most once", "", ambiguous, first, job.TypeActivate, want{job.Failed, job.CodeAmbiguousEffect, actTerm, 0}},
		{"ambiguous last, at most once", "", ambiguous, last, job.TypeVerify, want{job.Failed, job.CodeAmbiguousEffect, actTerm, 0}},
		{"generate_token's lost reply is retried", "", ambiguous, first, job.TypeGenerateToken, nak(time.Second)},
		{"verify pending first: a later delivery", "", pending, first, job.TypeVerify, nak(time.Second)},
		{"verify pending second", "", pending, 2, job.TypeVerify, nak(2 * time.Second)},
		{"verify pending last: failed, never active", "", pending, last, job.TypeVerify, want{job.Failed, job.CodeVerificationPending, actTerm, 0}},
		{"state token expired", "", stateExpired, first, job.TypeVerify, want{job.Failed, job.CodeStateTokenExpired, actTerm, 0}},
		{"credentials refused first", "", credentials, first, job.TypeOffboard, nak(time.Second)},
		{"credentials refused beyond the last: never failed", "", credentials, last + 1, job.TypeEnroll, nak(time.Second)},
		{"earlier delivery, at most once", "", earlier, 2, job.TypeVerify, want{job.Failed, job.CodeAmbiguousEffect, actTerm, 0}},
		{"ambiguous first, read back", "", ambiguous, first, job.TypeEnroll, nak(time.Second)},
		{"ambiguous last, read back", "", ambiguous, last, job.TypeRemove, exhausted},
		{"retry later with delay first", "", later, first, job.TypeEnroll, nak(3 * time.Second)},
		{"retry later with delay last", "", later, last, job.TypeEnroll, exhausted},
		{"retry later no delay, at most once", "", laterNoDelay, 2, job.TypeActivate, nak(2 * time.Second)},
		{"retry later beyond the last", "", laterNoDelay, last + 3, job.TypeActivate, exhausted},
		{"expired first", "", expired, first, job.TypeOffboard, want{job.Expired, job.CodeExpired, actTerm, 0}},
		{"expired last", "", expired, last, job.TypeActivate, want{job.Expired, job.CodeExpired, actTerm, 0}},
		{"rejected", "", rejected, first, job.TypeEnroll, want{job.Rejected, job.CodeIDReused, actTerm, 0}},
		{"rejected last", "", rejected, last, job.TypeVerify, want{job.Rejected, job.CodeIDReused, actTerm, 0}},
	}
	if len(cases) < 25 {
		t.Fatalf("%d cases", len(cases))
	}
	for _, c := range cases {
		v := p.decide(c.done, c.err, c.attempts, c.typ)
		got := want{v.outcome, v.code(), v.action, v.delay}
		if got != c.want {
			t.Errorf("%s: got %+v (%s), want %+v", c.name, got, v.action, c.want)
		}
		if v.action == actNak && v.info != nil {
			t.Errorf("%s: a nak with an error object", c.name)
		}
		if v.action != actNak && v.outcome == "" {
			t.Errorf("%s: settled with no outcome", c.name)
		}
		if v.info != nil && !job.KnownCode(v.info.Code) {
			t.Errorf("%s: code %s not in job.Codes", c.name, v.info.Code)
		}
		if v.code() == job.CodeRetriesExhausted && !v.info.Retryable {
			t.Errorf("%s: retries_exhausted not retryable", c.name)
		}
	}
}

// Every fate that is not decide's: messages whose job never started, a
// parked job, a reused id, a finished job answered from the ledger, and the
// settlement's own failures.
func TestFates(t *testing.T) {
	p := policy{maxDeliver: 4, nakBase: time.Second, nakMax: 5 * time.Second, stopDelay: 300 * time.Millisecond, unstored: 700 * time.Millisecond}
	failed := verdict{outcome: job.Failed, action: actTerm, info: &job.ErrorInfo{Code: job.CodeFactorUnavailable}}
	done := verdict{outcome: job.Succeeded, action: actAck}
	type want struct {
		outcome  job.Outcome
		code     string
		action   action
		delay    time.Duration
		noResult bool
	}
	nak := func(d time.Duration) want { return want{action: actNak, delay: d} }
	cases := []struct {
		name string
		got  verdict
		want want
	}{
		{"stopping: given back quickly", p.notStarted(stopping, 0), nak(300 * time.Millisecond)},
		{"credentials refused: given back after the base delay", p.notStarted(gated, 0), nak(time.Second)},
		{"busy user, few held: the base delay", p.notStarted(busy, 1), nak(time.Second)},
		{"busy user: grows with the backlog", p.notStarted(busy, 3), nak(3 * time.Second)},
		{"busy user: capped", p.notStarted(busy, 40), nak(5 * time.Second)},
		{"parked: acked without a result", p.parked(), want{action: actAck, noResult: true}},
		{"held by the blast-radius guard: acked without a result", p.held(), want{action: actAck, noResult: true}},
		{"reused: dead-lettered without a result", p.reused(), want{job.Rejected, job.CodeIDReused, actTerm, 0, true}},
		{"finished, same message: as the first time", p.finished(job.Succeeded, nil, true, false), want{outcome: job.Succeeded, action: actAck}},
		{"failed, same message: terminated again", p.finished(job.Failed, nil, true, false), want{outcome: job.Failed, action: actTerm}},
		{"expired, same message: terminated again", p.finished(job.Expired, nil, true, false), want{outcome: job.Expired, action: actTerm}},
		{"failed, another message: a duplicate, acked", p.finished(job.Failed, nil, false, false), want{outcome: job.Succeeded, action: actAck}},
		{"noop, another message: a duplicate, acked", p.finished(job.Noop, nil, false, false), want{outcome: job.Succeeded, action: actAck}},
		{"a schedule fired for a job that ended: acked, no result", p.finished(job.Cancelled, nil, false, true), want{outcome: job.Cancelled, action: actAck, noResult: true}},
		{"a fired schedule's own redelivery: as the first time", p.finished(job.Succeeded, nil, true, true), want{outcome: job.Succeeded, action: actAck}},
		{"result unrecorded: redelivered", p.unrecorded(done, 1), nak(700 * time.Millisecond)},
		{"result unrecorded on the last delivery: still redelivered", p.unrecorded(done, 4), nak(700 * time.Millisecond)},
		{"result unrecorded past the last delivery: settled", p.unrecorded(failed, 5), want{job.Failed, job.CodeFactorUnavailable, actTerm, 0, false}},
		{"rejection unrecorded: redelivered", p.rejectionUnrecorded(failed, 2), nak(2 * time.Second)},
		{"rejection unrecorded on the last delivery: settled", p.rejectionUnrecorded(failed, 4), want{job.Failed, job.CodeFactorUnavailable, actTerm, 0, false}},
		{"DLQ copy failed: redelivered", p.deadLetterFailed(failed, 3), nak(time.Second)},
		{"DLQ copy failed on the last delivery: settled without it", p.deadLetterFailed(failed, 4), want{job.Failed, job.CodeFactorUnavailable, actTerm, 0, false}},
		{"result publish failed: redelivered", p.publishFailed(), nak(time.Second)},
		{"taken over: left to the ack wait", p.takenOver(), want{action: actLeave}},
	}
	for _, c := range cases {
		v := c.got
		got := want{v.outcome, v.code(), v.action, v.delay, v.noResult}
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
		if v.action == actNak && (v.info != nil || v.outcome != "") {
			t.Errorf("%s: a nak with an outcome", c.name)
		}
	}
}

func TestNakDelay(t *testing.T) {
	p := policy{maxDeliver: 8, nakBase: time.Second, nakMax: 10 * time.Second}
	for delivery, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 100: 10 * time.Second} {
		if got := p.nakDelay(delivery); got != want {
			t.Errorf("delivery %d: %v, want %v", delivery, got, want)
		}
	}
}

// The worst case that doc.go states for the defaults.
func TestWorstCasePerDelivery(t *testing.T) {
	cfg := DefaultConfig()
	b := newBudgets(&cfg)
	if got := b.worstCase(0); got != 155*time.Second {
		t.Errorf("worst case without OneLogin calls: %v, doc.go says 155s", got)
	}
	if b.heartbeat != 10*time.Second || b.lockWait != time.Minute {
		t.Errorf("budgets: %+v", b)
	}
}

// DueAt rounds not_before up to the second: never early, less than a
// second late.
func TestDueAt(t *testing.T) {
	base := time.Date(2026, 11, 28, 16, 0, 0, 0, time.UTC)
	for _, c := range []struct{ nb, want time.Time }{
		{base, base},
		{base.Add(time.Nanosecond), base.Add(time.Second)},
		{base.Add(999 * time.Millisecond), base.Add(time.Second)},
		{base.In(time.FixedZone("CET", 3600)).Add(500 * time.Millisecond), base.Add(time.Second)},
	} {
		if got := DueAt(c.nb); !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("DueAt(%v) = %v, want %v", c.nb, got, c.want)
		}
	}
}
