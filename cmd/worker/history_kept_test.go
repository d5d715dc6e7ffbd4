package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// TestHistoryCommandAfterARejectedBurst: 1,000 rejected jobs after a
// person's offboard; `worker history` still shows the offboard, in every
// format, below the newest rejected jobs.
func TestHistoryCommandAfterARejectedBurst(t *testing.T) {
	clearEnv(t)
	srv, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	if err := history.Provision(ctx, js, history.Config{}); err != nil {
		t.Fatal(err)
	}
	store := history.New(js)
	t0 := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	off := history.Entry{JobID: "hr-leaver-offboard", Type: "offboard", UserID: 61, Outcome: "succeeded", StartedAt: t0, FinishedAt: t0.Add(2 * time.Second), DurationMS: 2000, Attempts: 1, Source: "hr.hibob"}
	if err := store.Append(ctx, off, off.JobID+":result"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 1000; i++ {
		at := t0.Add(time.Hour + time.Duration(i)*time.Millisecond)
		e := history.Entry{JobID: fmt.Sprintf("flood-%d", i), Type: "offboard", UserID: 61, Outcome: "rejected", ErrorCode: "invalid_job", StartedAt: at, FinishedAt: at, Source: "x"}
		if err := store.Append(ctx, e, e.JobID+":result"); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := micro.AddService(nc, micro.Config{Name: "mfa", Version: "1.2.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := svc.AddGroup("mfa.query").AddEndpoint("history", history.NewHandler(store, nil, testenv.Quiet())); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cmd := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"history", "--nats-url", srv.ClientURL()}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}

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
