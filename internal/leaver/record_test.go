package leaver

import (
	"testing"
	"time"
)

func TestKeys(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{UserKey(12345), true},
		{"user.0", false},
		{"user.-3", false},
		{"user.12.3", false},
		{"event." + hash("a", "b"), true},
		{"job." + hash("j"), true},
		{"sel.email." + hash("x"), true},
		{"sel.phone." + hash("x"), false},
		{"event.abc", false},
		{aliasKey("a", "b"), false},
		{"user.>", false},
		{"", false},
	} {
		if got := ValidKey(tc.key); got != tc.want {
			t.Errorf("ValidKey(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
	a, _ := SelectorKey(Selector{Email: " Ada@Example.com"})
	b, _ := SelectorKey(Selector{Email: "ada@example.com"})
	if a != b {
		t.Errorf("an email's key must ignore case and spaces: %s vs %s", a, b)
	}
	c, _ := SelectorKey(Selector{Email: "ada@example.com", ExternalID: "E1"})
	if d, _ := SelectorKey(Selector{ExternalID: "E1"}); c != d {
		t.Errorf("external_id is the primary identifier: %s vs %s", c, d)
	}
	if _, ok := SelectorKey(Selector{}); ok {
		t.Error("an empty selector has a key")
	}
}

func TestTransitions(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	acc := Acceptance{JobID: "j1", User: &Selector{ExternalID: "E1"}, HRSource: "hibob", EventID: "ev1", EffectiveAt: t0}
	ok := func(outcome string) Result {
		return Result{JobID: "j1", UserID: 7, Outcome: outcome, FinishedAt: t0.Add(time.Minute), Removed: 2}
	}
	type step func(r *Record, now time.Time) bool
	accepted := func(a Acceptance) step {
		return func(r *Record, n time.Time) bool { return applyStep(r, a, Scheduled, n) }
	}
	held := func(a Acceptance) step { return func(r *Record, n time.Time) bool { return applyStep(r, a, Held, n) } }
	running := func(a Acceptance) step {
		return func(r *Record, n time.Time) bool { return applyStep(r, a, Running, n) }
	}
	result := func(res Result) step { return func(r *Record, n time.Time) bool { return applyResult(r, res, n) } }
	withSeq := func(res Result, seq uint64) Result { res.Seq = seq; return res }
	failed := func(code string) Result {
		res := ok("failed")
		res.ErrorCode = code
		res.Removed = 0
		return res
	}
	verified := ok("succeeded")
	verified.VerifiedAt = t0.Add(time.Minute)
	cancelled := Result{JobID: "j1", Outcome: "cancelled", ErrorCode: "cancelled", CancelledBy: "c1", CancelScope: "hr.hibob", FinishedAt: t0}
	discarded := Result{JobID: "j1", Outcome: "cancelled", ErrorCode: "discarded", FinishedAt: t0}
	j2 := acc
	j2.JobID = "j2"

	for _, tc := range []struct {
		name   string
		steps  []step
		state  State
		reason string
		check  func(t *testing.T, r Record)
	}{
		{"accepted is scheduled", []step{accepted(acc)}, Scheduled, "", nil},
		{"runs and is offboarded", []step{accepted(acc), running(acc), result(withSeq(ok("succeeded"), 1))}, Offboarded, "", func(t *testing.T, r Record) {
			if r.FactorsRemoved != 2 || r.OffboardedAt.IsZero() || r.UserID != 7 {
				t.Errorf("record %+v", r)
			}
		}},
		{"verified", []step{accepted(acc), result(withSeq(verified, 1))}, Verified, "", nil},
		{"noop counts as done", []step{result(withSeq(ok("noop"), 1))}, Offboarded, "", nil},
		{"user not found is open", []step{accepted(acc), result(withSeq(failed("user_not_found"), 1))}, Open, ReasonUserNotFound, nil},
		{"factors remain is open", []step{result(withSeq(failed("factors_remain"), 1))}, Open, ReasonFactorsRemain, nil},
		{"other failures are failed", []step{result(withSeq(failed("retries_exhausted"), 1))}, Open, ReasonFailed, func(t *testing.T, r Record) {
			if r.ErrorCode != "retries_exhausted" {
				t.Errorf("error code %q", r.ErrorCode)
			}
		}},
		{"cancelled with scope", []step{accepted(acc), result(withSeq(cancelled, 1))}, Open, ReasonCancelled, func(t *testing.T, r Record) {
			if len(r.Cancellations) != 1 || r.Cancellations[0].Scope != "hr.hibob" || r.Cancellations[0].By != "c1" {
				t.Errorf("cancellations %+v", r.Cancellations)
			}
		}},
		{"held then discarded", []step{accepted(acc), held(acc), result(withSeq(discarded, 1))}, Open, ReasonDiscarded, func(t *testing.T, r Record) {
			if len(r.Holds) != 1 || r.Holds[0].Ended != "discarded" {
				t.Errorf("holds %+v", r.Holds)
			}
		}},
		{"held then released runs", []step{held(acc), running(acc)}, Running, "", func(t *testing.T, r Record) {
			if len(r.Holds) != 1 || r.Holds[0].Ended != "ran" {
				t.Errorf("holds %+v", r.Holds)
			}
		}},
		{"a later success closes an open record", []step{result(withSeq(failed("user_not_found"), 1)), accepted(j2),
			result(Result{Seq: 2, JobID: "j2", UserID: 7, Outcome: "succeeded", FinishedAt: t0.Add(time.Hour)})}, Offboarded, "", nil},
		{"a redelivered older result changes nothing", []step{result(withSeq(ok("succeeded"), 5)), result(withSeq(failed("user_not_found"), 3))}, Offboarded, "", nil},
		{"a late running of a finished job changes nothing", []step{result(withSeq(ok("succeeded"), 1)), running(acc)}, Offboarded, "", nil},
		{"a late scheduled after running changes nothing", []step{running(acc), accepted(acc)}, Running, "", nil},
		{"another job failing after the person is offboarded keeps offboarded", []step{result(withSeq(ok("succeeded"), 1)),
			result(Result{Seq: 2, JobID: "j2", Outcome: "cancelled", ErrorCode: "cancelled", FinishedAt: t0})}, Offboarded, "", func(t *testing.T, r Record) {
			if len(r.Cancellations) != 1 {
				t.Errorf("the cancellation is not kept: %+v", r.Cancellations)
			}
		}},
		{"dead letter opens rule_error", []step{accepted(acc), func(r *Record, n time.Time) bool {
			return applyDeadLetter(r, DeadLetter{Seq: 1, Source: "hibob", EventID: "ev1", Code: "rule_error"}, n)
		}}, Open, ReasonRuleError, nil},
		{"drift reopens", []step{result(withSeq(verified, 1)), func(r *Record, n time.Time) bool { applyDrift(r, []string{"OneLogin SMS"}, n); return true }}, Open, ReasonDrift, func(t *testing.T, r Record) {
			if r.Drifts != 1 || r.DriftTypes[0] != "OneLogin SMS" {
				t.Errorf("drift %+v", r)
			}
		}},
		{"close", []step{result(withSeq(failed("user_not_found"), 1)), func(r *Record, n time.Time) bool { applyClose(r, "ops", "left before start", n); return true }}, Closed, "", func(t *testing.T, r Record) {
			if r.Closure == nil || r.Closure.WasReason != ReasonUserNotFound || r.Closure.Reason != "left before start" {
				t.Errorf("closure %+v", r.Closure)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Record
			now := t0
			for _, s := range tc.steps {
				now = now.Add(time.Second)
				s(&r, now)
			}
			if r.State != tc.state || r.Reason != tc.reason {
				t.Fatalf("state %s/%q, want %s/%q (transitions %+v)", r.State, r.Reason, tc.state, tc.reason, r.Transitions)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestParseResult(t *testing.T) {
	body := `{"job_id":"j","type":"offboard","user_id":5,"user":{"email":"a@example.com"},"outcome":"succeeded","attempts":1,
	"started_at":"2026-12-01T10:00:00Z","finished_at":"2026-12-01T10:00:01Z","duration_ms":1000,"source":"hr.hibob",
	"data":{"removed_device_ids":[1,2,3],"verified_at":"2026-12-01T10:00:01Z","removed_factors":[{"device_id":1,"auth_factor_name":"OneLogin SMS"}]}}`
	res, err := ParseResult([]byte(body), 9)
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 3 || res.VerifiedAt.IsZero() || res.UserID != 5 || res.User.Email != "a@example.com" || res.Seq != 9 || len(res.RemovedTypes) != 1 {
		t.Fatalf("parsed %+v", res)
	}
	for _, bad := range []string{`nope`, `{}`, `{"job_id":"j","type":"enroll","outcome":"succeeded"}`} {
		if _, err := ParseResult([]byte(bad), 1); err == nil {
			t.Errorf("%s: parsed", bad)
		}
	}
}

func TestRowWithinTarget(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r := Record{Key: "user.1", State: Verified, EffectiveAt: t0, OffboardedAt: t0.Add(90 * time.Minute)}
	if row := RowOf(r, time.Hour); row.WithinTarget != "no" || *row.LagSeconds != 5400 {
		t.Errorf("1h target: %+v", row)
	}
	if row := RowOf(r, 2*time.Hour); row.WithinTarget != "yes" {
		t.Errorf("2h target: %+v", row)
	}
	r.OffboardedAt = time.Time{}
	if row := RowOf(r, 2*time.Hour); row.WithinTarget != "open" || row.LagSeconds != nil {
		t.Errorf("not removed: %+v", row)
	}
}
