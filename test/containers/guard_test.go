//go:build containers

package containers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// scrapeHeld sums mfa_jobs_held from a worker's /metrics, waiting up to
// timeout for it to reach want.
func scrapeHeld(addr string, timeout time.Duration, want int) int {
	got := -1
	deadline := time.Now().Add(timeout)
	for {
		got = -1
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got = 0
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "mfa_jobs_held{") {
					f := strings.Fields(l)
					v, _ := strconv.ParseFloat(f[len(f)-1], 64)
					got += int(v)
				}
			}
		}
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// heldJobs lists the jobs the guard holds (state held).
func (w *world) heldJobs() []guard.Held {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	g, err := guard.Open(ctx, w.js, guard.Config{})
	if err != nil {
		return nil
	}
	hs, err := g.List(ctx, guard.Filter{})
	if err != nil {
		return nil
	}
	return hs
}

// holdCmd runs `worker hold ...` against the world's NATS.
func (w *world) holdCmd(args ...string) string {
	w.t.Helper()
	full := append([]string{"hold", args[0], "--nats-url", w.natsURL, "--by", "scenario"}, args[1:]...)
	out, err := exec.Command(workerBin, full...).CombinedOutput()
	if err != nil {
		w.t.Fatalf("worker %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

// H: a misfiring HR sync: 300 offboards from one source against a guard
// limit of 20, two replicas. At most 20 run, the rest are held (no result,
// no OneLogin call, counted in mfa_jobs_held) through a replica's SIGKILL
// and a NATS restart; `worker hold release --job` runs the chosen ones
// exactly once and `worker hold discard --source` ends the rest cancelled
// discarded without a call. Every job ends with one result and a finished
// ledger record.
func TestGuardHoldsAMisfiringSync(t *testing.T) {
	const (
		total   = 300
		limit   = 20
		release = 10
		source  = "hr.scim"
	)
	w := newWorld(t, simulator.Config{})
	w.sim.SetFaults(simulator.Faults{Latency: 20 * time.Millisecond, Jitter: 20 * time.Millisecond})
	n := w.startNATS("nats-h", "")
	w.connect()
	w.provision(1)
	planned := make([]testenv.Job, total)
	for i := range total {
		user := int64(8_000_000 + i)
		if _, err := w.sim.EnrollDevice(user, "Google Authenticator", "GA", true); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("scim-off-%d", i)
		b, _ := json.Marshal(map[string]any{"id": id, "type": "offboard", "user_id": user, "source": source})
		planned[i] = testenv.Job{ID: id, Type: "offboard", Body: b}
	}
	guardEnv := []string{"WORKER_GUARD_LIMIT=" + strconv.Itoa(limit), "WORKER_GUARD_WINDOW=1h"}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	w.startWorker("w1", append(guardEnv, "WORKER_HTTP_ADDR="+httpAddr)...)
	w2 := w.startWorker("w2", guardEnv...)
	w.publish(planned)

	// A replica dies while the burst is being held.
	if err := testenv.WaitFor(3*time.Minute, func() bool { return len(w.heldJobs()) >= 100 }, func() string {
		return fmt.Sprintf("%d held", len(w.heldJobs()))
	}); err != nil {
		t.Fatal(err)
	}
	w2.kill()
	killedAt := len(w.heldJobs())
	settled := func() bool {
		return w.count(topology.StreamResults) == limit && len(w.heldJobs()) == total-limit && w.ackPending() == 0
	}
	if err := testenv.WaitFor(3*time.Minute, settled, func() string {
		return fmt.Sprintf("%d results, %d held, %d pending", w.count(topology.StreamResults), len(w.heldJobs()), w.ackPending())
	}); err != nil {
		t.Fatal(err)
	}
	if got := scrapeHeld(httpAddr, 60*time.Second, total-limit); got != total-limit {
		t.Fatalf("mfa_jobs_held %d, want %d", got, total-limit)
	}

	// NATS restarted: the holds, the count and the held gauge survive.
	timeout := 5 * time.Second
	if err := n.c.Stop(w.ctx, &timeout); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second) // NATS is away
	if err := n.c.Start(w.ctx); err != nil {
		t.Fatal(err)
	}
	n.waitServing(t, w.ctx)
	w.startWorker("w3", guardEnv...)
	if err := testenv.WaitFor(2*time.Minute, settled, func() string {
		return fmt.Sprintf("after the restart: %d results, %d held, %d pending", w.count(topology.StreamResults), len(w.heldJobs()), w.ackPending())
	}); err != nil {
		t.Fatal(err)
	}
	if got := scrapeHeld(httpAddr, 90*time.Second, total-limit); got != total-limit {
		t.Fatalf("mfa_jobs_held %d after the NATS restart, want %d", got, total-limit)
	}
	ranFirst := map[string]bool{}
	for id := range w.readResults() {
		ranFirst[id] = true
	}
	effects := map[string]int{}
	for _, e := range w.sim.Effects() {
		effects[e.RequestID]++
	}
	held := w.heldJobs()
	for _, h := range held {
		if ranFirst[h.JobID] || effects[h.JobID] != 0 {
			t.Errorf("held %s: result %v, %d OneLogin effects", h.JobID, ranFirst[h.JobID], effects[h.JobID])
		}
	}

	// The operator releases some by id, then discards the rest.
	released := map[string]bool{}
	for _, h := range held[:release] {
		released[h.JobID] = true
		w.holdCmd("release", "--job", h.JobID)
	}
	w.waitResults(limit+release, 2*time.Minute)
	w.holdCmd("discard", "--source", source, "--reason", "misfiring sync")
	f := w.verify("h. guard: 300 offboards of one source, limit 20; a replica SIGKILLed, NATS restarted, 10 released, the rest discarded",
		planned, fmt.Sprintf("replica killed at %d held", killedAt))
	results := w.readResults()
	made := map[string]int{}
	for _, e := range w.sim.Effects() {
		made[e.RequestID]++
	}
	for _, j := range planned {
		rs := results[j.ID]
		if len(rs) == 0 {
			continue // counted by verify
		}
		r := rs[0]
		switch {
		case ranFirst[j.ID] || released[j.ID]:
			if r.Outcome != job.Succeeded || made[j.ID] != 1 {
				t.Errorf("%s ran: %s, %d effects", j.ID, r.Outcome, made[j.ID])
			}
		default:
			if r.Outcome != job.Cancelled || r.Error == nil || r.Error.Code != job.CodeDiscarded || made[j.ID] != 0 {
				t.Errorf("%s discarded: %+v, %d effects", j.ID, r, made[j.ID])
			}
		}
	}
	if want := map[string]int{"succeeded": limit + release, "cancelled": total - limit - release}; f.Outcomes["succeeded"] != want["succeeded"] || f.Outcomes["cancelled"] != want["cancelled"] {
		t.Errorf("outcomes %v, want %v", f.Outcomes, want)
	}
	if got := scrapeHeld(httpAddr, 60*time.Second, 0); got != 0 {
		t.Errorf("mfa_jobs_held %d after the discard, want 0", got)
	}
	if n := len(w.heldJobs()); n != 0 {
		t.Errorf("%d jobs still held", n)
	}
}
