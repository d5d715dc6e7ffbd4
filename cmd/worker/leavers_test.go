package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/audit"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

var writeDocs = flag.Bool("docs", false, "write the example evidence export of TestLeaversFallingThroughAreOpen to docs/")

// TestLeaversFallingThroughAreOpen runs a worker against the simulator
// with the leaver registry, and checks that each way a leaver can fall
// through (an event dead-lettered at the mapper, a user_not_found offboard,
// a cancelled offboard, a held offboard discarded) shows as open in
// `worker leavers --open` with its reason, while a leaver whose offboard
// ran does not. Then an operator closes one (audited), and `worker
// evidence` exports them.
func TestLeaversFallingThroughAreOpen(t *testing.T) {
	clearEnv(t)
	bed := testenv.StartBed(t, simulator.Config{FirstUser: 1, LastUser: 1000})
	bed.RunWorker(t, jobs.DefaultConfig(), testenv.WorkerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := leaver.Start(ctx, bed.JS, 1, nil, testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	people, err := bed.JS.KeyValue(ctx, "MFA_PEOPLE")
	if err != nil {
		t.Fatal(err)
	}
	svc.SetJobTimes(ledger.NewPeople(people))
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registry: %v", err)
		}
	}()
	st := svc.Store
	effective := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Second)
	received := effective.Add(time.Minute)

	// 1. An HR event accepted at the door, then dead-lettered by the
	// mapper (a rule changed in between): the door's record opens.
	door := leaver.Acceptance{JobID: "hr:hibob:ev-1:offboard", User: &leaver.Selector{ExternalID: "E-ghost-1"}, Source: "hr.hibob",
		HRSource: "hibob", EventID: "ev-1", ReceivedAt: received, EffectiveAt: effective}
	if err := st.Accepted(ctx, door); err != nil {
		t.Fatal(err)
	}
	deadLetter(t, bed.JS, "hibob", "ev-1")
	// 2. An event dead-lettered that the door never saw (a rule error
	// after a restart): a record of its own.
	deadLetter(t, bed.JS, "bamboohr", "ev-2")
	// 3. A typo in HR: user_not_found.
	publish(t, bed.JS, "offboard", `{"id":"off-typo","type":"offboard","user":{"email":"ada.lovelase@example.com"},"source":"hr.cloudevents"}`)
	// 4. A cancelled offboard (the cancel arrives first and waits as a
	// tombstone).
	if err := st.Accepted(ctx, leaver.Acceptance{JobID: "off-5", UserID: 5, Source: "hr.scim", EffectiveAt: effective}); err != nil {
		t.Fatal(err)
	}
	publish(t, bed.JS, "cancel", `{"id":"cancel-off-5","type":"cancel","params":{"job_id":"off-5"}}`)
	waitResult(t, bed.JS, "cancel-off-5")
	publish(t, bed.JS, "offboard", `{"id":"off-5","type":"offboard","user_id":5,"source":"hr.scim"}`)
	// 5. Held by the guard, then discarded: the job path reports the hold
	// and publishes the discard's result.
	if err := st.Held(ctx, leaver.Acceptance{JobID: "off-6", UserID: 6, Source: "hr.hibob", EffectiveAt: effective}); err != nil {
		t.Fatal(err)
	}
	discard(t, bed.JS, "off-6", 6)
	// 6. A leaver whose offboard runs: not open.
	if _, err := bed.Sim.EnrollDevice(7, "OneLogin SMS", "phone", true); err != nil {
		t.Fatal(err)
	}
	if err := st.Accepted(ctx, leaver.Acceptance{JobID: "hr:cloudevents:ev-7:offboard", UserID: 7, Source: "hr.cloudevents",
		HRSource: "cloudevents", EventID: "ev-7", ReceivedAt: received, EffectiveAt: effective}); err != nil {
		t.Fatal(err)
	}
	publish(t, bed.JS, "offboard", fmt.Sprintf(`{"id":"hr:cloudevents:ev-7:offboard","type":"offboard","user_id":7,"source":"hr.cloudevents","requested_at":%q}`, effective.Format(time.RFC3339)))

	// 7. An offboard nobody announced (no hook): its effective time comes
	// from MFA_PEOPLE, where the job path records it.
	if _, err := bed.Sim.EnrollDevice(8, "OneLogin SMS", "phone", true); err != nil {
		t.Fatal(err)
	}
	publish(t, bed.JS, "offboard", fmt.Sprintf(`{"id":"manual-8","type":"offboard","user_id":8,"source":"ops","requested_at":%q}`, effective.Add(30*time.Minute).Format(time.RFC3339)))

	want := map[string]string{
		mustSel(leaver.Selector{ExternalID: "E-ghost-1"}):           "rule_error",
		leaver.EventKey("bamboohr", "ev-2"):                         "rule_error",
		mustSel(leaver.Selector{Email: "ada.lovelase@example.com"}): "user_not_found",
		leaver.UserKey(5): "cancelled",
		leaver.UserKey(6): "discarded",
	}
	url := bed.NATSURL()
	cmd := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		n := 1
		if len(args) > 1 && args[1] == "close" {
			n = 2
		}
		full := append(append(append([]string{}, args[:n]...), "--nats-url", url), args[n:]...)
		code := run(full, &out, &errb)
		return code, out.String(), errb.String()
	}
	var open map[string]leaver.Record
	testenv.Eventually(t, 20*time.Second, func() bool {
		code, out, _ := cmd("leavers", "--open", "--json")
		if code != 0 {
			return false
		}
		open = map[string]leaver.Record{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var r leaver.Record
			if json.Unmarshal([]byte(line), &r) == nil {
				open[r.Key] = r
			}
		}
		if len(open) != len(want) {
			return false
		}
		for k, reason := range want {
			if open[k].Reason != reason {
				return false
			}
		}
		r7, _, err := st.Get(ctx, leaver.UserKey(7))
		r8, _, err8 := st.Get(ctx, leaver.UserKey(8))
		return err == nil && err8 == nil && (r7.State == leaver.Offboarded || r7.State == leaver.Verified) && (r8.State == leaver.Offboarded || r8.State == leaver.Verified)
	}, func() string { return fmt.Sprintf("open records %+v, want reasons %v", open, want) })
	if c := open[leaver.UserKey(5)].Cancellations; len(c) != 1 || c[0].By != "cancel-off-5" {
		t.Errorf("the cancellation does not say who cancelled: %+v", c)
	}
	if h := open[leaver.UserKey(6)].Holds; len(h) != 1 || h[0].Ended != "discarded" {
		t.Errorf("the hold is not shown discarded: %+v", h)
	}
	if r := open[mustSel(leaver.Selector{ExternalID: "E-ghost-1"})]; r.EventID != "ev-1" || r.Source != "hibob" || !r.EffectiveAt.Equal(effective) {
		t.Errorf("the door's record lost its event: %+v", r)
	}

	// The table lists the same, with reasons, and nothing else.
	code, out, errs := cmd("leavers", "--open")
	if code != 0 {
		t.Fatalf("leavers --open: exit %d: %s", code, errs)
	}
	for k, reason := range want {
		if !regexpLine(out, k, reason) {
			t.Errorf("leavers --open does not list %s with %s:\n%s", k, reason, out)
		}
	}
	if strings.Contains(out, leaver.UserKey(7)) || strings.Contains(out, leaver.UserKey(8)) || !strings.Contains(out, "5 record(s)") {
		t.Errorf("leavers --open lists more than the open records:\n%s", out)
	}

	// An operator closes the user_not_found one, with a reason; it is
	// audited.
	audits, err := bed.JS.Conn().SubscribeSync(leaver.AuditSubject)
	if err != nil {
		t.Fatal(err)
	}
	typo := mustSel(leaver.Selector{Email: "ada.lovelase@example.com"})
	if code, _, errs := cmd("leavers", "close", "--id", typo); code != 2 || !strings.Contains(errs, "--reason") {
		t.Errorf("close without a reason: exit %d, %s", code, errs)
	}
	code, out, errs = cmd("leavers", "close", "--id", typo, "--reason", "offboarded by hand as ada.lovelace (HR ticket 4411)", "--by", "ops-alice")
	if code != 0 || !strings.Contains(out, "closed "+typo) {
		t.Fatalf("close: exit %d: %s %s", code, out, errs)
	}
	m, err := audits.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no audit event: %v", err)
	}
	var a audit.Record
	if err := json.Unmarshal(m.Data, &a); err != nil || a.Details["key"] != typo || a.By != "ops-alice" || a.Details["was_reason"] != "user_not_found" || a.Action != "leavers.close" {
		t.Fatalf("audit %s: %+v %v", m.Data, a, err)
	}
	if n := testenv.Count(bed.JS, audit.Stream); n != 1 {
		t.Errorf("%s holds %d records, want the close's", audit.Stream, n)
	}
	if code, _, errs := cmd("leavers", "close", "--id", typo, "--reason", "again"); code != 1 || !strings.Contains(errs, "not open") {
		t.Errorf("closing a closed record: exit %d, %s", code, errs)
	}

	// The evidence: one row per leaver, the offboarded one within 1h of
	// its effective time? It ran about two hours late (the test set its
	// termination two hours back), so no.
	since := effective.Add(-time.Hour).Format(time.RFC3339)
	code, out, errs = cmd("evidence", "--since", since, "--format", "csv")
	if code != 0 {
		t.Fatalf("evidence: exit %d: %s", code, errs)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("evidence csv: %v\n%s", err, out)
	}
	byKey := map[string]map[string]string{}
	for _, row := range rows[1:] {
		m := map[string]string{}
		for i, h := range rows[0] {
			m[h] = row[i]
		}
		byKey[m["key"]] = m
	}
	r7 := byKey[leaver.UserKey(7)]
	if r7 == nil || r7["hr_event_id"] != "ev-7" || r7["factors_removed"] != "1" || r7["within_target"] != "no" || r7["lag_seconds"] == "" || r7["finished_at"] == "" {
		t.Errorf("evidence row of the offboarded leaver: %v", r7)
	}
	if r := byKey[leaver.UserKey(8)]; r == nil || r["effective_at"] != effective.Add(30*time.Minute).Format(time.RFC3339) || r["lag_seconds"] == "" || r["source"] != "ops" {
		t.Errorf("evidence row of the unannounced offboard: %v", r)
	}
	if r := byKey[typo]; r == nil || r["state"] != "closed" || r["closed_by"] != "ops-alice" {
		t.Errorf("evidence row of the closed leaver: %v", r)
	}
	if r := byKey[leaver.UserKey(5)]; r == nil || !strings.Contains(r["cancellations"], "by=cancel-off-5") {
		t.Errorf("evidence row of the cancelled leaver: %v", r)
	}
	if strings.Contains(out, "ada.lovelase") {
		t.Errorf("the export names a person by email:\n%s", out)
	}
	code, jout, errs := cmd("evidence", "--since", since, "--format", "json", "--within", "4h")
	var jrows []leaver.Row
	if code != 0 || json.Unmarshal([]byte(jout), &jrows) != nil || len(jrows) != len(rows)-1 {
		t.Fatalf("evidence json: exit %d, %d rows (csv %d): %s", code, len(jrows), len(rows)-1, errs)
	}
	for _, r := range jrows {
		if r.Key == leaver.UserKey(7) && r.WithinTarget != "yes" {
			t.Errorf("with a 4h target the leaver was offboarded in time: %+v", r)
		}
	}
	if *writeDocs {
		for name, body := range map[string]string{"evidence-example.csv": out, "evidence-example.json": jout} {
			if err := os.WriteFile(filepath.Join("..", "..", "docs", name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func mustSel(s leaver.Selector) string {
	k, ok := leaver.SelectorKey(s)
	if !ok {
		panic("no key")
	}
	return k
}

func regexpLine(out, key, reason string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == key && f[1] == "open" && f[2] == reason {
			return true
		}
	}
	return false
}

func publish(t *testing.T, js jetstream.JetStream, typ, body string) {
	t.Helper()
	var j struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal([]byte(body), &j)
	if err := testenv.PublishOne(context.Background(), js, typ, body, j.ID); err != nil {
		t.Fatal(err)
	}
}

func waitResult(t *testing.T, js jetstream.JetStream, jobID string) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, func() bool {
		rs, err := testenv.Results(context.Background(), js)
		if err != nil {
			return false
		}
		for _, r := range rs {
			if r.JobID == jobID {
				return true
			}
		}
		return false
	}, func() string { return "no result of " + jobID })
}

// deadLetter copies an HR event to mfa.dlq.ingest as the ingest mapper
// does when a rule fails on it.
func deadLetter(t *testing.T, js jetstream.JetStream, source, id string) {
	t.Helper()
	m := nats.NewMsg("mfa.dlq.ingest")
	m.Header.Set("Mfa-Reason", "rule offboard: no such key: employeeId")
	m.Header.Set("Mfa-Error-Code", "rule_error")
	m.Header.Set("Mfa-Deliveries", "1")
	m.Header.Set("Mfa-Original-Subject", "hr.events."+source)
	m.Header.Set("Hr-Source", source)
	m.Header.Set("Hr-Event-Id", id)
	m.Header.Set(jetstream.MsgIDHeader, "hr:"+source+":"+id+":rule_error")
	m.Data = []byte(`{"type":"employee.left","data":{}}`)
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// discard publishes the result a discarded hold ends with (cancelled,
// code discarded), as the job path does.
func discard(t *testing.T, js jetstream.JetStream, jobID string, user int64) {
	t.Helper()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	body := fmt.Sprintf(`{"job_id":%q,"type":"offboard","user_id":%d,"outcome":"cancelled","attempts":1,"started_at":%q,"finished_at":%q,"duration_ms":0,"source":"hr.hibob","error":{"code":"discarded","message":"held job discarded by an operator","retryable":false}}`, jobID, user, now, now)
	m := nats.NewMsg("mfa.results.offboard.cancelled")
	m.Data = []byte(body)
	m.Header.Set(jetstream.MsgIDHeader, jobID+":result")
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}
