package jobs_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/dlq"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// TestOnePersonsJobsNeverOverlap: two replicas share the jobs of 12
// people, three removes each, published person after person so that each
// person's jobs spread over both replicas. Every call takes 40 ms, so a
// person's removes land at least 40 ms apart unless two of them ran at
// once. A finished job leaves its lock in MFA_LOCKS, naming it, and the
// person's next job takes it over, on either replica.
func TestOnePersonsJobsNeverOverlap(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	const people, each = 12, 3
	const latency = 40 * time.Millisecond
	e.provision()
	for u := int64(0); u < people; u++ {
		for d := 0; d < each; d++ {
			dev, err := e.sim.EnrollDevice(7000+u, "Google Authenticator", fmt.Sprintf("d%d", d), true)
			if err != nil {
				t.Fatal(err)
			}
			id := fmt.Sprintf("rm-%d-%d", u, d)
			e.publish("remove", jobBody(id, "remove", 7000+u, map[string]any{"device_id": dev}), id)
		}
	}
	e.sim.SetFaults(simulator.Faults{Latency: latency})
	e.start(testConfig())
	e.start(testConfig())
	for id, r := range e.waitResults(people*each, 60*time.Second) {
		if r.Result.Outcome != job.Succeeded {
			t.Errorf("%s: %s %+v", id, r.Result.Outcome, r.Result.Error)
		}
	}
	at := map[int64][]time.Time{}
	for _, ef := range e.sim.Effects() {
		if ef.Kind == simulator.EffectRemove {
			at[ef.UserID] = append(at[ef.UserID], ef.At)
		}
	}
	for u, ts := range at {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		for i := 1; i < len(ts); i++ {
			if gap := ts[i].Sub(ts[i-1]); gap < latency*3/4 {
				t.Errorf("user %d: two removes %v apart: two of the person's jobs ran at once", u, gap)
			}
		}
		if len(ts) != each {
			t.Errorf("user %d: %d removes, want %d", u, len(ts), each)
		}
	}
	// The locks stay, each naming a finished job of its person.
	kv, err := e.js.KeyValue(context.Background(), topology.BucketLocks)
	if err != nil {
		t.Fatal(err)
	}
	for u := int64(0); u < people; u++ {
		ent, err := kv.Get(context.Background(), fmt.Sprintf("user.%d", 7000+u))
		if err != nil {
			t.Errorf("user %d: no lock left: %v", 7000+u, err)
			continue
		}
		if _, holder, _ := strings.Cut(string(ent.Value()), "\n"); !strings.HasPrefix(holder, fmt.Sprintf("rm-%d-", u)) {
			t.Errorf("user %d: the lock names %q", 7000+u, holder)
		}
	}
}

// TestReplayTakesItsOwnLeftLock: a job that dead-lettered leaves its lock
// naming it; the operator's replay of it, run by another replica, takes
// that lock at once instead of waiting for it to lapse (a lease of 10 s
// here, 30 s by default).
func TestReplayTakesItsOwnLeftLock(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	cfg := testConfig()
	cfg.Lease = 10 * time.Second
	dev, err := e.sim.EnrollDevice(7100, "Google Authenticator", "d", true)
	if err != nil {
		t.Fatal(err)
	}
	e.sim.SetFaults(simulator.Faults{OutageUntil: time.Now().Add(time.Hour)})
	e.provision()
	e.publish("remove", jobBody("rm-replayed", "remove", 7100, map[string]any{"device_id": dev}), "rm-replayed")
	first := e.start(cfg)
	if r := e.waitResults(1, 30*time.Second)["rm-replayed"].Result; r.Outcome != job.Failed {
		t.Fatalf("during the outage: %s %+v", r.Outcome, r.Error)
	}
	dls, err := dlq.ListDeadLetters(context.Background(), e.js, dlq.DeadLetterFilter{})
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters: %d, %v", len(dls), err)
	}
	// The replay runs on a replica that did not keep the lock: it meets
	// the lock as any other replica would.
	first.stop(t)
	e.start(cfg)
	e.sim.SetFaults(simulator.Faults{})
	replayed := time.Now()
	if err := dlq.Replay(context.Background(), e.js, dls[0]); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return e.count(topology.StreamResults) == 2 }, func() string { return "the replay's result" })
	if took := time.Since(replayed); took > 3*time.Second {
		t.Errorf("the replay took %v: it waited for the lock its own job left", took)
	}
}
