package bench

import (
	"fmt"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// ExpensiveRun is one run of the expensive-input scenario: n bad jobs of
// one kind queued on the urgent lane ahead of one valid offboard.
type ExpensiveRun struct {
	Kind string // "none", "ordinary" (a wrong type, rejected by the schema) or "absurd" (1e999999)
	Bad  int
	// ValidLatency is from the worker's start to the valid job's result.
	ValidLatency time.Duration
	// CPU is the process's CPU time (user and system: worker, NATS server
	// and simulator together) from the worker's start until every job has
	// its result.
	CPU time.Duration
}

// ExpensiveResult compares absurd numbers with ordinary bad jobs.
type ExpensiveResult struct {
	Latency                 time.Duration // of OneLogin, per call
	Alone, Ordinary, Absurd ExpensiveRun
	// Few is the trust review's case: 20 absurd jobs ahead of the valid
	// one; FewRatio is its latency against Alone's.
	Few      ExpensiveRun
	FewRatio float64
	// AddedCPU is Absurd.CPU - Ordinary.CPU: what the absurdity costs.
	AddedCPU time.Duration
	// LatencyRatio is Absurd.ValidLatency / Ordinary.ValidLatency: the
	// valid job behind absurd numbers against behind ordinary bad jobs.
	LatencyRatio float64
}

// ExpensiveInput runs the scenario with n bad jobs and OneLogin answering
// after latency.
func ExpensiveInput(n int, latency time.Duration) (ExpensiveResult, error) {
	res := ExpensiveResult{Latency: latency}
	var err error
	if res.Alone, err = expensiveRun("none", 0, latency); err != nil {
		return res, err
	}
	if res.Ordinary, err = expensiveRun("ordinary", n, latency); err != nil {
		return res, err
	}
	if res.Absurd, err = expensiveRun("absurd", n, latency); err != nil {
		return res, err
	}
	if res.Few, err = expensiveRun("absurd", 20, latency); err != nil {
		return res, err
	}
	res.FewRatio = res.Few.ValidLatency.Seconds() / res.Alone.ValidLatency.Seconds()
	res.AddedCPU = res.Absurd.CPU - res.Ordinary.CPU
	res.LatencyRatio = res.Absurd.ValidLatency.Seconds() / res.Ordinary.ValidLatency.Seconds()
	return res, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func expensiveRun(kind string, n int, latency time.Duration) (ExpensiveRun, error) {
	run := ExpensiveRun{Kind: kind, Bad: n}
	b, err := NewBed(simulator.Config{RateLimit: Unlimited})
	if err != nil {
		return run, err
	}
	defer b.Close()
	cfg := jobs.Config{Concurrency: 16}
	if err := b.Provision(cfg); err != nil {
		return run, err
	}
	var batch []Job
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("bad-%d", i)
		device := `"x"` // wrong_type: the schema rejects it cheaply
		if kind == "absurd" {
			device = "1e999999"
		}
		batch = append(batch, Job{ID: id, Type: "remove", Body: []byte(`{"id":"` + id + `","type":"remove","user_id":7,"params":{"device_id":` + device + `}}`)})
	}
	if _, err := b.Sim.EnrollDevice(8, "OneLogin Protect", "Pixel", true); err != nil {
		return run, err
	}
	batch = append(batch, testenv.Of("valid", string(job.TypeOffboard), 8, nil))
	if err := b.Publish(batch, ""); err != nil {
		return run, err
	}
	nc, err := nats.Connect(b.NATSURL())
	if err != nil {
		return run, err
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(job.ResultSubjectPrefix + "offboard.>")
	if err != nil {
		return run, err
	}
	if err := nc.Flush(); err != nil {
		return run, err
	}
	b.Sim.SetFaults(simulator.Faults{Latency: latency})
	cpu0, start := cpuTime(), time.Now()
	w, err := b.StartWorker(cfg, workerOptions(0))
	if err != nil {
		return run, err
	}
	defer func() { _ = w.Stop() }()
	if _, err := sub.NextMsg(2 * time.Minute); err != nil {
		return run, fmt.Errorf("%s: the valid job has no result: %w", kind, err)
	}
	run.ValidLatency = time.Since(start)
	if err := b.WaitCount(topology.StreamResults, n+1, 5*time.Minute); err != nil {
		return run, err
	}
	run.CPU = cpuTime() - cpu0
	return run, nil
}
