//go:build containers

package containers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go/network"

	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// singleNode is the common start of a scenario: one NATS container, the
// streams, and the workload published, with OneLogin answering in 20-40 ms.
func singleNode(t *testing.T, name string, base int64) (*world, *natsNode, []testenv.Job) {
	w := newWorld(t, simulator.Config{})
	w.sim.SetFaults(simulator.Faults{Latency: 20 * time.Millisecond, Jitter: 20 * time.Millisecond})
	n := w.startNATS(name, "")
	w.connect()
	w.provision(1)
	planned := w.workload(jobsPerScenario, base)
	w.publish(planned)
	return w, n, planned
}

// A: the worker killed with SIGKILL at three random moments, restarted each
// time.
func TestWorkerKilledThreeTimes(t *testing.T) {
	w, _, planned := singleNode(t, "nats-a", 1_000_000)
	p := w.startWorker("w1")
	var at []string
	for i, frac := range []float64{0.1, 0.4, 0.7} {
		frac += rand.Float64() * 0.15 // a random moment in each third
		w.progress(len(planned), frac)
		p.kill()
		at = append(at, fmt.Sprintf("%d", w.count(topology.StreamResults)))
		p = w.startWorker(fmt.Sprintf("w%d", i+2))
	}
	w.verify("a. worker SIGKILLed 3 times", planned, "killed after "+fmt.Sprint(at)+" results")
}

// B: the NATS container stopped and started mid-run, its JetStream store
// kept.
func TestNATSRestartedMidRun(t *testing.T) {
	w, n, planned := singleNode(t, "nats-b", 2_000_000)
	w.startWorker("w1")
	w.progress(len(planned), 0.3)
	before := w.count(topology.StreamResults)
	timeout := 5 * time.Second
	if err := n.c.Stop(w.ctx, &timeout); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second) // NATS is away
	if err := n.c.Start(w.ctx); err != nil {
		t.Fatal(err)
	}
	w.verify("b. NATS stopped and started", planned, fmt.Sprintf("stopped for 5 s after %d results", before))
}

// C: two replicas sharing the consumers; one killed for good mid-run.
func TestReplicaKilledForGood(t *testing.T) {
	w, _, planned := singleNode(t, "nats-c", 3_000_000)
	w.startWorker("w1")
	w2 := w.startWorker("w2")
	w.progress(len(planned), 0.4)
	w2.kill()
	at := w.count(topology.StreamResults)
	w.verify("c. two replicas, one SIGKILLed for good", planned, fmt.Sprintf("replica killed after %d results", at))
}

// D: OneLogin misbehaves: 20% 5xx, a 429 storm, 2-second latency spikes and
// a 60-second outage, in turn.
func TestOneLoginStorms(t *testing.T) {
	w := newWorld(t, simulator.Config{Seed: 11})
	base := simulator.Faults{Latency: 60 * time.Millisecond, Jitter: 40 * time.Millisecond}
	w.startNATS("nats-d", "")
	w.connect()
	w.provision(1)
	planned := w.workload(jobsPerScenario, 4_000_000)
	w.publish(planned)
	w.startWorker("w1")
	steps := []struct {
		after time.Duration
		what  string
		f     simulator.Faults
	}{
		{0, "20% 5xx", simulator.Faults{Latency: base.Latency, Jitter: base.Jitter, ErrorRate: 0.2}},
		{6 * time.Second, "429 storm for 6 s", simulator.Faults{Latency: base.Latency, Jitter: base.Jitter, StormUntil: time.Now().Add(12 * time.Second)}},
		{12 * time.Second, "2 s latency spikes", simulator.Faults{Latency: 2 * time.Second, Jitter: 200 * time.Millisecond}},
		{20 * time.Second, "60 s outage", simulator.Faults{OutageUntil: time.Now().Add(80 * time.Second)}},
		{80 * time.Second, "clear", base},
	}
	start := time.Now()
	for _, s := range steps {
		time.Sleep(time.Until(start.Add(s.after)))
		w.sim.SetFaults(s.f)
		t.Logf("%v: %s (%d results so far)", time.Since(start).Round(time.Second), s.what, w.count(topology.StreamResults))
	}
	st := w.sim.Stats()
	w.verify("d. OneLogin: 20% 5xx, 429 storm, 2 s spikes, 60 s outage", planned,
		fmt.Sprintf("%d 5xx/outage answers, %d 429s", st.ServerError, st.TooMany))
}

// E: a three-node NATS cluster with R3 streams on a private Docker network;
// the job stream's leader is killed mid-run.
func TestClusterLeaderKilled(t *testing.T) {
	w := newWorld(t, simulator.Config{})
	w.sim.SetFaults(simulator.Faults{Latency: 20 * time.Millisecond, Jitter: 20 * time.Millisecond})
	net, err := network.New(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := net.Remove(context.Background()); err != nil {
			t.Logf("remove network: %v", err)
		}
	})
	names := []string{"n1", "n2", "n3"}
	for _, name := range names {
		var routes []string
		for _, o := range names {
			if o != name {
				routes = append(routes, "nats://"+o+":6222")
			}
		}
		w.startNATS(name, net.Name, "--cluster_name", "mfa", "--cluster", "nats://0.0.0.0:6222",
			"--routes", routes[0]+","+routes[1], "--no_advertise")
	}
	w.connect()
	w.provision(3)
	planned := w.workload(jobsPerScenario, 5_000_000)
	w.publish(planned)
	w.startWorker("w1", "WORKER_STREAM_REPLICAS=3")
	w.progress(len(planned), 0.3)
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	s, err := w.js.Stream(ctx, topology.StreamJobs)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	cancel()
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("no leader for %s: %v", topology.StreamJobs, err)
	}
	leader := info.Cluster.Leader
	at := w.count(topology.StreamResults)
	for _, n := range w.nodes {
		if n.name == leader {
			zero := time.Duration(0)
			if err := n.c.Stop(w.ctx, &zero); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.verify("e. 3-node cluster, R3, job stream leader killed", planned, fmt.Sprintf("leader %s killed after %d results", leader, at))
}
