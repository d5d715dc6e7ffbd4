package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/testenv/leak"
)

func TestMain(m *testing.M) {
	leak.VerifyTestMain(m)
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
	emptyFile := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(emptyFile, []byte("\n"), 0o600); err != nil {
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
		{"empty base URL is unset", func(c *Config) { c.OneLoginSubdomain = ""; c.OneLoginBaseURL = "  " }, "ONELOGIN_SUBDOMAIN"},
		{"plain http to a remote host", func(c *Config) { c.OneLoginBaseURL = "http://onelogin.example.com" }, "ONELOGIN_BASE_URL"},
		{"nkey with user", func(c *Config) { c.NATSNKey = "/x.nk"; c.NATSUser, c.NATSPassword = "u", "p" }, "NATS_NKEY"},
		{"creds with nkey", func(c *Config) { c.NATSCreds = "/x.creds"; c.NATSNKey = "/x.nk" }, "NATS_CREDS"},
		{"creds with user", func(c *Config) { c.NATSCreds = "/x.creds"; c.NATSUser, c.NATSPassword = "u", "p" }, "NATS_CREDS"},
		{"bad log level", func(c *Config) { c.LogLevel = "loud" }, "WORKER_LOG_LEVEL"},
		{"empty secret file", func(c *Config) { c.OneLoginClientSecret = ""; c.OneLoginClientSecretFile = emptyFile }, "ONELOGIN_CLIENT_SECRET_FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil {
				err = c.Load()
			}
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
	if err := c.Validate(); err != nil || c.OneLoginClientSecret != "" {
		t.Fatalf("Validate read the secret file (it does no I/O): %v, %q", err, c.OneLoginClientSecret)
	}
	if err := c.Load(); err != nil || c.OneLoginClientSecret != "from-file" {
		t.Fatalf("secret file: %v, %q", err, c.OneLoginClientSecret)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	c := validConfig()
	c.NATSURL = "nats://svc:hunter2-pw@nats 1:4222"
	c.OneLoginClientID = ""
	c.Jobs.Concurrency = 5000
	c.Topology.Replicas = 2
	err := c.Validate()
	if err == nil {
		t.Fatal("passed")
	}
	for _, want := range []string{"NATS_URL:", "ONELOGIN_CLIENT_ID:", "WORKER_CONCURRENCY:", "WORKER_STREAM_REPLICAS:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("password printed: %q", err)
	}
}

func TestConfigAllowsInsecureHTTPOnlyWhenAsked(t *testing.T) {
	for _, tc := range []struct {
		url   string
		allow bool
		ok    bool
	}{
		{"http://127.0.0.1:8089", false, true},
		{"http://localhost:8089", false, true},
		{"http://[::1]:8089", false, true},
		{"http://sim.internal:8089", false, false},
		{"http://sim.internal:8089", true, true},
		{"https://acme.onelogin.com", false, true},
	} {
		c := validConfig()
		c.OneLoginBaseURL, c.OneLoginAllowInsecureHTTP = tc.url, tc.allow
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s allow=%v: %v", tc.url, tc.allow, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	got := RedactURL("nats://a:4222,nats://u:secret-pw@b:4222,nats://tok@c:4222")
	if strings.Contains(got, "secret-pw") || !strings.Contains(got, "nats://a:4222") || !strings.Contains(got, "u:xxxxx@b:4222") {
		t.Errorf("redacted: %s", got)
	}
}

func TestDefaultConfigIsValidAndMatchesTheREADME(t *testing.T) {
	c := DefaultConfig()
	c.NATSURL, c.OneLoginSubdomain, c.OneLoginClientID, c.OneLoginClientSecret = "nats://127.0.0.1:4222", "acme", "id", "s"
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	rows := readmeSettingRows(t)
	d := DefaultConfig()
	for _, s := range Settings(&d) {
		row, ok := rows[s.Env]
		if !ok {
			t.Errorf("README's settings table has no row for %s", s.Env)
			continue
		}
		if def := FormatDefault(s.Value); def != "" && def != "0" && def != "false" && !strings.Contains(row, def) {
			t.Errorf("README's row of %s does not show its default %s: %s", s.Env, def, row)
		}
	}
}

// newBed is the test bed (JetStream, the simulator) of one test.
func newBed(t *testing.T, simCfg simulator.Config) *testenv.Bed {
	t.Helper()
	bed, err := testenv.NewBed(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bed.Close)
	return bed
}

// startWorker runs the production wiring against a fresh bed, waits until
// it is ready, and returns it with the bed's NATS URL.
func startWorker(t *testing.T) (*Worker, string) {
	t.Helper()
	bed := newBed(t, simulator.Config{})
	return serve(t, workerConfig(bed, 10*time.Second)), bed.NATSURL()
}

// serve runs a worker with cfg until the test ends and waits until it is
// ready.
func serve(t *testing.T, cfg Config) *Worker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := Run(ctx, cfg, quiet(), prometheus.NewRegistry())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := w.Wait(); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	if err := testenv.WaitHTTP("http://"+w.HTTPAddr+"/readyz", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return w
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

func TestRunRunsJobs(t *testing.T) {
	_, nurl := startWorker(t)
	m, err := testenv.RoundTrip(nurl, "offboard", `{"id":"run-1","type":"offboard","user_id":5}`, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "mfa.results.offboard.noop" {
		t.Fatalf("result on %s: %s", m.Subject, m.Data)
	}
}

func TestQueryService(t *testing.T) {
	_, nurl := startWorker(t)
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
	err = json.Unmarshal(ping.Data, &info)
	// Each endpoint is registered once per concurrent answer, on one subject.
	subjects := map[string]bool{}
	for _, e := range info.Endpoints {
		subjects[e.Subject] = true
	}
	if err != nil || info.Name != "mfa" || info.Version != "1.2.3" || len(subjects) != 5 || !subjects["mfa.query.leavers"] {
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
	// The job query answers from the ledger; a bad request is an error
	// with the micro error headers set.
	r = ask("mfa.query.job", `{"job_id": "never-published"}`)
	if d, ok := r["data"].(map[string]any); !ok || d["state"] != "unknown" || d["job_id"] != "never-published" {
		t.Fatalf("job query: %v", r)
	}
	m, err := nc.Request("mfa.query.job", []byte(`{"job_id": ""}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Nats-Service-Error-Code") != "400" || !strings.Contains(string(m.Data), `"code":"invalid_id"`) {
		t.Fatalf("bad job query: %v %s", m.Header, m.Data)
	}
	// A person named as HR knows them.
	r = ask("mfa.query.available_factors", `{"user": {"email": "USER12@example.com"}}`)
	if f, ok := r["data"].([]any); !ok || len(f) != 4 {
		t.Fatalf("available factors by email: %v", r)
	}
	r = ask("mfa.query.enrolled_factors", `{"user": {"external_id": "nobody"}}`)
	if e, ok := r["error"].(map[string]any); !ok || e["code"] != job.CodeUserNotFound || strings.Contains(fmt.Sprint(e["message"]), "nobody") {
		t.Fatalf("unknown person: %v", r)
	}
	r = ask("mfa.query.enrolled_factors", `{"user_id": 12, "user": {"email": "user12@example.com"}}`)
	if e, ok := r["error"].(map[string]any); !ok || e["code"] != job.CodeInvalidUserID {
		t.Fatalf("both user_id and user: %v", r)
	}
	// A person's history: a job by email, then the history by email and by
	// id, indexed from the result stream.
	if _, err := testenv.RoundTrip(nurl, "offboard", `{"id":"hist-1","type":"offboard","user":{"email":"user12@example.com"}}`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`{"user": {"email": "user12@example.com"}}`, `{"user_id": 12}`, `{"user": {"username": "user12"}}`} {
		var entries []any
		testenv.Eventually(t, 10*time.Second, func() bool {
			r = ask("mfa.query.history", q)
			entries, _ = r["data"].([]any)
			return len(entries) == 1
		}, func() string { return fmt.Sprintf("history %s: %v", q, r) })
		e := entries[0].(map[string]any)
		if e["job_id"] != "hist-1" || e["user_id"].(float64) != 12 || e["outcome"] != "noop" {
			t.Fatalf("history %s: %v", q, e)
		}
	}
}

// shutdownWorld is a bed with a slow simulator shared by workers.
func shutdownWorld(t *testing.T, latency time.Duration) *testenv.Bed {
	t.Helper()
	bed := newBed(t, simulator.Config{})
	bed.Sim.SetFaults(simulator.Faults{Latency: latency})
	return bed
}

func runWorker(t *testing.T, bed *testenv.Bed, grace time.Duration) (*Worker, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := Run(ctx, workerConfig(bed, grace), quiet(), prometheus.NewRegistry())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return w, cancel
}

// workerConfig is the configuration of a worker on bed with the given
// shutdown grace and short naks.
func workerConfig(bed *testenv.Bed, grace time.Duration) Config {
	return Config{
		NATSURL: bed.NATSURL(), OneLoginBaseURL: bed.SimURL, OneLoginClientID: bed.Sim.Config().ClientID,
		OneLoginClientSecret: bed.Sim.Config().ClientSecret, HTTPAddr: "127.0.0.1:0", Version: "1.2.3",
		Jobs: jobs.Config{ShutdownGrace: grace, NakBase: 50 * time.Millisecond, NakMax: 100 * time.Millisecond},
	}
}

// offboardsInFlight publishes n offboard jobs (ids prefix-0...) for users
// from base on, one factor each, and returns once every one of them is
// inside its first OneLogin call.
func offboardsInFlight(t *testing.T, bed *testenv.Bed, prefix string, base int64, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		user := base + int64(i)
		if _, err := bed.Sim.EnrollDevice(user, "Google Authenticator", "GA", true); err != nil {
			t.Fatal(err)
		}
		if err := testenv.PublishOne(context.Background(), bed.JS, "offboard", testenv.Body(fmt.Sprintf("%s-%d", prefix, i), "offboard", user, nil), ""); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return bed.Sim.Stats().Requests["enrolled_factors"] >= n }, func() string {
		return fmt.Sprintf("only %d of %d jobs reached OneLogin", bed.Sim.Stats().Requests["enrolled_factors"], n)
	})
}

// resultsByJob lists the outcomes published per job id.
func resultsByJob(t *testing.T, bed *testenv.Bed) map[string][]string {
	t.Helper()
	rs, err := bed.Results()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, r := range rs {
		out[r.JobID] = append(out[r.JobID], string(r.Outcome))
	}
	return out
}

func TestGracefulShutdownLetsRunningJobsFinish(t *testing.T) {
	bed := shutdownWorld(t, 400*time.Millisecond)
	w, stop := runWorker(t, bed, 10*time.Second)
	// Stop while the jobs are inside their OneLogin calls.
	offboardsInFlight(t, bed, "g", 100, 5)
	stop()
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	rs := resultsByJob(t, bed)
	for i := 0; i < 5; i++ {
		if got := rs[fmt.Sprintf("g-%d", i)]; len(got) != 1 || got[0] != "succeeded" {
			t.Errorf("g-%d: results %v", i, got)
		}
	}
}

func TestShutdownPastGraceNaksAndAFreshWorkerFinishes(t *testing.T) {
	bed := shutdownWorld(t, 1500*time.Millisecond)
	sim := bed.Sim
	w, stop := runWorker(t, bed, 100*time.Millisecond)
	offboardsInFlight(t, bed, "n", 200, 3)
	stop()
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	if rs := resultsByJob(t, bed); len(rs) != 0 {
		t.Fatalf("jobs cut off by the shutdown published results: %v", rs)
	}
	sim.SetFaults(simulator.Faults{})
	w2, stop2 := runWorker(t, bed, 10*time.Second)
	_ = testenv.WaitFor(20*time.Second, func() bool { return len(resultsByJob(t, bed)) >= 3 }, func() string { return "results" })
	stop2()
	if err := w2.Wait(); err != nil {
		t.Fatal(err)
	}
	rs := resultsByJob(t, bed)
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

// readmeSettingRows returns the README's table rows by the setting (an
// upper-case name in the row's first cell) they describe.
func readmeSettingRows(t *testing.T) map[string]string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, l := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(l, "| `") {
			for _, f := range strings.Split(strings.SplitN(l, "|", 3)[1], "`") {
				if f = strings.TrimSpace(f); f != "" && f == strings.ToUpper(f) && !strings.ContainsAny(f, ", /") {
					rows[f] = l
				}
			}
		}
	}
	return rows
}
