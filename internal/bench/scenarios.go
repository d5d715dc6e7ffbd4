package bench

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Unlimited is a simulator budget no benchmark reaches.
const Unlimited = 1 << 30

// FloorResult compares the worker with the bare consumer.
type FloorResult struct {
	Jobs          int
	Concurrency   int
	FloorRuns     []float64 // jobs/s
	WorkerRuns    []float64
	Floor, Worker float64 // medians
	Ratio         float64
}

// FloorVsWorker measures the floor and the worker (zero-latency simulator),
// runs times each, on fresh beds.
func FloorVsWorker(n, concurrency, runs int) (FloorResult, error) {
	res := FloorResult{Jobs: n, Concurrency: concurrency}
	for i := 0; i < runs; i++ {
		b, err := NewBed(simulator.Config{RateLimit: Unlimited})
		if err != nil {
			return res, err
		}
		f, err := Floor(b, n, concurrency)
		b.Close()
		if err != nil {
			return res, fmt.Errorf("floor: %w", err)
		}
		res.FloorRuns = append(res.FloorRuns, f)

		b, err = NewBed(simulator.Config{RateLimit: Unlimited})
		if err != nil {
			return res, err
		}
		mix, err := Mix(b.Sim, n, 1)
		if err != nil {
			b.Close()
			return res, err
		}
		w, _, err := Throughput(b, mix, jobs.Config{Concurrency: concurrency}, 1)
		b.Close()
		if err != nil {
			return res, fmt.Errorf("worker: %w", err)
		}
		res.WorkerRuns = append(res.WorkerRuns, w)
	}
	res.Floor, res.Worker = Median(res.FloorRuns), Median(res.WorkerRuns)
	res.Ratio = res.Worker / res.Floor
	return res, nil
}

// LatencyResult is the worker against a slow OneLogin.
type LatencyResult struct {
	Concurrency int
	Latency     time.Duration
	Jobs        int
	CallsPerJob float64
	Throughput  float64 // jobs/s
	Ideal       float64 // concurrency / (calls per job x latency)
	Ratio       float64
}

// LatencyBound runs n jobs of the mix against a simulator answering after
// latency, with the given concurrency.
func LatencyBound(n, concurrency int, latency time.Duration) (LatencyResult, error) {
	res := LatencyResult{Concurrency: concurrency, Latency: latency, Jobs: n}
	b, err := NewBed(simulator.Config{RateLimit: Unlimited})
	if err != nil {
		return res, err
	}
	defer b.Close()
	mix, err := Mix(b.Sim, n, 1)
	if err != nil {
		return res, err
	}
	b.Sim.SetFaults(simulator.Faults{Latency: latency})
	tp, _, err := Throughput(b, mix, jobs.Config{Concurrency: concurrency}, 1)
	if err != nil {
		return res, err
	}
	res.Throughput = tp
	res.CallsPerJob = float64(b.Sim.ResourceCalls()) / float64(n)
	res.Ideal = float64(concurrency) / (res.CallsPerJob * latency.Seconds())
	res.Ratio = res.Throughput / res.Ideal
	return res, nil
}

// BudgetResult is the worker against a spent budget.
type BudgetResult struct {
	Replicas   int
	Budget     int
	Window     time.Duration
	Windows    []int // calls counted in each full window
	Use        float64
	TooMany    int
	RateFailed int
	// UrgentDoneAt and NormalDoneAt: when the last urgent job and the
	// last normal job finished, from the start.
	UrgentDoneAt, NormalDoneAt time.Duration
	// NormalBeforeUrgent counts normal jobs finished before the last
	// urgent one.
	NormalBeforeUrgent int
	Urgent, Normal     int
}

// BudgetBound queues normal jobs ahead of urgent ones against a budget of
// budget calls per window, runs replicas for fullWindows whole windows and
// reports how the budget was spent and in what order jobs finished.
func BudgetBound(normal, urgent, budget int, window time.Duration, fullWindows, replicas int) (BudgetResult, error) {
	res := BudgetResult{Replicas: replicas, Budget: budget, Window: window, Urgent: urgent, Normal: normal}
	b, err := NewBed(simulator.Config{RateLimit: budget, RateWindow: window})
	if err != nil {
		return res, err
	}
	defer b.Close()
	var all []Job
	for i := 0; i < normal; i++ {
		id := fmt.Sprintf("n-%d", i)
		all = append(all, testenv.Of(id, "enroll", int64(100_000+i), map[string]any{"factor_id": 100001, "display_name": "Phone", "number": "+15551230000"}))
	}
	for i := 0; i < urgent; i++ {
		user := int64(200_000 + i)
		if _, err := b.Sim.EnrollDevice(user, "Google Authenticator", "GA", true); err != nil {
			return res, err
		}
		all = append(all, testenv.Of(fmt.Sprintf("u-%d", i), "offboard", user, nil))
	}
	cfg := jobs.Config{}
	if err := b.Provision(cfg); err != nil {
		return res, err
	}
	if err := b.Publish(all, ""); err != nil {
		return res, err
	}
	start := time.Now()
	var ws []*testenv.Worker
	for i := 0; i < replicas; i++ {
		w, err := b.StartWorker(cfg, workerOptions(replicas-1)) // WORKER_RATE_LIMIT_RESERVE as the README advises
		if err != nil {
			return res, err
		}
		ws = append(ws, w)
	}
	for len(b.Sim.Windows()) < fullWindows+1 && time.Since(start) < time.Duration(fullWindows+3)*window {
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range ws {
		_ = w.Stop()
	}
	wins := b.Sim.Windows()
	// The first window starts with the first call; the last may be cut
	// short by the stop. Count the whole ones.
	if len(wins) > fullWindows {
		wins = wins[:fullWindows]
	}
	total := 0
	for _, w := range wins {
		res.Windows = append(res.Windows, w.Used)
		total += w.Used
	}
	if len(wins) > 0 {
		res.Use = float64(total) / float64(len(wins)*budget)
	}
	res.TooMany = b.Sim.Stats().TooMany
	results, err := b.Results()
	if err != nil {
		return res, err
	}
	sort.Slice(results, func(i, j int) bool { return results[i].FinishedAt.Before(results[j].FinishedAt) })
	urgentLeft := urgent
	for _, r := range results {
		if r.Outcome == job.Failed && r.Error != nil && (r.Error.HTTPStatus == 429 || strings.Contains(r.Error.Message, "rate")) {
			res.RateFailed++
		}
		d := r.FinishedAt.Sub(start)
		if r.Type == job.TypeOffboard {
			res.UrgentDoneAt = d
			urgentLeft--
		} else {
			res.NormalDoneAt = d
			if urgentLeft > 0 {
				res.NormalBeforeUrgent++
			}
		}
	}
	return res, nil
}

// CallsResult is OneLogin calls per job of one type.
type CallsResult struct {
	Type      string
	Jobs      int
	PerJob    float64
	Naive     float64
	Endpoints map[string]float64 // calls per job by endpoint
}

// CallsPerJob runs n jobs of each type alone and counts OneLogin calls.
func CallsPerJob(n int) ([]CallsResult, error) {
	naive := map[string]float64{"enroll": 3, "activate": 1, "verify": 1, "remove": 1, "offboard": 3, "generate_token": 1}
	var out []CallsResult
	for _, typ := range []string{"enroll", "activate", "verify", "remove", "offboard", "generate_token"} {
		b, err := NewBed(simulator.Config{RateLimit: Unlimited})
		if err != nil {
			return nil, err
		}
		var js []Job
		for i := 0; i < n; i++ {
			user := int64(10_000 + i)
			id := fmt.Sprintf("%s-%d", typ, i)
			switch typ {
			case "enroll":
				js = append(js, testenv.Of(id, typ, user, map[string]any{"factor_name": "OneLogin SMS", "display_name": "Phone", "number": "+15551230000"}))
			case "activate", "remove":
				dev, _ := b.Sim.EnrollDevice(user, "OneLogin Voice", "Desk", true)
				js = append(js, testenv.Of(id, typ, user, map[string]any{"device_id": dev}))
			case "verify":
				dev, _ := b.Sim.EnrollDevice(user, "Google Authenticator", "GA", true)
				js = append(js, testenv.Of(id, typ, user, map[string]any{"device_id": dev, "otp_token": b.Sim.LastOTP(user, dev)}))
			case "offboard":
				b.Sim.EnrollDevice(user, "Google Authenticator", "GA", true)
				js = append(js, testenv.Of(id, typ, user, nil))
			case "generate_token":
				js = append(js, testenv.Of(id, typ, user, map[string]any{"reusable": true}))
			}
		}
		cfg := jobs.Config{AllowPlainTokens: true}
		if _, _, err := Throughput(b, js, cfg, 1); err != nil {
			b.Close()
			return nil, fmt.Errorf("%s: %w", typ, err)
		}
		st := b.Sim.Stats()
		r := CallsResult{Type: typ, Jobs: n, Naive: naive[typ], Endpoints: map[string]float64{}}
		for ep, c := range st.Requests {
			if ep == "rate_limit" {
				continue
			}
			r.Endpoints[ep] = float64(c) / float64(n)
			if ep != "token" {
				r.PerJob += float64(c) / float64(n)
			}
		}
		b.Close()
		out = append(out, r)
	}
	return out, nil
}

// MemoryResult is the worker process's memory with a large backlog.
type MemoryResult struct {
	Backlog   int
	Processed int
	RunFor    time.Duration
	PeakRSS   int64 // bytes, VmHWM of the worker process
}

// PeakRSS publishes backlog jobs, then runs the worker binary as its own
// process for runFor and reads its peak resident set size.
func PeakRSS(workerBin string, backlog int, runFor time.Duration) (MemoryResult, error) {
	res := MemoryResult{Backlog: backlog, RunFor: runFor}
	b, err := NewBed(simulator.Config{RateLimit: Unlimited})
	if err != nil {
		return res, err
	}
	defer b.Close()
	if err := b.Provision(jobs.Config{}); err != nil {
		return res, err
	}
	var js []Job
	for i := 0; i < backlog; i++ {
		// Offboard of users without factors: one call each, and a result.
		js = append(js, testenv.Of(fmt.Sprintf("m-%d", i), "offboard", int64(1+i), nil))
	}
	if err := b.Publish(js, ""); err != nil {
		return res, err
	}
	cmd := exec.Command(workerBin, "run")
	cmd.Env = []string{
		"NATS_URL=" + b.NATSURL(), "ONELOGIN_BASE_URL=" + b.SimURL,
		"ONELOGIN_CLIENT_ID=" + b.Sim.Config().ClientID, "ONELOGIN_CLIENT_SECRET=" + b.Sim.Config().ClientSecret,
		"WORKER_HTTP_ADDR=127.0.0.1:0", "WORKER_LOG_LEVEL=warn",
		// The backlog is offboards of one (empty) source: with counting on,
		// the blast-radius guard would hold all but 50 of them.
		"WORKER_GUARD_LIMIT=0",
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	time.Sleep(runFor)
	res.PeakRSS, err = vmHWM(cmd.Process.Pid)
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	res.Processed = b.Count(topology.StreamResults)
	return res, err
}

func vmHWM(pid int) (int64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "VmHWM:") {
			fields := strings.Fields(sc.Text())
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}

// DevReady starts `worker dev` runs times and returns the times until
// /readyz answered 200.
func DevReady(workerBin string, runs int) ([]time.Duration, error) {
	var out []time.Duration
	for i := 0; i < runs; i++ {
		dir, err := os.MkdirTemp("", "mfa-dev-*")
		if err != nil {
			return nil, err
		}
		httpAddr := freeAddr()
		cmd := exec.Command(workerBin, "dev", "--data-dir", dir, "--nats-port", "-1", "--sim-addr", "127.0.0.1:0", "--http-addr", httpAddr)
		start := time.Now()
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		var ready time.Duration
		for time.Since(start) < 20*time.Second {
			resp, err := http.Get("http://" + httpAddr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ready = time.Since(start)
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		os.RemoveAll(dir)
		if ready == 0 {
			return nil, fmt.Errorf("worker dev not ready in 20s")
		}
		out = append(out, ready)
	}
	return out, nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:19464"
	}
	defer l.Close()
	return l.Addr().String()
}
