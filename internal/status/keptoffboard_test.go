package status_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/status"
)

// TestPersonLookupShowsAnOffboardAfterARejectedBurst: 1,000 rejected jobs
// after a person's offboard; the person view still lists the offboard, as
// the oldest of its 50 rows, the newest rejected jobs before it.
func TestPersonLookupShowsAnOffboardAfterARejectedBurst(t *testing.T) {
	f := newFixture(t, status.Config{})
	ctx := context.Background()
	store := history.New(f.js)
	const leaver = 9876777
	t0 := fixedNow.Add(-2 * time.Hour)
	off := history.Entry{JobID: "leaver-offboard", Type: "offboard", UserID: leaver, Outcome: "succeeded", StartedAt: t0, FinishedAt: t0.Add(time.Second), Attempts: 1, Source: "hr.test"}
	if err := store.Append(ctx, off, off.JobID+":result"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 1000; i++ {
		at := t0.Add(time.Minute + time.Duration(i)*time.Second)
		e := history.Entry{JobID: fmt.Sprintf("junk-%04d", i), Type: "enroll", UserID: leaver, Outcome: "rejected", ErrorCode: "invalid_job", StartedAt: at, FinishedAt: at, Source: "hr.test"}
		if err := store.Append(ctx, e, e.JobID+":result"); err != nil {
			t.Fatal(err)
		}
	}
	code, _, page := get(t, f.srv.URL+"/status?user="+strconv.Itoa(leaver))
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	got := matches(historyRe, page)
	if len(got) != history.DefaultLimit || got[0] != "junk-1000" || got[len(got)-2] != "junk-0952" || got[len(got)-1] != "leaver-offboard" {
		t.Fatalf("%d rows: %v", len(got), got)
	}
	if c := cells(page); c["lookup-count"] != strconv.Itoa(history.DefaultLimit) {
		t.Fatalf("lookup count %q", c["lookup-count"])
	}
}
