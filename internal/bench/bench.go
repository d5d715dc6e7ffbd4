// Package bench measures the worker against the physical limit and the
// OneLogin budget: a bare JetStream consumer as the floor, the worker against
// a zero-latency and a slow simulator, the budget-bound case, OneLogin calls
// per job, memory with a large backlog and the time `worker dev` takes to be
// ready. `make bench` runs it and writes docs/benchmarks.md; a short smoke
// run is part of `make test`.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// FloorReply is the result the floor publishes for the job message m,
// a message on floor.jobs.<type>, on floor.results.<type>, with the job id
// and the stream sequence as its message id (the worker's result id).
// With ol it runs the job first (Offboard: one listing of the user's
// devices) and publishes its PeerResult; with ol nil it makes no call and
// echoes the job's body (the transport alone).
func FloorReply(ctx context.Context, ol *OneLogin, m jetstream.Msg) (*nats.Msg, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, err
	}
	r := nats.NewMsg("floor.results." + m.Subject()[len("floor.jobs."):])
	var id string
	if ol == nil {
		var j struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(m.Data(), &j)
		id, r.Data = j.ID, m.Data()
	} else {
		res, err := Offboard(ctx, ol, m.Data())
		if err != nil {
			return nil, err
		}
		if r.Data, err = json.Marshal(res); err != nil {
			return nil, err
		}
		id = res.ID
	}
	r.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s:%d", id, md.Sequence.Stream))
	return r, nil
}

// claimedReply is FloorReply between a claim of the job id (a ledger
// create) and the record of its result (a compare-and-set update of the
// claim), the records shaped as the worker's.
func claimedReply(ctx context.Context, claims *ledger.Ledger, ol *OneLogin, m jetstream.Msg) (*nats.Msg, error) {
	var j struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(m.Data(), &j); err != nil || j.ID == "" {
		return nil, fmt.Errorf("floor: a job without an id: %.80q", m.Data())
	}
	now := time.Now()
	rec := ledger.Record{State: ledger.Running, Hash: j.ID, Owner: "floor", LeaseUntil: now.Add(30 * time.Second), JobTime: now, Type: "offboard", UpdatedAt: now}
	rev, err := claims.Create(ctx, j.ID, rec)
	if err != nil {
		return nil, err
	}
	r, err := FloorReply(ctx, ol, m)
	if err != nil {
		return nil, err
	}
	rec.State, rec.Owner, rec.LeaseUntil, rec.UpdatedAt = ledger.Finished, "", time.Time{}, time.Now()
	rec.Outcome, rec.Result, rec.ResultMsgID = "noop", r.Data, r.Header.Get(jetstream.MsgIDHeader)
	if _, err := claims.Update(ctx, j.ID, rec, rev); err != nil {
		return nil, err
	}
	return r, nil
}

// Bed is the test bed the measurements run on.
type Bed = testenv.Bed

// Job is one job to publish.
type Job = testenv.Job

// NewBed starts a bed whose JetStream data lives under a fresh folder.
func NewBed(simCfg simulator.Config) (*Bed, error) { return testenv.NewBed(simCfg) }

// Mix builds n jobs of the fixed mix; see testenv.Mix.
func Mix(sim *simulator.Server, n int, base int64) ([]Job, error) { return testenv.Mix(sim, n, base) }

// Floor is the cost every JetStream worker pays: a bare consumer that
// fetches each message, publishes one result for it and acks it, with
// concurrency goroutines, and does nothing else. It returns messages per
// second over n messages published beforehand.
func Floor(b *Bed, n, concurrency int) (float64, error) {
	mix, err := Mix(b.Sim, n, 1)
	if err != nil {
		return 0, err
	}
	tp, _, err := floorOf(b, nil, mix, concurrency)
	return tp, err
}

// floorOf runs the floor over the given jobs and returns messages per
// second and the process's CPU time from the first fetch to the last ack.
func floorOf(b *Bed, ol *OneLogin, mix []Job, concurrency int) (float64, time.Duration, error) {
	return floorClaiming(b, ol, nil, mix, concurrency)
}

// floorClaiming is floorOf, and with claims set each job is also claimed
// in a ledger before its call and its result recorded there before it is
// published, as the worker's ledger does (claim.go, settle.go): the two
// writes that no consumer giving one effect per job id can leave out.
func floorClaiming(b *Bed, ol *OneLogin, claims *ledger.Ledger, mix []Job, concurrency int) (float64, time.Duration, error) {
	n := len(mix)
	ctx := context.Background()
	if _, err := b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "FLOOR", Subjects: []string{"floor.jobs.*"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		return 0, 0, err
	}
	if _, err := b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "FLOOR_RESULTS", Subjects: []string{"floor.results.>"}, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		return 0, 0, err
	}
	cons, err := b.JS.CreateOrUpdateConsumer(ctx, "FLOOR", jetstream.ConsumerConfig{Durable: "floor", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 1000})
	if err != nil {
		return 0, 0, err
	}
	if err := publishAll(b, mix, "floor.jobs.", "FLOOR"); err != nil {
		return 0, 0, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(max(1, concurrency)), jetstream.PullExpiry(5*time.Second)) // as the worker pulls
	if err != nil {
		return 0, 0, err
	}
	cpu0, start := cpuTime(), time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	finished := make(chan struct{})
	msgs := make(chan jetstream.Msg)
	var fetchErr atomic.Value
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range msgs {
				var r *nats.Msg
				var err error
				if claims == nil {
					r, err = FloorReply(ctx, ol, m)
				} else {
					r, err = claimedReply(ctx, claims, ol, m)
				}
				if err == nil {
					_, err = b.JS.PublishMsg(ctx, r)
				}
				if err == nil {
					_ = m.Ack()
				}
				mu.Lock()
				done++
				if done == n {
					close(finished)
				}
				mu.Unlock()
			}
		}()
	}
	go func() {
		for {
			m, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				close(msgs)
				return
			}
			if err != nil {
				fetchErr.Store(err.Error())
				continue // a missed heartbeat on a busy machine: the pull goes on
			}
			msgs <- m
		}
	}()
	select {
	case <-finished:
	case <-time.After(10 * time.Minute):
		it.Stop()
		wg.Wait()
		return 0, 0, fmt.Errorf("floor timed out (last fetch error: %v)", fetchErr.Load())
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	it.Stop()
	wg.Wait()
	return float64(n) / elapsed.Seconds(), cpu, nil
}

// Throughput publishes jobs, starts replicas and returns jobs per second
// from the start until every job has a result.
func Throughput(b *Bed, js []Job, cfg jobs.Config, replicas int) (float64, time.Duration, error) {
	if err := b.Provision(cfg); err != nil {
		return 0, 0, err
	}
	if err := b.Publish(js, ""); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	var ws []*testenv.Worker
	for i := 0; i < replicas; i++ {
		w, err := b.StartWorker(cfg, workerOptions(replicas-1))
		if err != nil {
			return 0, 0, err
		}
		ws = append(ws, w)
	}
	err := b.WaitCount(topology.StreamResults, len(js), 30*time.Minute)
	elapsed := time.Since(start)
	for _, w := range ws {
		_ = w.Stop()
	}
	if err != nil {
		return 0, 0, err
	}
	return float64(len(js)) / elapsed.Seconds(), elapsed, nil
}

// publishAll publishes jobs in chunks small enough for the asynchronous
// publisher's window and checks that stream holds them all.
func publishAll(b *Bed, js []Job, prefix, stream string) error {
	for i := 0; i < len(js); i += 1000 {
		if err := b.Publish(js[i:min(i+1000, len(js))], prefix); err != nil {
			return err
		}
	}
	if n := b.Count(stream); n < len(js) {
		return fmt.Errorf("%s holds %d of %d jobs", stream, n, len(js))
	}
	return nil
}

// Median returns the median of xs.
func Median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// workerOptions are a measured replica's: quiet, metrics of its own.
func workerOptions(reserve int) testenv.WorkerOptions {
	return testenv.WorkerOptions{Reserve: reserve, Log: testenv.Quiet(), Metrics: metrics.New(prometheus.NewRegistry())}
}
