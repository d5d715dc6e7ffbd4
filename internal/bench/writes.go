package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// OffboardResult is the cost of the job path itself: offboards that each
// make one OneLogin call (a listing of a person with no factor left, so
// the outcome is noop) against the bare consumer, rounds alternating on
// fresh beds.
type OffboardResult struct {
	Jobs, Concurrency int
	// FloorRuns are the floor's (the same job: fetch, one listing, result,
	// ack), TransportRuns the transport's alone (fetch, result, ack; no
	// call): jobs/s.
	FloorRuns, TransportRuns []float64
	// ClaimedRuns are the floor's with the ledger's two writes per job
	// (a claim before the call, the result recorded after it): the least
	// a consumer giving one effect per job id does.
	ClaimedRuns []float64
	WorkerRuns  []float64
	// FloorCPU, TransportCPU and WorkerCPU are CPU seconds per 1,000 jobs
	// of the whole process (consumer or worker, the embedded NATS server
	// and the simulator), from the start until every result is out and,
	// for the worker, indexed in MFA_HISTORY.
	FloorCPU, TransportCPU, ClaimedCPU, WorkerCPU []float64
	Floor, Transport, Claimed, Worker             float64 // medians, jobs/s
	FloorCPUMedian                                float64
	TransportCPUMedian                            float64
	ClaimedCPUMedian                              float64
	WorkerCPUMedian                               float64
	Ratio                                         float64 // Worker / Floor
}

// offboards builds n offboard jobs for users from base on, none of whom
// has a factor: each job makes one call.
func offboards(n int, base int64) []Job {
	out := make([]Job, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, testenv.Of(fmt.Sprintf("o-%d-%d", base, i), string(job.TypeOffboard), base+int64(i), nil))
	}
	return out
}

// OffboardVsFloor measures the floor and the worker over n offboards,
// concurrency-way, rounds times each, alternating.
func OffboardVsFloor(n, concurrency, rounds int) (OffboardResult, error) {
	res := OffboardResult{Jobs: n, Concurrency: concurrency}
	perK := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(n) }
	for i := 0; i < rounds; i++ {
		b, err := NewBed(simulator.Config{RateLimit: Unlimited})
		if err != nil {
			return res, err
		}
		t, cpu, err := floorOf(b, nil, offboards(n, 1), concurrency)
		b.Close()
		if err != nil {
			return res, fmt.Errorf("transport: %w", err)
		}
		res.TransportRuns, res.TransportCPU = append(res.TransportRuns, t), append(res.TransportCPU, perK(cpu))

		if b, err = NewBed(simulator.Config{RateLimit: Unlimited}); err != nil {
			return res, err
		}
		sc := b.Sim.Config()
		f, cpu, err := floorOf(b, NewOneLogin(b.SimURL, sc.ClientID, sc.ClientSecret, concurrency), offboards(n, 1), concurrency)
		b.Close()
		if err != nil {
			return res, fmt.Errorf("floor: %w", err)
		}
		res.FloorRuns, res.FloorCPU = append(res.FloorRuns, f), append(res.FloorCPU, perK(cpu))

		c, cpu, err := claimedFloor(n, concurrency)
		if err != nil {
			return res, fmt.Errorf("floor with claims: %w", err)
		}
		res.ClaimedRuns, res.ClaimedCPU = append(res.ClaimedRuns, c), append(res.ClaimedCPU, perK(cpu))

		w, cpu, err := offboardWorker(n, concurrency)
		if err != nil {
			return res, fmt.Errorf("worker: %w", err)
		}
		res.WorkerRuns, res.WorkerCPU = append(res.WorkerRuns, w), append(res.WorkerCPU, perK(cpu))
	}
	res.Floor, res.Transport, res.Claimed, res.Worker = Median(res.FloorRuns), Median(res.TransportRuns), Median(res.ClaimedRuns), Median(res.WorkerRuns)
	res.FloorCPUMedian, res.TransportCPUMedian, res.WorkerCPUMedian = Median(res.FloorCPU), Median(res.TransportCPU), Median(res.WorkerCPU)
	res.ClaimedCPUMedian = Median(res.ClaimedCPU)
	res.Ratio = res.Worker / res.Floor
	return res, nil
}

// claimedFloor runs the floor with claims on a fresh bed, the ledger a
// bucket configured as MFA_LEDGER is.
func claimedFloor(n, concurrency int) (float64, time.Duration, error) {
	b, err := NewBed(simulator.Config{RateLimit: Unlimited})
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	kv, err := b.JS.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "FLOOR_LEDGER", TTL: 7 * 24 * time.Hour, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, 0, err
	}
	sc := b.Sim.Config()
	return floorClaiming(b, NewOneLogin(b.SimURL, sc.ClientID, sc.ClientSecret, concurrency), ledger.New(kv), offboards(n, 1), concurrency)
}

// offboardWorker runs one replica over n offboards: jobs per second until
// the last result, and CPU until the last result is also indexed.
func offboardWorker(n, concurrency int) (float64, time.Duration, error) {
	b, err := NewBed(simulator.Config{RateLimit: Unlimited})
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	cfg := jobs.Config{Concurrency: concurrency}
	if err := b.Provision(cfg); err != nil {
		return 0, 0, err
	}
	if err := publishAll(b, offboards(n, 1), "", topology.StreamJobs); err != nil {
		return 0, 0, err
	}
	cpu0, start := cpuTime(), time.Now()
	w, err := b.StartWorker(cfg, workerOptions(0))
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = w.Stop() }()
	if err := waitCount(b, topology.StreamResults, n, 10*time.Minute); err != nil {
		return 0, 0, err
	}
	tp := float64(n) / time.Since(start).Seconds()
	if err := waitCount(b, topology.StreamHistory, n, 5*time.Minute); err != nil {
		return 0, 0, err
	}
	return tp, cpuTime() - cpu0, nil
}

// waitCount waits until stream holds n messages, asking every 50 ms (not
// every 5 ms like Bed.WaitCount: its stream info requests would be a
// visible part of the CPU measured).
func waitCount(b *Bed, stream string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for b.Count(stream) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d messages after %v", stream, b.Count(stream), n, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
