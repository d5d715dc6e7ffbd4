package ingest_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/ingest"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// docSnippet returns the shell block of docs/hr-sources.md that follows the
// signed-cloudevent marker, with its INGEST and SECRET lines replaced.
func docSnippet(t *testing.T, ingestURL, secret string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "hr-sources.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- signed-cloudevent -->\n```sh\n")
	if !ok {
		t.Fatal("no signed-cloudevent block in docs/hr-sources.md")
	}
	block, _, _ := strings.Cut(rest, "```")
	var out []string
	for _, line := range strings.Split(block, "\n") {
		switch {
		case strings.HasPrefix(line, "INGEST="):
			line = "INGEST=" + ingestURL
		case strings.HasPrefix(line, "SECRET="):
			line = "SECRET=" + secret
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// stack is the real worker, the OneLogin simulator and an ingest receiver
// with its mapper, on one embedded NATS server.
type stack struct {
	sim     *simulator.Server
	ingest  string // the receiver's URL
	mu      sync.Mutex
	results map[string]map[string]any // by job id
	arrived chan string               // job ids as their results arrive
}

const docSecret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

func startStack(t testing.TB) *stack {
	t.Helper()
	srv, err := broker.Start(broker.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	st := &stack{sim: simulator.New(simulator.Config{}), results: map[string]map[string]any{}, arrived: make(chan string, 4096)}
	simHTTP := httptest.NewServer(st.sim)
	t.Cleanup(simHTTP.Close)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	w, err := app.Run(ctx, app.Config{
		NATSURL: srv.ClientURL(), OneLoginBaseURL: simHTTP.URL,
		OneLoginClientID: st.sim.Config().ClientID, OneLoginClientSecret: st.sim.Config().ClientSecret,
		HTTPAddr: "127.0.0.1:0", Version: "test",
	}, log, prometheus.NewRegistry())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("mfa.results.>", func(m *nats.Msg) {
		var r map[string]any
		_ = json.Unmarshal(m.Data, &r)
		id, _ := r["job_id"].(string)
		st.mu.Lock()
		st.results[id] = r
		st.mu.Unlock()
		select {
		case st.arrived <- id:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	key, _ := ingest.ParseWebhookSecret([]byte(docSecret))
	s, err := ingest.New(ctx, ingest.Config{Secrets: ingest.Secrets{CloudEvents: key}}, ingest.Deps{Conn: nc, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	st.ingest = hs.URL
	mapperDone := make(chan error, 1)
	go func() { mapperDone <- s.RunMapper(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-mapperDone
		hs.Close()
		if err := w.Wait(); err != nil {
			t.Errorf("worker: %v", err)
		}
		nc.Close()
	})
	return st
}

func (st *stack) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.results)
}

// TestDocumentedCurlEndsInOffboard sends the documented curl + openssl
// CloudEvent to a receiver in front of the real worker and the OneLogin
// simulator: one offboard result, the user's factors removed; sent twice
// more, it stays one event and one result.
func TestDocumentedCurlEndsInOffboard(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "openssl", "od", "base64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run the documented example: %v", tool, err)
		}
	}
	st := startStack(t)
	dev, err := st.sim.EnrollDevice(42, "OneLogin SMS", "Work phone", true)
	if err != nil {
		t.Fatal(err)
	}
	script := docSnippet(t, st.ingest, docSecret)
	for i := range 3 {
		out, err := exec.Command("bash", "-c", "set -eu\n"+script).CombinedOutput()
		if err != nil {
			t.Fatalf("the documented example failed: %v\n%s", err, out)
		}
		want := `"status":"stored"`
		if i > 0 {
			want = `"status":"duplicate"`
		}
		if !strings.Contains(string(out), want) {
			t.Fatalf("sending %d: %s", i+1, out)
		}
	}
	var id string
	select {
	case id = <-st.arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("no result")
	}
	st.mu.Lock()
	r := st.results[id]
	st.mu.Unlock()
	if r["type"] != "offboard" || r["outcome"] != "succeeded" || !strings.HasPrefix(id, "hr:cloudevents:") || r["source"] != "hr.cloudevents" {
		t.Errorf("result %v", r)
	}
	removed, _ := r["data"].(map[string]any)["removed_device_ids"].([]any)
	if len(removed) != 1 || removed[0] != float64(dev) {
		t.Errorf("removed %v, want [%d]", removed, dev)
	}
	if d := st.sim.Devices(42); len(d) != 0 {
		t.Errorf("user 42 still has %v", d)
	}
	if n := st.count(); n != 1 {
		t.Errorf("%d results, want 1", n)
	}
}

// sendLeaver signs and sends one leaver CloudEvent whose data is data.
func (st *stack) sendLeaver(t testing.TB, id string, data string) {
	t.Helper()
	key, _ := ingest.ParseWebhookSecret([]byte(docSecret))
	body := []byte(fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"test","type":"io.mfaworker.person.left","data":%s}`, id, data))
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, st.ingest+"/events", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("event %s: %d %s", id, resp.StatusCode, b)
	}
}

// waitResult waits for the result of a job whose id starts with prefix.
func (st *stack) waitResult(t testing.TB, prefix string) map[string]any {
	t.Helper()
	var id string
	testenv.Eventually(t, 20*time.Second, func() bool {
		for {
			select {
			case id = <-st.arrived:
				if strings.HasPrefix(id, prefix) {
					return true
				}
			default:
				return false
			}
		}
	}, func() string { return "no result for " + prefix })
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.results[id]
}

// TestLeaverByExternalIDRemovesTheFactors: an HR system knows people by
// employee id, which is OneLogin's external_id; one leaver event naming it
// ends in that OneLogin user's factors removed, and an employee id OneLogin
// does not know ends failed user_not_found, never in a success.
func TestLeaverByExternalIDRemovesTheFactors(t *testing.T) {
	st := startStack(t)
	var devs []int64
	for _, f := range []string{"OneLogin SMS", "OneLogin Voice"} {
		d, err := st.sim.EnrollDevice(77, f, "phone", true)
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	st.sendLeaver(t, "ext-leaver-1", `{"external_id":"ext77"}`)
	r := st.waitResult(t, "hr:cloudevents:")
	if r["type"] != "offboard" || r["outcome"] != "succeeded" || r["user_id"] != float64(77) {
		t.Fatalf("result %v", r)
	}
	if u, _ := r["user"].(map[string]any); u["external_id"] != "ext77" {
		t.Errorf("result's user %v, want the external id echoed", r["user"])
	}
	removed, _ := r["data"].(map[string]any)["removed_device_ids"].([]any)
	if len(removed) != len(devs) {
		t.Errorf("removed %v, want %v", removed, devs)
	}
	if d := st.sim.Devices(77); len(d) != 0 {
		t.Errorf("user 77 still has %v", d)
	}

	st.sendLeaver(t, "ext-leaver-2", `{"external_id":"no-such-employee"}`)
	r = st.waitResult(t, "hr:cloudevents:")
	e, _ := r["error"].(map[string]any)
	if r["outcome"] != "failed" || e["code"] != "user_not_found" || r["user_id"] != float64(0) {
		t.Fatalf("unknown employee: %v", r)
	}
}

// BenchmarkEventToResult measures the time from sending a signed leaver
// CloudEvent to its offboard result, one event at a time under an idle
// worker, and reports the median and the 99th percentile (run with
// -benchtime 1000x).
func BenchmarkEventToResult(b *testing.B) {
	st := startStack(b)
	key, _ := ingest.ParseWebhookSecret([]byte(docSecret))
	client := &http.Client{}
	lat := make([]time.Duration, 0, b.N)
	for i := range b.N {
		if _, err := st.sim.EnrollDevice(int64(1000+i), "OneLogin SMS", "Phone", true); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		body := []byte(fmt.Sprintf(`{"specversion":"1.0","id":"lat-%d","source":"bench","type":"io.mfaworker.person.left","data":{"user_id":%d}}`, i, 1000+i))
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, key)
		fmt.Fprintf(mac, "m%d.%s.", i, ts)
		mac.Write(body)
		req, _ := http.NewRequest(http.MethodPost, st.ingest+"/events", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		req.Header.Set("webhook-id", fmt.Sprintf("m%d", i))
		req.Header.Set("webhook-timestamp", ts)
		req.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
		select {
		case id := <-st.arrived:
			st.mu.Lock()
			outcome := st.results[id]["outcome"]
			st.mu.Unlock()
			if outcome != "succeeded" {
				b.Fatalf("event %d: outcome %v", i, outcome)
			}
		case <-time.After(30 * time.Second):
			b.Fatalf("no result for event %d", i)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50_ms")
	b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99_ms")
	b.ReportMetric(0, "ns/op")
}
