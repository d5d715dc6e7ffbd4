//go:build containers

package containers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// withNotBefore sets not_before on every job, at a random instant in
// [from, from+spread), and returns the instants by job id.
func withNotBefore(t *testing.T, planned []testenv.Job, from time.Time, spread time.Duration) map[string]time.Time {
	t.Helper()
	due := map[string]time.Time{}
	for i, j := range planned {
		var m map[string]any
		if err := json.Unmarshal(j.Body, &m); err != nil {
			t.Fatal(err)
		}
		nb := from.Add(time.Duration(rand.Int64N(int64(spread))))
		m["not_before"] = nb.UTC().Format(time.RFC3339Nano)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		planned[i].Body = b
		due[j.ID] = nb
	}
	return due
}

// noneEarly reports the jobs that made a OneLogin effect, or started, before
// their not_before, and how late the first effects came (median, maximum).
func (w *world) noneEarly(due map[string]time.Time) (early int, p50, worst time.Duration) {
	first := map[string]time.Time{}
	for _, e := range w.sim.Effects() {
		nb, ok := due[e.RequestID]
		if !ok {
			continue
		}
		if e.At.Before(nb) {
			early++
			w.t.Errorf("%s: effect %s at %v, before its not_before %v", e.RequestID, e.Kind, e.At, nb)
		}
		if f, ok := first[e.RequestID]; !ok || e.At.Before(f) {
			first[e.RequestID] = e.At
		}
	}
	var late []time.Duration
	for id, at := range first {
		late = append(late, at.Sub(due[id]))
	}
	sort.Slice(late, func(i, j int) bool { return late[i] < late[j] })
	if len(late) > 0 {
		p50, worst = late[len(late)/2], late[len(late)-1]
	}
	for id, rs := range w.readResults() {
		if nb, ok := due[id]; ok && len(rs) > 0 && rs[0].StartedAt.Before(nb) {
			early++
			w.t.Errorf("%s: started at %v, before its not_before %v", id, rs[0].StartedAt, nb)
		}
	}
	return early, p50, worst
}

// F: 1,000 jobs scheduled 5-20 s ahead; the worker SIGKILLed twice and NATS
// restarted once while they come due.
func TestScheduledJobsThroughKillsAndRestart(t *testing.T) {
	w := newWorld(t, simulator.Config{})
	w.sim.SetFaults(simulator.Faults{Latency: 20 * time.Millisecond, Jitter: 20 * time.Millisecond})
	n := w.startNATS("nats-f", "")
	w.connect()
	w.provision(1)
	planned := w.workload(1000, 6_000_000)
	due := withNotBefore(t, planned, time.Now().Add(5*time.Second), 15*time.Second)
	start := time.Now()
	w.publish(planned)
	p := w.startWorker("w1")
	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }
	var notes []string
	at(7 * time.Second)
	p.kill()
	notes = append(notes, fmt.Sprintf("SIGKILL at 7 s (%d results)", w.count(topology.StreamResults)))
	p = w.startWorker("w2")
	at(11 * time.Second)
	timeout := 5 * time.Second
	if err := n.c.Stop(w.ctx, &timeout); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := n.c.Start(w.ctx); err != nil {
		t.Fatal(err)
	}
	notes = append(notes, "NATS stopped at 11 s for 2 s")
	at(16 * time.Second)
	p.kill()
	notes = append(notes, fmt.Sprintf("SIGKILL at 16 s (%d results)", w.count(topology.StreamResults)))
	w.startWorker("w3")
	w.verify("f. 1,000 jobs scheduled 5-20 s ahead; worker SIGKILLed twice, NATS restarted", planned, strings.Join(notes, "; "))
	early, p50, worst := w.noneEarly(due)
	if early != 0 {
		t.Errorf("%d jobs ran early", early)
	}
	figMu.Lock()
	figRows[len(figRows)-1].Note += fmt.Sprintf("; none early (%d); first effect after not_before: median %s, max %s (the max includes the kills and the NATS restart)",
		early, p50.Round(10*time.Millisecond), worst.Round(10*time.Millisecond))
	t.Log(figRows[len(figRows)-1].Note)
	figMu.Unlock()
}

// G: 10,000 jobs scheduled for the next hour cost the worker no memory and
// no ack-pending slots, and survive a restart of NATS (file store) and of
// the worker: every one is still scheduled and answered by the job query.
func TestTenThousandScheduled(t *testing.T) {
	const total = 10_000
	w := newWorld(t, simulator.Config{})
	n := w.startNATS("nats-g", "")
	w.connect()
	w.provision(1)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := w.startWorker("w1", "WORKER_HTTP_ADDR="+httpAddr)
	if err := testenv.WaitHTTP("http://"+httpAddr+"/readyz", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // settle after start-up
	idle := rssKiB(t, p)
	planned := w.workload(total, 7_000_000)
	due := withNotBefore(t, planned, time.Now().Add(30*time.Minute), 30*time.Minute)
	start := time.Now()
	for i := 0; i < len(planned); i += 2000 {
		w.publish(planned[i:min(i+2000, len(planned))])
	}
	scheduledCount := func() int {
		n := 0
		for _, typ := range topology.Schedulable() {
			ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
			c, err := w.js.Consumer(ctx, topology.StreamJobs, topology.ScheduledConsumer(typ))
			if err == nil {
				if info, err := c.Info(ctx); err == nil {
					n += int(info.NumPending)
				}
			}
			cancel()
		}
		return n
	}
	if err := testenv.WaitFor(3*time.Minute, func() bool { return scheduledCount() == total && w.unacked() == total }, func() string {
		return fmt.Sprintf("%d of %d scheduled, %d unacked", scheduledCount(), total, w.unacked())
	}); err != nil {
		t.Fatal(err)
	}
	parked := time.Since(start)
	ackPending := w.ackPending()
	if ackPending != 0 {
		t.Errorf("ack pending %d with every job scheduled", ackPending)
	}
	var peak int
	for range 5 {
		time.Sleep(time.Second)
		peak = max(peak, rssKiB(t, p))
	}
	grew := peak - idle
	if grew > 10*1024 {
		t.Errorf("worker RSS grew %d KiB (idle %d KiB, with 10,000 scheduled %d KiB), more than 10 MiB", grew, idle, peak)
	}
	if got := scrapeScheduled(t, httpAddr, 15*time.Second, total); got != total {
		t.Errorf("mfa_jobs_scheduled sums to %d, want %d", got, total)
	}

	// NATS (file store) and the worker restarted.
	timeout := 10 * time.Second
	if err := n.c.Stop(w.ctx, &timeout); err != nil {
		t.Fatal(err)
	}
	if err := n.c.Start(w.ctx); err != nil {
		t.Fatal(err)
	}
	n.waitServing(t, w.ctx)
	p.signal(syscall.SIGTERM, 30*time.Second)
	httpAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	w.startWorker("w2", "WORKER_HTTP_ADDR="+httpAddr)
	if err := testenv.WaitHTTP("http://"+httpAddr+"/readyz", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := scheduledCount(); got != total {
		t.Errorf("%d schedules after the restarts, want %d", got, total)
	}
	if got := scrapeScheduled(t, httpAddr, 15*time.Second, total); got != total {
		t.Errorf("mfa_jobs_scheduled after the restarts sums to %d, want %d", got, total)
	}
	// Every job, through the worker's job query.
	var wrong, asked atomic.Int64
	ids := make(chan string)
	var wg sync.WaitGroup
	queryStart := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				asked.Add(1)
				req, _ := json.Marshal(map[string]string{"job_id": id})
				m, err := w.nc.Request("mfa.query.job", req, 5*time.Second)
				var reply struct {
					Data ops.JobState `json:"data"`
				}
				if err != nil || json.Unmarshal(m.Data, &reply) != nil || reply.Data.State != ops.JobScheduled ||
					reply.Data.DueAt == nil || reply.Data.DueAt.Before(due[id]) || reply.Data.DueAt.Sub(due[id]) >= time.Second {
					if wrong.Add(1) <= 5 {
						t.Errorf("job query %s: %v %+v", id, err, reply.Data)
					}
				}
			}
		}()
	}
	for _, j := range planned {
		ids <- j.ID
	}
	close(ids)
	wg.Wait()
	if wrong.Load() != 0 {
		t.Errorf("%d of %d jobs not answered as scheduled with their due_at", wrong.Load(), asked.Load())
	}
	kv, err := w.js.KeyValue(w.ctx, topology.BucketLedger)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := ledger.New(kv).Get(w.ctx, planned[0].ID); err != nil || e.State != ledger.Scheduled {
		t.Errorf("ledger %s: %v %+v", planned[0].ID, err, e)
	}
	note := fmt.Sprintf("worker RSS idle %.1f MiB, with 10,000 scheduled %.1f MiB (+%.1f MiB); ack pending %d; parked in %s; after NATS and worker restarts %d/%d answered scheduled by mfa.query.job in %s",
		float64(idle)/1024, float64(peak)/1024, float64(grew)/1024, ackPending, parked.Round(100*time.Millisecond),
		asked.Load()-wrong.Load(), asked.Load(), time.Since(queryStart).Round(100*time.Millisecond))
	t.Log(note)
	figMu.Lock()
	figRows = append(figRows, figures{Scenario: "g. 10,000 jobs scheduled for the next hour; NATS and worker restarted", Jobs: total,
		Outcomes: map[string]int{"scheduled": total - int(wrong.Load())}, Duration: time.Since(w.start), Note: note})
	figMu.Unlock()
}

// ackPending is the lanes' ack-pending count.
func (w *world) ackPending() int {
	ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
	defer cancel()
	n := 0
	for _, c := range []string{topology.ConsumerUrgent, topology.ConsumerNormal} {
		cons, err := w.js.Consumer(ctx, topology.StreamJobs, c)
		if err != nil {
			return 1 << 30
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return 1 << 30
		}
		n += info.NumAckPending
	}
	return n
}

// rssKiB reads the worker process's resident set size.
func rssKiB(t *testing.T, p *workerProc) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// scrapeScheduled sums mfa_jobs_scheduled from the worker's /metrics,
// waiting up to timeout for it to reach want.
func scrapeScheduled(t *testing.T, addr string, timeout time.Duration, want int) int {
	t.Helper()
	got := -1
	deadline := time.Now().Add(timeout)
	for {
		got = 0
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "mfa_jobs_scheduled{") {
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
