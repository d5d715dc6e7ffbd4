package testenv

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// WorkerOptions tune an in-process replica.
type WorkerOptions struct {
	// Reserve is its WORKER_RATE_LIMIT_RESERVE.
	Reserve int
	// Metrics receive its metrics; the bed's when nil.
	Metrics *metrics.Metrics
	// Log receives its logs; the bed's Logs when nil.
	Log *slog.Logger
	// Timeout and TokenMaxElapsed of its OneLogin client (defaults of the
	// client when zero).
	Timeout, TokenMaxElapsed time.Duration
	// Topology is its streams' settings (the defaults when zero).
	Topology topology.Config
	// Guard is its blast-radius guard (WORKER_GUARD_LIMIT and
	// WORKER_GUARD_WINDOW); the zero value counts nothing (limit 0) but
	// still honours holds, releases and discards, as the worker does.
	Guard guard.Config
}

// Worker is an in-process replica with its own NATS connection and
// OneLogin client.
type Worker struct {
	cancel context.CancelFunc
	done   chan error
	nc     *nats.Conn
	cut    *cuttable
	once   sync.Once
	err    error
}

// StartWorker provisions and runs a replica.
func (b *Bed) StartWorker(cfg jobs.Config, o WorkerOptions) (*Worker, error) {
	nc, err := nats.Connect(b.srv.ClientURL())
	if err != nil {
		return nil, err
	}
	js, _ := jetstream.New(nc)
	objs, err := topology.Provision(context.Background(), js, o.Topology, cfg.Consumers())
	if err != nil {
		nc.Close()
		return nil, err
	}
	m := o.Metrics
	if m == nil {
		m = b.M
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewJSONHandler(b.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cut := &cuttable{base: onelogin.NewTransport()}
	ol, err := onelogin.NewClient(onelogin.Config{
		BaseURL: b.SimURL, ClientID: b.Sim.Config().ClientID, ClientSecret: b.Sim.Config().ClientSecret,
		Timeout: o.Timeout, TokenMaxElapsed: o.TokenMaxElapsed, Observer: m, Transport: cut, RateLimitReserve: o.Reserve,
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	r, err := jobs.NewRunner(cfg, log, js, objs, ol, m)
	if err != nil {
		nc.Close()
		return nil, err
	}
	// As app wires them: the blast-radius guard and the leaver registry's
	// hooks in the job path, and mfa_jobs_held from the guard's bucket.
	blast := guard.New(objs.Guard, js, o.Guard)
	r.UseGuard(blast)
	lkv, err := leaver.ProvisionBucket(context.Background(), js, 1)
	if err != nil {
		nc.Close()
		return nil, err
	}
	r.UseLeavers(leaver.NewStore(lkv))
	ctx, cancel := context.WithCancel(context.Background())
	w := &Worker{cancel: cancel, done: make(chan error, 1), nc: nc, cut: cut}
	indexed := history.Start(ctx, objs.History, history.New(js), log)
	gauged := make(chan struct{})
	go func() {
		defer close(gauged)
		blast.RunHeldGauge(ctx, m.SetHeld, log)
	}()
	go func() {
		err := r.Run(ctx)
		<-indexed
		<-gauged
		w.done <- err
	}()
	return w, nil
}

// Stop shuts the replica down gracefully and returns Run's error. It may be
// called more than once.
func (w *Worker) Stop() error {
	w.once.Do(func() {
		w.cancel()
		w.err = <-w.done
		w.nc.Close()
	})
	return w.err
}

// Kill stops the replica the hard way: OneLogin and NATS are cut off first,
// so it can neither make another effect nor settle a message; only then do
// its goroutines unwind.
func (w *Worker) Kill() error {
	w.cut.dead.Store(true)
	w.nc.Close()
	return w.Stop()
}

// errKilled is what a killed replica's OneLogin calls fail with.
var errKilled = errors.New("worker killed")

// cuttable is a transport that can be cut off at once, as when the process
// dies: nothing it sends after that reaches OneLogin, and an answer still
// in flight is lost.
type cuttable struct {
	base http.RoundTripper
	dead atomic.Bool
}

func (c *cuttable) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.dead.Load() {
		return nil, errKilled
	}
	resp, err := c.base.RoundTrip(r)
	if c.dead.Load() {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, errKilled
	}
	return resp, err
}
