package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// ingestEnv clears every variable `worker ingest` reads.
func ingestEnv(t *testing.T) {
	clearEnv(t)
	for _, v := range []string{"INGEST_HTTP_ADDR", "INGEST_TLS_CERT", "INGEST_TLS_KEY", "INGEST_CLOUDEVENTS_SECRET_FILE",
		"INGEST_BAMBOOHR_SECRET_FILE", "INGEST_HIBOB_SECRET_FILE", "INGEST_SCIM_TOKEN_FILE", "WORKER_RULES",
		"WORKER_STREAM_REPLICAS", "INGEST_CONCURRENCY", "INGEST_EVENTS_MAX_AGE", "WORKER_LOG_LEVEL"} {
		t.Setenv(v, "")
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestIngestReportsEveryBadSetting: all problems at once, one line each,
// naming the setting and never a secret.
func TestIngestReportsEveryBadSetting(t *testing.T) {
	ingestEnv(t)
	const secret = "hunter2-do-not-print"
	t.Setenv("INGEST_CLOUDEVENTS_SECRET_FILE", writeFile(t, "ce", "whsec_!!"+secret))
	t.Setenv("INGEST_BAMBOOHR_SECRET_FILE", "/nonexistent/bamboo")
	t.Setenv("INGEST_CONCURRENCY", "many")
	t.Setenv("WORKER_RULES", writeFile(t, "rules.yaml", "rules:\n  - name: broken\n    when: evnt.x\n    job:\n      type: '\"offboard\"'\n"))
	var stdout, stderr bytes.Buffer
	code := run([]string{"ingest"}, &stdout, &stderr)
	if code != 2 {
		t.Errorf("exit %d, want 2; stderr:\n%s", code, stderr.String())
	}
	out := stderr.String()
	for _, want := range []string{"NATS_URL", "INGEST_BAMBOOHR_SECRET_FILE", "INGEST_CONCURRENCY", "INGEST_CLOUDEVENTS_SECRET_FILE",
		`WORKER_RULES: ` + os.Getenv("WORKER_RULES") + `:3: rule "broken": when: undeclared reference to 'evnt'`} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) {
		t.Error("a secret was printed")
	}
	if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != 5 {
		t.Errorf("%d lines, want 5:\n%s", n, out)
	}
}

// TestIngestChecksOnce: ingestConfig only parses, so a secret file that
// cannot be read and a concurrency out of range pass it; app.RunIngest
// validates and loads once and reports every problem at once.
func TestIngestChecksOnce(t *testing.T) {
	ingestEnv(t)
	t.Setenv("INGEST_HIBOB_SECRET_FILE", "/nonexistent/hibob")
	t.Setenv("INGEST_CONCURRENCY", "0")
	cfg, err := ingestConfig([]string{"--addr", "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("ingestConfig validated or loaded: %v", err)
	}
	if cfg.HiBobSecretFile != "/nonexistent/hibob" || cfg.Concurrency != 0 || cfg.Addr != "127.0.0.1:0" {
		t.Fatalf("config = %+v", cfg)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"ingest"}, &stdout, &stderr); code != 2 {
		t.Errorf("exit %d, want 2; stderr:\n%s", code, stderr.String())
	}
	out := stderr.String()
	for _, want := range []string{"NATS_URL", "INGEST_CONCURRENCY", "INGEST_HIBOB_SECRET_FILE"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != 3 {
		t.Errorf("%d lines, want 3:\n%s", n, out)
	}
}

// TestRulesTestCommand: the golden sample through the command, and exit 1
// on a rule error.
func TestRulesTestCommand(t *testing.T) {
	ingestEnv(t)
	td := filepath.Join("..", "..", "internal", "rules", "testdata")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"rules", "test", "--rules", filepath.Join(td, "examples.yaml"), filepath.Join(td, "events.jsonl")}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	want, err := os.ReadFile(filepath.Join(td, "examples.golden.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stdout.Bytes(), want) {
		t.Errorf("output differs from the golden file:\n%s", stdout.String())
	}
	events := writeFile(t, "ev.jsonl", `{"source":"hibob","id":"h1","type":"employee.left","time":"2026-11-26T10:00:00Z","data":{"employeeId":"7"}}
{"source":"hibob","id":"h2","type":"employee.left","time":"2026-11-26T10:00:00Z","data":{}}
`)
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"rules", "test", events}, &stdout, &stderr); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(stdout.String(), "hr:hibob:h1:hibob-left") || !strings.Contains(stderr.String(), `rule "hibob-left"`) {
		t.Errorf("stdout %s\nstderr %s", stdout.String(), stderr.String())
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestIngestCommand runs `worker ingest` against a real NATS server: a
// signed HiBob leaver event becomes a stored event and an offboard job.
func TestIngestCommand(t *testing.T) {
	ingestEnv(t)
	srv, _, js := testenv.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"mfa.jobs.>"}}); err != nil {
		t.Fatal(err)
	}
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	t.Setenv("NATS_URL", srv.ClientURL())
	t.Setenv("INGEST_HIBOB_SECRET_FILE", writeFile(t, "hibob", "hibob-secret\n"))
	t.Setenv("INGEST_HTTP_ADDR", addr)
	t.Setenv("WORKER_HTTP_ADDR", metricsAddr)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	logs := &testenv.SyncBuffer{}
	go func() { done <- cmdIngest(cctx, nil, logs) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ingest: %v", err)
		}
	}()
	if err := testenv.WaitHTTP("http://"+addr+"/readyz", 15*time.Second); err != nil {
		t.Fatalf("%v; logs:\n%s", err, logs.String())
	}
	body := []byte(`{"companyId":1,"type":"employee.left","triggeredAt":"` + time.Now().UTC().Format(time.RFC3339) + `","version":"v2","data":{"employeeId":"77"}}`)
	mac := hmac.New(sha512.New, []byte("hibob-secret"))
	mac.Write(body)
	req, _ := http.NewRequest("POST", "http://"+addr+"/hooks/hibob", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Bob-Signature", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	st, _ := js.Stream(ctx, "JOBS")
	var m *jetstream.RawStreamMsg
	testenv.Eventually(t, 15*time.Second, func() bool {
		var err error
		m, err = st.GetMsg(ctx, 1)
		return err == nil
	}, func() string { return "no job; logs:\n" + logs.String() })
	var job map[string]any
	_ = json.Unmarshal(m.Data, &job)
	if job["type"] != "offboard" || job["user"].(map[string]any)["external_id"] != "77" {
		t.Errorf("job %v", job)
	}
	// /metrics answers on the internal address only.
	resp, err = http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var mb bytes.Buffer
	_, _ = mb.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(mb.String(), `mfa_ingest_requests_total{code="200",source="hibob"} 1`) {
		t.Errorf("metrics lack the request:\n%s", mb.String())
	}
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("/metrics on the ingest address: %d", resp.StatusCode)
		}
	}
	if strings.Contains(logs.String(), "hibob-secret") {
		t.Error("logs hold the secret")
	}
}

// TestRulesTestValidatesLikeTheDoor: `worker rules test` refuses what the
// receiver would: a job the worker would reject, a string over 4 KiB, and a
// rule file whose cost can exceed the limit does not load.
func TestRulesTestValidatesLikeTheDoor(t *testing.T) {
	ingestEnv(t)
	far := time.Now().AddDate(2, 0, 0).UTC().Format(time.RFC3339)
	day := time.Now().UTC().AddDate(0, 0, 20)
	events := writeFile(t, "ev.jsonl", `{"source":"cloudevents","id":"c1","type":"io.mfaworker.person.left","data":{"email":"gone@example.com","effective_at":"`+far+`"}}
{"source":"cloudevents","id":"c2","type":"io.mfaworker.person.left","data":{"email":"a@example.com","notes":"`+strings.Repeat("9", 5000)+`"}}
{"source":"cloudevents","id":"c3","type":"io.mfaworker.person.left","data":{"email":"ok@example.com","effective_at":"`+day.Format("2006-01-02")+`"}}
`)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"rules", "test", events}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, stderr.String())
	}
	out := stderr.String()
	for _, want := range []string{`rule "person-left"`, "out_of_range", "not_before", "event.data.notes"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "gone@example.com") || strings.Contains(out, "99999") {
		t.Errorf("stderr echoes a value:\n%s", out)
	}
	end := time.Date(day.Year(), day.Month(), day.Day()+1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	if !strings.Contains(stdout.String(), `"not_before":"`+end+`"`) {
		t.Errorf("the date-only leaver: %s", stdout.String())
	}
	// The receiver's time settings apply: a date alone ends in Berlin.
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	_ = run([]string{"rules", "test", "--timezone", "Europe/Berlin", events}, &stdout, &stderr)
	endBerlin := time.Date(day.Year(), day.Month(), day.Day()+1, 0, 0, 0, 0, berlin).UTC().Format(time.RFC3339)
	if !strings.Contains(stdout.String(), `"not_before":"`+endBerlin+`"`) {
		t.Errorf("with --timezone Europe/Berlin: %s", stdout.String())
	}
	splice := writeFile(t, "splice.yaml", "rules:\n  - name: splice\n    when: 'true'\n    job:\n      type: '\"offboard\"'\n      user: '{\"email\": event.data.a.replace(\"x\", event.data.a)}'\n")
	stderr.Reset()
	if code := run([]string{"rules", "test", "--rules", splice, events}, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "over the limit") {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
}
