package ingest_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
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
	srv, err := broker.Start(broker.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	sim := simulator.New(simulator.Config{})
	simHTTP := httptest.NewServer(sim)
	t.Cleanup(simHTTP.Close)
	dev, err := sim.EnrollDevice(42, "OneLogin SMS", "Work phone", true)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	w, err := app.Run(ctx, app.Config{
		NATSURL: srv.ClientURL(), OneLoginBaseURL: simHTTP.URL,
		OneLoginClientID: sim.Config().ClientID, OneLoginClientSecret: sim.Config().ClientSecret,
		HTTPAddr: "127.0.0.1:0", Version: "test",
	}, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var results []map[string]any
	if _, err := nc.Subscribe("mfa.results.>", func(m *nats.Msg) {
		var r map[string]any
		_ = json.Unmarshal(m.Data, &r)
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	secret := "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	key, _ := ingest.ParseWebhookSecret([]byte(secret))
	s, err := ingest.New(ctx, ingest.Config{Secrets: ingest.Secrets{CloudEvents: key}}, ingest.Deps{Conn: nc, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
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

	script := docSnippet(t, hs.URL, secret)
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
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(results)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no result")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	r := results[0]
	mu.Unlock()
	if r["type"] != "offboard" || r["outcome"] != "succeeded" || !strings.HasPrefix(r["job_id"].(string), "hr:cloudevents:") || r["source"] != "hr.cloudevents" {
		t.Errorf("result %v", r)
	}
	removed, _ := r["data"].(map[string]any)["removed_device_ids"].([]any)
	if len(removed) != 1 || removed[0] != float64(dev) {
		t.Errorf("removed %v, want [%d]", removed, dev)
	}
	if d := sim.Devices(42); len(d) != 0 {
		t.Errorf("user 42 still has %v", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(results) != 1 {
		t.Errorf("%d results, want 1: %v", len(results), results)
	}
}
