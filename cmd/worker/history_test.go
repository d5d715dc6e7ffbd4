package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

func TestHistoryCommand(t *testing.T) {
	t0 := time.Date(2026, 5, 4, 8, 0, 0, 0, time.UTC)
	cmd := serveHistory(t, []history.Entry{
		{JobID: "enr-1", Type: "enroll", UserID: 5, Outcome: "succeeded", StartedAt: t0, FinishedAt: t0.Add(time.Second), DurationMS: 1000, Attempts: 1, Source: "cli"},
		{JobID: "off-1", Type: "offboard", UserID: 5, User: &history.Selector{ExternalID: "E5"}, Outcome: "failed", ErrorCode: "retries_exhausted",
			StartedAt: t0.Add(time.Hour), FinishedAt: t0.Add(time.Hour + 2*time.Second), DurationMS: 2000, Attempts: 8, CorrelationID: "=HYPERLINK(\"x\")", Source: "hr.hibob"},
		{JobID: "other", Type: "enroll", UserID: 6, Outcome: "succeeded", FinishedAt: t0},
	})

	code, out, errs := cmd("--user", "5", "--format", "csv")
	if code != 0 {
		t.Fatalf("csv: exit %d: %s", code, errs)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("csv does not parse: %v\n%s", err, out)
	}
	if len(rows) != 3 || rows[0][0] != "finished_at" || rows[1][2] != "off-1" || rows[2][2] != "enr-1" {
		t.Fatalf("csv rows %q", rows)
	}
	byName := map[string]string{}
	for i, h := range rows[0] {
		byName[h] = rows[1][i]
	}
	if byName["error_code"] != "retries_exhausted" || byName["attempts"] != "8" || byName["external_id"] != "E5" ||
		byName["finished_at"] != "2026-05-04T09:00:02Z" || byName["correlation_id"] != `'=HYPERLINK("x")` || byName["user_id"] != "5" {
		t.Fatalf("csv row %v", byName)
	}

	code, out, errs = cmd("--user", "5", "--format", "json", "--limit", "1")
	var es []history.Entry
	if code != 0 || json.Unmarshal([]byte(out), &es) != nil || len(es) != 1 || es[0].JobID != "off-1" {
		t.Fatalf("json: exit %d, %q %s", code, out, errs)
	}

	code, out, _ = cmd("--user", "5")
	if code != 0 || !strings.Contains(out, "off-1") || !strings.Contains(out, "retries_exhausted") || !strings.Contains(out, "2 result(s)") ||
		strings.Index(out, "off-1") > strings.Index(out, "enr-1") {
		t.Fatalf("table: exit %d\n%s", code, out)
	}
	code, out, _ = cmd("--user", "77", "--format", "json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("nobody: exit %d %q", code, out)
	}

	// A service without a user lookup says so; the command exits 1.
	code, _, errs = cmd("--email", "ann@example.com")
	if code != 1 || !strings.Contains(errs, history.CodeLookupUnsupported) {
		t.Fatalf("email: exit %d, %s", code, errs)
	}
	// Several identifiers together are one person's name, not a usage error.
	code, _, errs = cmd("--email", "ann@example.com", "--external-id", "E5")
	if code != 1 || !strings.Contains(errs, history.CodeLookupUnsupported) {
		t.Fatalf("email and external id: exit %d, %s", code, errs)
	}
	for _, bad := range [][]string{{}, {"--user", "5", "--email", "a@b"}, {"--user", "5", "--limit", "501"}, {"--user", "5", "--format", "xml"}, {"--user", "-2"}} {
		if code, _, errs := cmd(bad...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", bad, code, errs)
		}
	}
}

// Control characters a publisher put in correlation_id or source are
// printed escaped, in the table and in CSV: no cleared screen, no forged
// line, no reordered text.
func TestHistoryEscapesControlCharacters(t *testing.T) {
	es := []history.Entry{{JobID: "e-1", Type: "enroll", UserID: 5, Outcome: "succeeded",
		CorrelationID: "\x1b[2J\x1b[H", Source: "x\r\noffboard succeeded\u202e\u0085\\"}}
	for _, format := range []string{"table", "csv"} {
		var b bytes.Buffer
		if err := writeHistory(&b, format, es); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for _, r := range out {
			if r != '\n' && history.IsControl(r) {
				t.Errorf("%s: printed U+%04X raw:\n%q", format, r, out)
			}
		}
		want := map[string]int{"table": 3, "csv": 2}[format] // header, the entry (table: a count)
		if strings.Count(out, "\n") != want {
			t.Errorf("%s: %d lines, want %d (a forged line?):\n%q", format, strings.Count(out, "\n"), want, out)
		}
		for _, want := range []string{`\x1b[2J\x1b[H`, `x\x0d\x0aoffboard succeeded\u202e\u0085\\`} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: %q not in\n%s", format, want, out)
			}
		}
	}
	var b bytes.Buffer
	if err := writeHistory(&b, "table", []history.Entry{{JobID: "off-1", Type: "offboard", Outcome: "cancelled", ErrorCode: "cancelled",
		CancelledBy: "c-1", CancelScope: "hr.cloudevents"}}); err != nil || !strings.Contains(b.String(), "cancelled by c-1 (scope hr.cloudevents)") {
		t.Errorf("who cancelled is not shown (%v):\n%s", err, b.String())
	}
	if got := history.EscapeControls("hr.scim café"); got != "hr.scim café" {
		t.Errorf("a printable value changed: %q", got)
	}
}

// serveHistory appends entries to the history of a fresh JetStream server,
// answers mfa.query.history from it, and returns a function that runs
// `worker history ARGS` against that server: its exit code, stdout and
// stderr.
func serveHistory(t *testing.T, entries []history.Entry) func(args ...string) (int, string, string) {
	t.Helper()
	clearEnv(t)
	srv, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	if err := history.Provision(ctx, js, history.Config{}); err != nil {
		t.Fatal(err)
	}
	store := history.New(js)
	for _, e := range entries {
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
	// The endpoint's subscription must reach the server before the
	// command, on another connection, asks.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	url := srv.ClientURL()
	return func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"history", "--nats-url", url}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
}
