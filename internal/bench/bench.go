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
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

// Bed is a JetStream server and a OneLogin simulator for one measurement.
type Bed struct {
	dir string
	srv *broker.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	Sim *simulator.Server
	hs  *httptest.Server
}

// NewBed starts a bed whose JetStream data lives under a fresh folder.
func NewBed(simCfg simulator.Config) (*Bed, error) {
	dir, err := os.MkdirTemp("", "mfa-bench-*")
	if err != nil {
		return nil, err
	}
	srv, err := broker.Start(broker.Options{Port: -1, StoreDir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		srv.Stop()
		os.RemoveAll(dir)
		return nil, err
	}
	js, _ := jetstream.New(nc)
	sim := simulator.New(simCfg)
	return &Bed{dir: dir, srv: srv, nc: nc, js: js, Sim: sim, hs: httptest.NewServer(sim)}, nil
}

// Close stops everything and removes the data.
func (b *Bed) Close() {
	b.hs.Close()
	b.nc.Close()
	b.srv.Stop()
	os.RemoveAll(b.dir)
}

// NATSURL is the bed's client URL.
func (b *Bed) NATSURL() string { return b.srv.ClientURL() }

// SimURL is the simulator's base URL.
func (b *Bed) SimURL() string { return b.hs.URL }

// Provision creates the worker's streams.
func (b *Bed) Provision(cfg jobs.Config) error {
	_, err := jobs.Provision(context.Background(), b.js, jobs.Topology{}, cfg)
	return err
}

// Worker is an in-process replica.
type Worker struct {
	cancel context.CancelFunc
	done   chan error
	nc     *nats.Conn
}

// StartWorker runs a replica with its own connection and OneLogin client;
// reserve is its WORKER_RATE_LIMIT_RESERVE.
func (b *Bed) StartWorker(cfg jobs.Config, reserve int) (*Worker, error) {
	nc, err := nats.Connect(b.srv.ClientURL())
	if err != nil {
		return nil, err
	}
	js, _ := jetstream.New(nc)
	objs, err := jobs.Provision(context.Background(), js, jobs.Topology{}, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	m := metrics.New(prometheus.NewRegistry())
	ol, err := onelogin.NewClient(onelogin.Config{BaseURL: b.hs.URL, ClientID: b.Sim.Config().ClientID, ClientSecret: b.Sim.Config().ClientSecret, Observer: m, RateLimitReserve: reserve})
	if err != nil {
		nc.Close()
		return nil, err
	}
	r, err := jobs.NewRunner(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), js, objs, ol, m)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Worker{cancel: cancel, done: make(chan error, 1), nc: nc}
	go func() { w.done <- r.Run(ctx) }()
	return w, nil
}

// Stop shuts the replica down.
func (w *Worker) Stop() error {
	w.cancel()
	err := <-w.done
	w.nc.Close()
	return err
}

// Job is one job to publish.
type Job struct {
	ID, Type string
	Body     []byte
}

// Mix builds n jobs of the fixed mix for users from base on, seeding the
// simulator: 40% enroll, 20% remove, 20% offboard (one device each), 10%
// activate, 10% generate_token.
func Mix(sim *simulator.Server, n int, base int64) ([]Job, error) {
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	xkey, _ := kp.PublicKey()
	out := make([]Job, 0, n)
	for i := 0; i < n; i++ {
		user := base + int64(i)
		var typ string
		var params map[string]any
		switch i % 10 {
		case 0, 1, 2, 3:
			typ, params = "enroll", map[string]any{"factor_name": "OneLogin SMS", "display_name": "Phone", "number": "+15551230000"}
		case 4, 5:
			dev, err := sim.EnrollDevice(user, "OneLogin Protect", "Pixel", true)
			if err != nil {
				return nil, err
			}
			typ, params = "remove", map[string]any{"device_id": dev}
		case 6, 7:
			if _, err := sim.EnrollDevice(user, "Google Authenticator", "GA", true); err != nil {
				return nil, err
			}
			typ = "offboard"
		case 8:
			dev, err := sim.EnrollDevice(user, "OneLogin Voice", "Desk", true)
			if err != nil {
				return nil, err
			}
			typ, params = "activate", map[string]any{"device_id": dev}
		case 9:
			typ, params = "generate_token", map[string]any{"recipient_xkey": xkey}
		}
		out = append(out, Of(fmt.Sprintf("b-%d-%d", base, i), typ, user, params))
	}
	return out, nil
}

// Of builds one job.
func Of(id, typ string, user int64, params map[string]any) Job {
	m := map[string]any{"id": id, "type": typ, "user_id": user}
	if params != nil {
		m["params"] = params
	}
	b, _ := json.Marshal(m)
	return Job{ID: id, Type: typ, Body: b}
}

// Publish sends jobs to their subjects (or to prefix+type) with their ids as
// Nats-Msg-Id.
func (b *Bed) Publish(js []Job, prefix string) error {
	if prefix == "" {
		prefix = job.SubjectPrefix
	}
	for i, j := range js {
		m := nats.NewMsg(prefix + j.Type)
		m.Data = j.Body
		m.Header.Set(jetstream.MsgIDHeader, j.ID)
		if _, err := b.js.PublishMsgAsync(m); err != nil {
			return err
		}
		if i%5000 == 4999 {
			<-b.js.PublishAsyncComplete()
		}
	}
	select {
	case <-b.js.PublishAsyncComplete():
		return nil
	case <-time.After(5 * time.Minute):
		return errors.New("publishing timed out")
	}
}

// Count returns a stream's message count.
func (b *Bed) Count(stream string) int {
	s, err := b.js.Stream(context.Background(), stream)
	if err != nil {
		return -1
	}
	info, err := s.Info(context.Background())
	if err != nil {
		return -1
	}
	return int(info.State.Msgs)
}

// WaitCount waits until a stream holds n messages.
func (b *Bed) WaitCount(stream string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for b.Count(stream) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d messages after %v", stream, b.Count(stream), n, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// Results reads every result.
func (b *Bed) Results() ([]job.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cons, err := b.js.OrderedConsumer(ctx, jobs.StreamResults, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	total := b.Count(jobs.StreamResults)
	var out []job.Result
	for len(out) < total {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		for m := range batch.Messages() {
			var r job.Result
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

// Floor is the cost every JetStream worker pays: a bare consumer that
// fetches each message, publishes one result for it and acks it, with
// concurrency goroutines, and does nothing else. It returns messages per
// second over n messages published beforehand.
func (b *Bed) Floor(n, concurrency int) (float64, error) {
	ctx := context.Background()
	if _, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "FLOOR", Subjects: []string{"floor.jobs.*"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		return 0, err
	}
	if _, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "FLOOR_RESULTS", Subjects: []string{"floor.results.>"}, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		return 0, err
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, "FLOOR", jetstream.ConsumerConfig{Durable: "floor", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 1000})
	if err != nil {
		return 0, err
	}
	mix, err := Mix(b.Sim, n, 1)
	if err != nil {
		return 0, err
	}
	if err := b.Publish(mix, "floor.jobs."); err != nil {
		return 0, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(max(1, concurrency/4)))
	if err != nil {
		return 0, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	finished := make(chan struct{})
	msgs := make(chan jetstream.Msg)
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range msgs {
				md, _ := m.Metadata()
				var j struct {
					ID string `json:"id"`
				}
				_ = json.Unmarshal(m.Data(), &j)
				r := nats.NewMsg("floor.results." + m.Subject()[len("floor.jobs."):])
				r.Data = m.Data()
				r.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s:%d", j.ID, md.Sequence.Stream))
				if _, err := b.js.PublishMsg(ctx, r); err == nil {
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
			if err != nil {
				close(msgs)
				return
			}
			msgs <- m
		}
	}()
	select {
	case <-finished:
	case <-time.After(10 * time.Minute):
		it.Stop()
		wg.Wait()
		return 0, errors.New("floor timed out")
	}
	elapsed := time.Since(start)
	it.Stop()
	wg.Wait()
	return float64(n) / elapsed.Seconds(), nil
}

// Throughput publishes jobs, starts replicas and returns jobs per second
// from the start until every job has a result.
func (b *Bed) Throughput(js []Job, cfg jobs.Config, replicas int) (float64, time.Duration, error) {
	if err := b.Provision(cfg); err != nil {
		return 0, 0, err
	}
	if err := b.Publish(js, ""); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	var ws []*Worker
	for i := 0; i < replicas; i++ {
		w, err := b.StartWorker(cfg, replicas-1)
		if err != nil {
			return 0, 0, err
		}
		ws = append(ws, w)
	}
	err := b.WaitCount(jobs.StreamResults, len(js), 30*time.Minute)
	elapsed := time.Since(start)
	for _, w := range ws {
		_ = w.Stop()
	}
	if err != nil {
		return 0, 0, err
	}
	return float64(len(js)) / elapsed.Seconds(), elapsed, nil
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
