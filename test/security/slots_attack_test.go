package security

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// One busy person must not hold everyone's slots. 40 jobs for one user are
// published ahead of 10 jobs for other users, OneLogin answering after
// 300 ms. Before, the busy user's jobs waiting for their turn took all 16
// slots and the others waited for most of them; now the others finish
// while the busy user's jobs are still running one by one, and every job
// of both ends succeeded (the busy user's extra messages were given back,
// never failed).
func TestOneBusyUserDoesNotBlockOthers(t *testing.T) {
	bed, err := testenv.NewBed(simulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer bed.Close()
	const busyUser, busy, others = 7_000_001, 40, 10
	var js []testenv.Job
	for i := 0; i < busy; i++ {
		dev, err := bed.Sim.EnrollDevice(busyUser, "Google Authenticator", fmt.Sprintf("ga-%d", i), true)
		if err != nil {
			t.Fatal(err)
		}
		js = append(js, testenv.Of(fmt.Sprintf("slot-busy-%d", i), "remove", busyUser, map[string]any{"device_id": dev}))
	}
	other := map[string]bool{}
	for i := 0; i < others; i++ {
		user := int64(7_100_000 + i)
		dev, err := bed.Sim.EnrollDevice(user, "Google Authenticator", "ga", true)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("slot-other-%d", i)
		other[id] = true
		js = append(js, testenv.Of(id, "remove", user, map[string]any{"device_id": dev}))
	}
	cfg := jobs.Config{Concurrency: 16}
	if err := bed.Provision(cfg); err != nil {
		t.Fatal(err)
	}
	if err := bed.Publish(js, ""); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(bed.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	busyDone, othersLeft, busyAtOthersDone := 0, others, -1
	sub, err := nc.Subscribe("mfa.results.>", func(m *nats.Msg) {
		var r job.Result
		if json.Unmarshal(m.Data, &r) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if other[r.JobID] {
			if othersLeft--; othersLeft == 0 {
				busyAtOthersDone = busyDone
			}
		} else {
			busyDone++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	bed.Sim.SetFaults(simulator.Faults{Latency: 300 * time.Millisecond})
	w, err := bed.StartWorker(cfg, testenv.WorkerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	testenv.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return othersLeft == 0
	}, func() string { return "the other users' jobs did not finish" })
	mu.Lock()
	at := busyAtOthersDone
	mu.Unlock()
	t.Logf("the other users' %d jobs finished when %d of the busy user's %d had", others, at, busy)
	// One busy job runs at a time (300 ms each); the others need about
	// one OneLogin answer. Holding slots, they waited for most busy jobs.
	if at > busy/4 {
		t.Errorf("the others finished only after %d of the busy user's %d jobs", at, busy)
	}
	if err := bed.WaitCount(topology.StreamResults, busy+others, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	results, err := bed.Results()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Outcome != job.Succeeded {
			t.Errorf("%s: %s %+v (attempts %d)", r.JobID, r.Outcome, r.Error, r.Attempts)
		}
	}
	if n := bed.Count(topology.StreamDLQ); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}
