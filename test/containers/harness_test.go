//go:build containers

package containers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	mobynet "github.com/moby/moby/api/types/network"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

var (
	workerBin = envOr("MFA_WORKER_BIN", "../../bin/worker")
	natsImage = envOr("MFA_NATS_IMAGE", "mfa-nats:latest")
	summary   = envOr("MFA_RELIABILITY_SUMMARY", "../../bin/reliability-summary.md")
	// jobsPerScenario is the fixed workload of every scenario.
	jobsPerScenario = 2000
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

var (
	figMu   sync.Mutex
	figRows []figures
)

func TestMain(m *testing.M) {
	if os.Getenv("TESTCONTAINERS_RYUK_DISABLED") == "" {
		// There is no registry to pull the reaper from; every test removes
		// its own containers and networks.
		os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	if _, err := os.Stat(workerBin); err != nil {
		fmt.Fprintf(os.Stderr, "worker binary %s missing: run make test-containers\n", workerBin)
		os.Exit(1)
	}
	abs, _ := filepath.Abs(workerBin)
	workerBin = abs
	start := time.Now()
	code := m.Run()
	writeSummary(time.Since(start))
	os.Exit(code)
}

// figures are what a scenario reports.
type figures struct {
	Scenario          string
	Jobs              int
	Results           int
	DuplicatedEffects int
	LostJobs          int
	ExtraResults      int
	LedgerMismatches  int
	Unacked           int
	Outcomes          map[string]int
	Duration          time.Duration
	Note              string
}

func (f figures) String() string {
	var oc []string
	for k, v := range f.Outcomes {
		oc = append(oc, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(oc)
	return fmt.Sprintf("%s: jobs %d, results %d, duplicated effects %d, lost jobs %d, extra results %d, ledger mismatches %d, unacked %d, duration %s (%s)",
		f.Scenario, f.Jobs, f.Results, f.DuplicatedEffects, f.LostJobs, f.ExtraResults, f.LedgerMismatches, f.Unacked, f.Duration.Round(100*time.Millisecond), strings.Join(oc, ", "))
}

func writeSummary(total time.Duration) {
	figMu.Lock()
	defer figMu.Unlock()
	if len(figRows) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Container fault suite, %s, %d scenarios in %s\n\n", time.Now().UTC().Format(time.RFC3339), len(figRows), total.Round(time.Second))
	b.WriteString("| scenario | jobs | results | duplicated effects | lost jobs | extra results | ledger mismatches | unacked | outcomes | duration | notes |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range figRows {
		var oc []string
		for k, v := range f.Outcomes {
			oc = append(oc, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(oc)
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %s | %s | %s |\n", f.Scenario, f.Jobs, f.Results, f.DuplicatedEffects, f.LostJobs, f.ExtraResults, f.LedgerMismatches, f.Unacked, strings.Join(oc, ", "), f.Duration.Round(time.Second), f.Note)
	}
	_ = os.MkdirAll(filepath.Dir(summary), 0o755)
	if err := os.WriteFile(summary, []byte(b.String()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "write summary:", err)
	}
	fmt.Print(b.String())
}

// world is one scenario's setting.
type world struct {
	t       *testing.T
	ctx     context.Context
	sim     *simulator.Server
	simURL  string
	nodes   []*natsNode
	natsURL string
	nc      *nats.Conn
	js      jetstream.JetStream
	workers []*workerProc
	start   time.Time
}

func newWorld(t *testing.T, simCfg simulator.Config) *world {
	t.Helper()
	sim := simulator.New(simCfg)
	hs := httptest.NewServer(sim)
	t.Cleanup(hs.Close)
	return &world{t: t, ctx: context.Background(), sim: sim, simURL: hs.URL, start: time.Now()}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// natsNode is a NATS server container with a fixed host port, so that it
// keeps its address across a stop and start.
type natsNode struct {
	name string
	port int
	c    testcontainers.Container
}

func (w *world) startNATS(name string, network string, args ...string) *natsNode {
	w.t.Helper()
	port := freePort(w.t)
	cmd := append([]string{"--jetstream", "--store_dir", "/data", "--server_name", name, "-p", "4222"}, args...)
	req := testcontainers.ContainerRequest{
		Image:        natsImage,
		Cmd:          cmd,
		ExposedPorts: []string{"4222/tcp"},
		WaitingFor:   wait.ForLog("Server is ready").WithStartupTimeout(60 * time.Second),
		HostConfigModifier: func(hc *container.HostConfig) {
			hc.PortBindings = mobynet.PortMap{
				mobynet.MustParsePort("4222/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}},
			}
		},
	}
	if network != "" {
		req.Networks = []string{network}
		req.NetworkAliases = map[string][]string{network: {name}}
	}
	c, err := testcontainers.GenericContainer(w.ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	if err != nil {
		w.t.Fatalf("start NATS %s: %v", name, err)
	}
	n := &natsNode{name: name, port: port, c: c}
	w.t.Cleanup(func() {
		if err := c.Terminate(context.Background()); err != nil {
			w.t.Logf("terminate %s: %v", name, err)
		}
	})
	w.nodes = append(w.nodes, n)
	return n
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// waitServing waits until a restarted node accepts a new client and its
// JetStream answers: the container runtime may accept (and drop) a
// connection on the published port before the server listens.
func (n *natsNode) waitServing(t *testing.T, ctx context.Context) {
	t.Helper()
	err := testenv.WaitFor(60*time.Second, func() bool {
		nc, err := nats.Connect(n.url(), nats.Timeout(time.Second))
		if err != nil {
			return false
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return false
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err = js.AccountInfo(actx)
		return err == nil
	}, func() string { return "NATS serving again" })
	if err != nil {
		t.Fatalf("NATS at %s after its restart: %v", n.url(), err)
	}
}

// connect opens the test's own connection to every node.
func (w *world) connect() {
	w.t.Helper()
	var urls []string
	for _, n := range w.nodes {
		urls = append(urls, n.url())
	}
	w.natsURL = strings.Join(urls, ",")
	nc, err := nats.Connect(w.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	w.nc, w.js = nc, js
	// Wait until JetStream answers (a cluster needs a meta leader).
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(w.ctx, 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("JetStream not available: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// workerProc is the worker binary running as a host process.
type workerProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// workerEnv is the environment every worker of the world gets.
func (w *world) workerEnv(extra ...string) []string {
	cfg := w.sim.Config()
	env := []string{
		"NATS_URL=" + w.natsURL,
		"ONELOGIN_BASE_URL=" + w.simURL,
		"ONELOGIN_CLIENT_ID=" + cfg.ClientID,
		"ONELOGIN_CLIENT_SECRET=" + cfg.ClientSecret,
		"WORKER_HTTP_ADDR=127.0.0.1:0",
		"WORKER_CONCURRENCY=16",
		"WORKER_ACK_WAIT=6s",
		"WORKER_LEASE=6s",
		"WORKER_RETRY_MAX_DELAY=5s",
		"WORKER_LOG_LEVEL=info",
		// The fault scenarios publish thousands of offboards and removes
		// without a source: the blast-radius guard (50 an hour per source
		// by default) would hold nearly all of them. Scenario h turns it
		// on (later settings override these).
		"WORKER_GUARD_LIMIT=0",
		"PATH=" + os.Getenv("PATH"),
	}
	return append(env, extra...)
}

func (w *world) startWorker(name string, extra ...string) *workerProc {
	w.t.Helper()
	return w.startProc(name, "run", w.workerEnv(extra...))
}

// startIngest starts `worker ingest` as a host process on the world's NATS
// with the settings in extra (source secret files, WORKER_RULES,
// INGEST_HTTP_ADDR).
func (w *world) startIngest(name string, extra ...string) *workerProc {
	w.t.Helper()
	env := []string{
		"NATS_URL=" + w.natsURL,
		"WORKER_HTTP_ADDR=127.0.0.1:0",
		"WORKER_LOG_LEVEL=info",
		"PATH=" + os.Getenv("PATH"),
	}
	return w.startProc(name, "ingest", append(env, extra...))
}

// startProc runs `worker <command>` with env, its output in a log file
// whose last lines a failed test prints; the test's cleanup ends it with
// SIGTERM.
func (w *world) startProc(name, command string, env []string) *workerProc {
	w.t.Helper()
	logPath := filepath.Join(os.TempDir(), fmt.Sprintf("mfa-%s-%s-%d.log", strings.ReplaceAll(w.t.Name(), "/", "_"), name, time.Now().UnixNano()))
	f, err := os.Create(logPath)
	if err != nil {
		w.t.Fatal(err)
	}
	cmd := exec.Command(workerBin, command)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	p := &workerProc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	w.workers = append(w.workers, p)
	w.t.Cleanup(func() {
		p.signal(syscall.SIGTERM, 30*time.Second)
		if w.t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				lines := strings.Split(string(b), "\n")
				if len(lines) > 40 {
					lines = lines[len(lines)-40:]
				}
				w.t.Logf("last lines of %s:\n%s", logPath, strings.Join(lines, "\n"))
			}
		}
	})
	return p
}

// signal sends sig and waits for the process to end.
func (p *workerProc) signal(sig syscall.Signal, wait time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(wait):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process with SIGKILL: no drain, no nak, no goodbye.
func (p *workerProc) kill() { p.signal(syscall.SIGKILL, 10*time.Second) }

// workload builds n jobs of the fault mix for users from base on, seeding
// the simulator so that every job has an effect to make, in random order.
func (w *world) workload(n int, base int64) []testenv.Job {
	w.t.Helper()
	out, err := testenv.FaultMix.Jobs(w.sim, n, base)
	if err != nil {
		w.t.Fatal(err)
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// provision creates the streams the way a worker would, so that jobs can be
// published before any worker runs.
func (w *world) provision(replicas int) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, 60*time.Second)
	defer cancel()
	for {
		_, err := topology.Provision(ctx, w.js, topology.Config{Replicas: replicas}, jobs.Config{AckWait: 6 * time.Second, Lease: 6 * time.Second, NakMax: 5 * time.Second}.Consumers())
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			w.t.Fatalf("provision: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (w *world) publish(js []testenv.Job) {
	w.t.Helper()
	if err := testenv.Publish(w.js, js, ""); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) count(stream string) int { return testenv.Count(w.js, stream) }

// waitResults waits until at least n results are stored.
func (w *world) waitResults(n int, timeout time.Duration) {
	w.t.Helper()
	err := testenv.WaitFor(timeout, func() bool { return w.count(topology.StreamResults) >= n }, func() string {
		return fmt.Sprintf("%d of %d results", w.count(topology.StreamResults), n)
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

// verify waits for the run to end and checks the scenario's pass condition.
func (w *world) verify(name string, planned []testenv.Job, note string) figures {
	w.t.Helper()
	w.waitResults(len(planned), 8*time.Minute)
	// Let the last acks and any stray duplicate results land.
	deadline := time.Now().Add(2 * time.Minute)
	for w.unacked() > 0 && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
	}
	f := figures{Scenario: name, Jobs: len(planned), Duration: time.Since(w.start), Outcomes: map[string]int{}, Note: note}
	results := w.readResults()
	f.Results = 0
	for _, rs := range results {
		f.Results += len(rs)
	}
	var kv jetstream.KeyValue
	w.settled("open the ledger", func(ctx context.Context) (err error) {
		kv, err = w.js.KeyValue(ctx, topology.BucketLedger)
		return err
	})
	led := ledger.New(kv)
	for _, j := range planned {
		rs := results[j.ID]
		switch {
		case len(rs) == 0:
			f.LostJobs++
			w.t.Errorf("%s: no result", j.ID)
			continue
		case len(rs) > 1:
			f.ExtraResults += len(rs) - 1
			w.t.Errorf("%s: %d results", j.ID, len(rs))
		}
		f.Outcomes[string(rs[0].Outcome)]++
		if rs[0].Outcome != job.Succeeded && rs[0].Outcome != job.Noop {
			code := ""
			if rs[0].Error != nil {
				code = rs[0].Error.Code
			}
			f.Outcomes[string(rs[0].Outcome)+"/"+code]++
		}
		e, err := led.Get(w.ctx, j.ID)
		if err != nil || e.State != ledger.Finished || e.Outcome != string(rs[0].Outcome) {
			f.LedgerMismatches++
			if err == nil {
				w.t.Errorf("%s: ledger %s/%s, result %s", j.ID, e.State, e.Outcome, rs[0].Outcome)
			} else {
				w.t.Errorf("%s: ledger: %v", j.ID, err)
			}
		}
	}
	type key struct {
		req, kind string
		dev       int64
	}
	seen := map[key]int{}
	for _, e := range w.sim.Effects() {
		seen[key{e.RequestID, e.Kind, e.DeviceID}]++
	}
	for k, n := range seen {
		if n > 1 && k.kind == "mfa_token" {
			// Contract 1.1: a generate_token whose reply was lost is
			// retried (nobody saw the lost token, and it expires); the
			// job still has one result, checked above.
			w.t.Logf("job %s generated %d temporary tokens (a lost reply retried)", k.req, n)
			continue
		}
		if n > 1 {
			f.DuplicatedEffects += n - 1
			w.t.Errorf("job %s made effect %s on device %d %d times", k.req, k.kind, k.dev, n)
		}
	}
	f.Unacked = w.unacked()
	if f.Unacked != 0 {
		w.t.Errorf("%d job messages unacknowledged", f.Unacked)
	}
	w.t.Log(f.String())
	figMu.Lock()
	figRows = append(figRows, f)
	figMu.Unlock()
	return f
}

// unacked counts job messages still in the stream or pending on a consumer.
func (w *world) unacked() int {
	ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
	defer cancel()
	n := w.count(topology.StreamJobs)
	if n < 0 {
		return 1 << 30
	}
	for _, c := range []string{topology.ConsumerUrgent, topology.ConsumerNormal} {
		cons, err := w.js.Consumer(ctx, topology.StreamJobs, c)
		if err != nil {
			return 1 << 30
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return 1 << 30
		}
		n += info.NumAckPending + int(info.NumPending)
	}
	return n
}

// settled runs a read of the harness's own until it succeeds, for up to
// two minutes while the cluster settles: right after a server is killed,
// the JetStream API can answer "no responders" until a new leader is
// elected, which says nothing about the worker.
func (w *world) settled(what string, read func(ctx context.Context) error) {
	w.t.Helper()
	var last error
	testenv.Eventually(w.t, 2*time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
		defer cancel()
		last = read(ctx)
		return last == nil
	}, func() string { return fmt.Sprintf("%s: %v", what, last) })
}

// readResults reads every stored result, by job id.
func (w *world) readResults() map[string][]job.Result {
	w.t.Helper()
	var rs []job.Result
	w.settled("read the results", func(ctx context.Context) (err error) {
		rs, err = testenv.Results(ctx, w.js)
		return err
	})
	out := map[string][]job.Result{}
	for _, r := range rs {
		out[r.JobID] = append(out[r.JobID], r)
	}
	return out
}

// progress waits until the results reach frac of n.
func (w *world) progress(n int, frac float64) {
	w.t.Helper()
	w.waitResults(int(float64(n)*frac), 5*time.Minute)
}
