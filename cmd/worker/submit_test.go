package main

import (
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/ops"
)

func TestProgressLines(t *testing.T) {
	due := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	next := due.Add(30 * time.Second)
	for _, tc := range []struct {
		s    ops.JobState
		want string
	}{
		{ops.JobState{JobID: "a", State: ops.JobScheduled, DueAt: &due}, "scheduled until 2026-12-05T09:00:00Z"},
		{ops.JobState{JobID: "a", State: ops.JobHeld}, "held by the guard: it runs when an operator releases it (worker hold release --job a)"},
		{ops.JobState{JobID: "a", State: ops.JobRunning}, "running"},
		{ops.JobState{JobID: "a", State: ops.JobRunning, Attempts: 2, LastErrorCode: "rate_limited", NextRetryAt: &next}, "retry 2 after rate_limited at 2026-12-05T09:00:30Z"},
		{ops.JobState{JobID: "a", State: ops.JobUnknown}, ""},
	} {
		if got := progressLine(&tc.s); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.s, got, tc.want)
		}
	}
}
