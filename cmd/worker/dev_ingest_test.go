//go:build dev

package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// TestDevRulesAndIngestMetrics: `worker dev --rules FILE` loads that file
// (a broken one stops it, naming it), its /metrics carries the ingest and
// authentication metrics, and its HTTP listener is on loopback by default.
func TestDevRulesAndIngestMetrics(t *testing.T) {
	ingestEnv(t)
	broken := writeFile(t, "bad.yaml", "rules:\n  - name: x\n    when: nope.x\n    job:\n      type: '\"offboard\"'\n")
	err := dev(context.Background(), devConfig{DataDir: t.TempDir(), NATSPort: -1, SimAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		IngestAddr: "127.0.0.1:0", Rules: broken}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), nil)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("broken rules file: %v", err)
	}
	good := writeFile(t, "good.yaml", string(rules.BuiltinYAML()))
	httpAddr := runDev(t, devConfig{DataDir: t.TempDir(), NATSPort: -1, SimAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		IngestAddr: "127.0.0.1:0", Rules: good})
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`mfa_ingest_requests_total{code="200",source="hibob"} 0`, `mfa_hr_events_total{result="mapped",source="scim"} 0`,
		`mfa_auth_failures_total{listener="ingest"} 0`, `mfa_auth_failures_total{listener="status"} 0`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("dev's /metrics lacks %s", want)
		}
	}
}
