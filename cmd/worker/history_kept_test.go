package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/history"
)

// TestHistoryCommandAfterARejectedBurst: 1,000 rejected jobs after a
// person's offboard; `worker history` still shows the offboard, in every
// format, below the newest rejected jobs.
func TestHistoryCommandAfterARejectedBurst(t *testing.T) {
	t0 := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	entries := []history.Entry{{JobID: "hr-leaver-offboard", Type: "offboard", UserID: 61, Outcome: "succeeded", StartedAt: t0, FinishedAt: t0.Add(2 * time.Second), DurationMS: 2000, Attempts: 1, Source: "hr.hibob"}}
	for i := 1; i <= 1000; i++ {
		at := t0.Add(time.Hour + time.Duration(i)*time.Millisecond)
		entries = append(entries, history.Entry{JobID: fmt.Sprintf("flood-%d", i), Type: "offboard", UserID: 61, Outcome: "rejected", ErrorCode: "invalid_job", StartedAt: at, FinishedAt: at, Source: "x"})
	}
	cmd := serveHistory(t, entries)

	code, out, errs := cmd("--user", "61")
	if code != 0 || !strings.Contains(out, "hr-leaver-offboard") || !strings.Contains(out, "flood-1000") ||
		strings.Index(out, "flood-1000") > strings.Index(out, "hr-leaver-offboard") {
		t.Fatalf("table: exit %d %s\n%s", code, errs, out)
	}
	code, out, errs = cmd("--user", "61", "--format", "json", "--limit", "500")
	var es []history.Entry
	if code != 0 || json.Unmarshal([]byte(out), &es) != nil {
		t.Fatalf("json: exit %d %s", code, errs)
	}
	if len(es) != 500 || es[0].JobID != "flood-1000" || es[498].JobID != "flood-502" || es[499].JobID != "hr-leaver-offboard" {
		t.Fatalf("json: %d entries, first %q, last %q", len(es), es[0].JobID, es[len(es)-1].JobID)
	}
	for i := 1; i < len(es); i++ {
		if es[i].FinishedAt.After(es[i-1].FinishedAt) {
			t.Fatalf("entry %d is newer than the one before it", i)
		}
	}
	code, out, _ = cmd("--user", "61", "--format", "csv", "--limit", "3")
	if code != 0 || strings.Count(out, "\n") != 4 || !strings.Contains(out, "hr-leaver-offboard") {
		t.Fatalf("csv: exit %d\n%s", code, out)
	}
}
