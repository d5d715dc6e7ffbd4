package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// BusyUserResult is how long the jobs of other users take when one user
// has many jobs queued ahead of them.
type BusyUserResult struct {
	BusyJobs, OtherJobs int
	Latency             time.Duration
	Concurrency         int
	MaxPerUser          int
	// Alone is the time until the other users' jobs all finished with
	// nothing else queued; WithBusy with the busy user's jobs published
	// first. Ratio is WithBusy / Alone.
	Alone, WithBusy time.Duration
	Ratio           float64
	// BusyDone is how many of the busy user's jobs had finished when the
	// last of the others did.
	BusyDone int
}

// OneBusyUser publishes busy remove jobs for one user, then one remove job
// for each of others other users, against a OneLogin answering every call
// after latency, and measures when the other users' jobs finish: alone
// (only their jobs) and behind the busy user's (the busy jobs first).
func OneBusyUser(busy, others int, latency time.Duration, concurrency int) (BusyUserResult, error) {
	res := BusyUserResult{BusyJobs: busy, OtherJobs: others, Latency: latency, Concurrency: concurrency, MaxPerUser: jobs.DefaultConfig().MaxPerUser}
	alone, _, err := othersFinish(0, others, latency, concurrency)
	if err != nil {
		return res, err
	}
	with, busyDone, err := othersFinish(busy, others, latency, concurrency)
	if err != nil {
		return res, err
	}
	res.Alone, res.WithBusy, res.BusyDone = alone, with, busyDone
	res.Ratio = with.Seconds() / alone.Seconds()
	return res, nil
}

// othersFinish runs one measurement on a fresh bed: the time from the
// worker's start until every other user's job has a result.
func othersFinish(busy, others int, latency time.Duration, concurrency int) (time.Duration, int, error) {
	b, err := NewBed(simulator.Config{RateLimit: Unlimited})
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	const busyUser = 9_000_001
	var js []Job
	for i := 0; i < busy; i++ {
		dev, err := b.Sim.EnrollDevice(busyUser, "Google Authenticator", fmt.Sprintf("ga-%d", i), true)
		if err != nil {
			return 0, 0, err
		}
		js = append(js, testenv.Of(fmt.Sprintf("busy-%d", i), "remove", busyUser, map[string]any{"device_id": dev}))
	}
	otherIDs := map[string]bool{}
	for i := 0; i < others; i++ {
		user := int64(9_100_000 + i)
		dev, err := b.Sim.EnrollDevice(user, "Google Authenticator", "ga", true)
		if err != nil {
			return 0, 0, err
		}
		id := fmt.Sprintf("other-%d", i)
		otherIDs[id] = true
		js = append(js, testenv.Of(id, "remove", user, map[string]any{"device_id": dev}))
	}
	cfg := jobs.Config{Concurrency: concurrency}
	if err := b.Provision(cfg); err != nil {
		return 0, 0, err
	}
	if err := b.Publish(js, ""); err != nil {
		return 0, 0, err
	}
	nc, err := nats.Connect(b.NATSURL())
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	var mu sync.Mutex
	left, busyDone := len(otherIDs), 0
	done := make(chan struct{})
	sub, err := nc.Subscribe(job.ResultSubjectPrefix+">", func(m *nats.Msg) {
		var r struct {
			JobID string `json:"job_id"`
		}
		if json.Unmarshal(m.Data, &r) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case otherIDs[r.JobID]:
			delete(otherIDs, r.JobID)
			if left--; left == 0 {
				close(done)
			}
		case left > 0:
			busyDone++
		}
	})
	if err != nil {
		return 0, 0, err
	}
	defer sub.Unsubscribe()
	b.Sim.SetFaults(simulator.Faults{Latency: latency})
	start := time.Now()
	w, err := b.StartWorker(cfg, workerOptions(0))
	if err != nil {
		return 0, 0, err
	}
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	select {
	case <-done:
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		return 0, 0, fmt.Errorf("the other users' jobs did not finish: %d left", left)
	}
	took := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	return took, busyDone, nil
}
