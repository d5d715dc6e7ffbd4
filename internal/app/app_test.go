package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("time.Sleep"),
	)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func validConfig() Config {
	return Config{
		NATSURL: "nats://127.0.0.1:4222", OneLoginSubdomain: "acme",
		OneLoginClientID: "id", OneLoginClientSecret: "s3cr3t-value", HTTPAddr: ":9464",
	}
}

func TestConfigValidateNamesTheSetting(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		setting string
	}{
		{"no NATS", func(c *Config) { c.NATSURL = "" }, "NATS_URL"},
		{"bad NATS", func(c *Config) { c.NATSURL = "localhost 4222" }, "NATS_URL"},
		{"user without password", func(c *Config) { c.NATSUser = "u" }, "NATS_USER/NATS_PASSWORD"},
		{"missing creds file", func(c *Config) { c.NATSCreds = "/nonexistent/x.creds" }, "NATS_CREDS"},
		{"no OneLogin account", func(c *Config) { c.OneLoginSubdomain = "" }, "ONELOGIN_SUBDOMAIN"},
		{"subdomain with dots", func(c *Config) { c.OneLoginSubdomain = "acme.onelogin.com" }, "ONELOGIN_SUBDOMAIN"},
		{"bad base URL", func(c *Config) { c.OneLoginBaseURL = "ftp://x" }, "ONELOGIN_BASE_URL"},
		{"no client id", func(c *Config) { c.OneLoginClientID = "" }, "ONELOGIN_CLIENT_ID"},
		{"no secret", func(c *Config) { c.OneLoginClientSecret = "" }, "ONELOGIN_CLIENT_SECRET"},
		{"unreadable secret file", func(c *Config) { c.OneLoginClientSecret = ""; c.OneLoginClientSecretFile = "/nonexistent" }, "ONELOGIN_CLIENT_SECRET_FILE"},
		{"bad http addr", func(c *Config) { c.HTTPAddr = "9464" }, "WORKER_HTTP_ADDR"},
		{"concurrency", func(c *Config) { c.Jobs.Concurrency = 5000 }, "WORKER_CONCURRENCY"},
		{"max deliver", func(c *Config) { c.Jobs.MaxDeliver = -1 }, "WORKER_MAX_DELIVER"},
		{"ack wait", func(c *Config) { c.Jobs.AckWait = 100 * time.Millisecond }, "WORKER_ACK_WAIT"},
		{"stream replicas", func(c *Config) { c.Topology.Replicas = 2 }, "WORKER_STREAM_REPLICAS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !IsConfigError(err) || !strings.HasPrefix(err.Error(), tc.setting+":") {
				t.Fatalf("err = %v, want one naming %s", err, tc.setting)
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one secret-free line: %q", err)
			}
		})
	}
	c := validConfig()
	c.OneLoginClientSecret, c.OneLoginClientSecretFile = "", secretFile
	if err := c.Validate(); err != nil || c.OneLoginClientSecret != "from-file" {
		t.Fatalf("secret file: %v, %q", err, c.OneLoginClientSecret)
	}
}

func startDev(t *testing.T) (*Worker, string, context.CancelFunc, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out strings.Builder
	start := time.Now()
	w, err := Dev(ctx, DevConfig{DataDir: t.TempDir(), NATSPort: -1, SimAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Version: "1.2.3", Out: &out}, quiet(), prometheus.NewRegistry())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	// Ready: /readyz answers 200.
	for {
		resp, err := http.Get("http://" + w.HTTPAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(start) > 10*time.Second {
			cancel()
			t.Fatal("dev not ready in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ready := time.Since(start)
	nurl := ""
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "NATS" {
			nurl = f[2]
		}
	}
	if nurl == "" {
		cancel()
		t.Fatalf("banner names no NATS URL:\n%s", out.String())
	}
	t.Cleanup(func() {
		cancel()
		if err := w.Wait(); err != nil {
			t.Errorf("dev: %v", err)
		}
	})
	return w, nurl, cancel, ready
}

// resultsClient connects to NATS and subscribes to every result.
func resultsClient(t *testing.T, url string) (*nats.Conn, jetstream.JetStream, *nats.Subscription) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	sub, err := nc.SubscribeSync("mfa.results.>")
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, sub
}

func TestDevIsReadyQuicklyAndRunsJobs(t *testing.T) {
	_, nurl, _, ready := startDev(t)
	t.Logf("dev ready in %v", ready)
	if ready > 2*time.Second {
		t.Errorf("dev took %v to be ready; the promise is under 2s", ready)
	}
	_, js, sub := resultsClient(t, nurl)
	if _, err := js.Publish(context.Background(), "mfa.jobs.offboard", []byte(`{"id":"dev-1","type":"offboard","user_id":5}`)); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "mfa.results.offboard.noop" {
		t.Fatalf("result on %s: %s", m.Subject, m.Data)
	}
}

func TestQueryService(t *testing.T) {
	_, nurl, _, _ := startDev(t)
	nc, err := nats.Connect(nurl)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Discoverable as a micro service named mfa.
	ping, err := nc.Request("$SRV.INFO.mfa", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Name      string `json:"name"`
		Version   string `json:"version"`
		Endpoints []struct {
			Subject string `json:"subject"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(ping.Data, &info); err != nil || info.Name != "mfa" || info.Version != "1.2.3" || len(info.Endpoints) != 2 {
		t.Fatalf("service info %s: %v", ping.Data, err)
	}
	ask := func(subject, body string) map[string]any {
		t.Helper()
		m, err := nc.Request(subject, []byte(body), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r map[string]any
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("%s: %s", subject, m.Data)
		}
		return r
	}
	r := ask("mfa.query.available_factors", `{"user_id": 12}`)
	if f, ok := r["data"].([]any); !ok || len(f) != 4 {
		t.Fatalf("available factors: %v", r)
	}
	r = ask("mfa.query.enrolled_factors", `{"user_id": 12}`)
	if d, ok := r["data"].([]any); !ok || len(d) != 0 {
		t.Fatalf("enrolled factors: %v", r)
	}
	r = ask("mfa.query.enrolled_factors", `{"user_id": 99999999999}`)
	if e, ok := r["error"].(map[string]any); !ok || e["code"] != "user_not_found" || e["http_status"].(float64) != 404 {
		t.Fatalf("unknown user: %v", r)
	}
	r = ask("mfa.query.enrolled_factors", `{"user":"x"}`)
	if e, ok := r["error"].(map[string]any); !ok || e["code"] != job.CodeInvalidUserID {
		t.Fatalf("bad request: %v", r)
	}
}

// shutdownWorld is a NATS server and a slow simulator shared by workers.
func shutdownWorld(t *testing.T, latency time.Duration) (*broker.Server, *simulator.Server, string) {
	t.Helper()
	srv, err := broker.Start(broker.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	sim := simulator.New(simulator.Config{})
	sim.SetFaults(simulator.Faults{Latency: latency})
	hs := httptest.NewServer(sim)
	t.Cleanup(hs.Close)
	return srv, sim, hs.URL
}

func runWorker(t *testing.T, srv *broker.Server, sim *simulator.Server, simURL string, grace time.Duration) (*Worker, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{
		NATSURL: srv.ClientURL(), OneLoginBaseURL: simURL, OneLoginClientID: sim.Config().ClientID,
		OneLoginClientSecret: sim.Config().ClientSecret, HTTPAddr: "127.0.0.1:0", Version: "test",
		Jobs: jobs.Config{ShutdownGrace: grace, NakBase: 50 * time.Millisecond, NakMax: 100 * time.Millisecond},
	}
	w, err := Run(ctx, cfg, quiet(), prometheus.NewRegistry())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return w, cancel
}

// offboardsInFlight publishes n offboard jobs (ids prefix-0...) for users
// from base on, one factor each, and returns once every one of them is
// inside its first OneLogin call.
func offboardsInFlight(t *testing.T, srv *broker.Server, sim *simulator.Server, prefix string, base int64, n int) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	for i := 0; i < n; i++ {
		user := base + int64(i)
		if _, err := sim.EnrollDevice(user, "Google Authenticator", "GA", true); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf(`{"id":"%s-%d","type":"offboard","user_id":%d}`, prefix, i, user)
		if _, err := js.Publish(context.Background(), "mfa.jobs.offboard", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); sim.Stats().Requests["enrolled_factors"] < n; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d jobs reached OneLogin", sim.Stats().Requests["enrolled_factors"], n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return js
}

func resultsByJob(t *testing.T, js jetstream.JetStream) map[string][]string {
	t.Helper()
	s, err := js.Stream(context.Background(), jobs.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(context.Background())
	out := map[string][]string{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			continue
		}
		var r job.Result
		_ = json.Unmarshal(m.Data, &r)
		out[r.JobID] = append(out[r.JobID], string(r.Outcome))
	}
	return out
}

func TestGracefulShutdownLetsRunningJobsFinish(t *testing.T) {
	srv, sim, url := shutdownWorld(t, 400*time.Millisecond)
	w, stop := runWorker(t, srv, sim, url, 10*time.Second)
	// Stop while the jobs are inside their OneLogin calls.
	js := offboardsInFlight(t, srv, sim, "g", 100, 5)
	stop()
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	rs := resultsByJob(t, js)
	for i := 0; i < 5; i++ {
		if got := rs[fmt.Sprintf("g-%d", i)]; len(got) != 1 || got[0] != "succeeded" {
			t.Errorf("g-%d: results %v", i, got)
		}
	}
}

func TestShutdownPastGraceNaksAndAFreshWorkerFinishes(t *testing.T) {
	srv, sim, url := shutdownWorld(t, 1500*time.Millisecond)
	w, stop := runWorker(t, srv, sim, url, 100*time.Millisecond)
	js := offboardsInFlight(t, srv, sim, "n", 200, 3)
	stop()
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	if rs := resultsByJob(t, js); len(rs) != 0 {
		t.Fatalf("jobs cut off by the shutdown published results: %v", rs)
	}
	sim.SetFaults(simulator.Faults{})
	w2, stop2 := runWorker(t, srv, sim, url, 10*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for len(resultsByJob(t, js)) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop2()
	if err := w2.Wait(); err != nil {
		t.Fatal(err)
	}
	rs := resultsByJob(t, js)
	removes := 0
	for _, e := range sim.Effects() {
		if e.Kind == simulator.EffectRemove {
			removes++
		}
	}
	for i := 0; i < 3; i++ {
		if got := rs[fmt.Sprintf("n-%d", i)]; len(got) != 1 || got[0] != "succeeded" && got[0] != "noop" {
			t.Errorf("n-%d: results %v", i, got)
		}
	}
	if removes != 3 {
		t.Errorf("%d removals for 3 devices", removes)
	}
}
