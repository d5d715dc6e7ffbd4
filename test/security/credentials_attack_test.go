package security

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// credGet answers a GET with its status and body.
func credGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// credMetric reads mfa_onelogin_credentials_ok from /metrics.
func credMetric(t *testing.T, base string) string {
	t.Helper()
	_, body := credGet(t, base+"/metrics")
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "mfa_onelogin_credentials_ok ") {
			return strings.TrimPrefix(l, "mfa_onelogin_credentials_ok ")
		}
	}
	return "(absent)"
}

// The worker's own credentials failing is not the jobs' failure. With a
// wrong secret in ONELOGIN_CLIENT_SECRET_FILE the worker takes no job,
// /readyz answers 503 naming the cause and mfa_onelogin_credentials_ok is
// 0; once the file is fixed (no restart) the jobs run and all succeed.
// Then the secret is rotated under a running worker (the file wrong again,
// every token expired): jobs that hit the refusal mid-flight are given
// back, not failed, and all succeed after the file is fixed again.
func TestCredentialsRefusedFailsNoJob(t *testing.T) {
	bed, err := testenv.NewBed(simulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer bed.Close()
	secretFile := filepath.Join(t.TempDir(), "secret")
	const wrong = "wrong-secret-value-1"
	if err := os.WriteFile(secretFile, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := app.DefaultConfig()
	cfg.NATSURL, cfg.OneLoginBaseURL, cfg.OneLoginClientID = bed.NATSURL(), bed.SimURL, bed.Sim.Config().ClientID
	cfg.OneLoginClientSecretFile, cfg.HTTPAddr, cfg.Version = secretFile, "127.0.0.1:0", "1.2.3"
	cfg.Jobs.NakBase, cfg.Jobs.NakMax = 100*time.Millisecond, 500*time.Millisecond
	cfg.Jobs.CredentialsRetryMin, cfg.Jobs.CredentialsRetryMax = 200*time.Millisecond, time.Second
	w, err := app.Run(ctx, cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), prometheus.NewRegistry())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = w.Wait()
	}()
	base := "http://" + w.HTTPAddr

	// Refused from the start: not ready, the cause named, the gauge at 0.
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, body := credGet(t, base+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "credentials refused")
	}, func() string { _, b := credGet(t, base+"/readyz"); return "readyz: " + b })
	if v := credMetric(t, base); v != "0" {
		t.Fatalf("mfa_onelogin_credentials_ok = %s while refused", v)
	}
	batch1, err := testenv.Mix(bed.Sim, 20, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := bed.Publish(batch1, ""); err != nil {
		t.Fatal(err)
	}
	// A few token retries later, still nothing taken.
	testenv.Eventually(t, 10*time.Second, func() bool { return bed.Sim.Stats().Requests["token"] >= 3 }, func() string { return "the worker stopped asking for a token" })
	if n := bed.Count(topology.StreamResults); n != 0 {
		t.Fatalf("%d results while the credentials are refused; no job may be taken", n)
	}
	if n := bed.Sim.ResourceCalls(); n != 0 {
		t.Fatalf("%d OneLogin calls without a token", n)
	}

	// The operator fixes the file: jobs resume, all succeed.
	if err := os.WriteFile(secretFile, []byte(bed.Sim.Config().ClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := bed.WaitCount(topology.StreamResults, len(batch1), 30*time.Second); err != nil {
		t.Fatalf("%v; log:\n%s", err, credTail(logs.String()))
	}
	if code, body := credGet(t, base+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz after the fix: %d %s", code, body)
	}
	if v := credMetric(t, base); v != "1" {
		t.Fatalf("mfa_onelogin_credentials_ok = %s after the fix", v)
	}

	// Rotation under a running worker: jobs in flight hit the refusal.
	if err := os.WriteFile(secretFile, []byte(wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bed.Sim.ExpireTokens()
	batch2, err := testenv.Mix(bed.Sim, 20, 500)
	if err != nil {
		t.Fatal(err)
	}
	if err := bed.Publish(batch2, ""); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, _ := credGet(t, base+"/readyz")
		return code == http.StatusServiceUnavailable
	}, func() string { return "readyz stayed ready with a refused secret" })
	if v := credMetric(t, base); v != "0" {
		t.Fatalf("mfa_onelogin_credentials_ok = %s after the rotation", v)
	}
	if err := os.WriteFile(secretFile, []byte(bed.Sim.Config().ClientSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := bed.WaitCount(topology.StreamResults, len(batch1)+len(batch2), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	results, err := bed.Results()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Outcome != job.Succeeded && r.Outcome != job.Noop {
			t.Errorf("job %s ended %s %+v", r.JobID, r.Outcome, r.Error)
		}
	}
	if n := bed.Count(topology.StreamDLQ); n != 0 {
		t.Errorf("%d dead letters", n)
	}
	for _, s := range []string{wrong, bed.Sim.Config().ClientSecret} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log holds a client secret")
		}
	}
	// The rotation reached jobs mid-flight (not only the token prober).
	if !strings.Contains(logs.String(), "refuses the worker's credentials") || !strings.Contains(logs.String(), "job will be retried") {
		t.Errorf("no job met the refusal mid-flight; log:\n%s", credTail(logs.String()))
	}
}

// credTail is the end of a log, for a failure message.
func credTail(s string) string {
	if len(s) > 6000 {
		return s[len(s)-6000:]
	}
	return s
}
