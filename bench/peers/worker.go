package peers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Worker runs n offboard jobs through the worker as `worker run` wires it
// (app.Run: runner, ledger, locks, history index, query service, HTTP
// endpoints), with the given concurrency, against the stand-in. The
// streams are provisioned and the jobs published first, as for the others.
func Worker(b *Bed, st *Standin, n, concurrency int) (Run, error) {
	cfg := app.DefaultConfig()
	cfg.NATSURL = b.URL()
	cfg.OneLoginBaseURL = st.URL
	cfg.OneLoginClientID, cfg.OneLoginClientSecret = ClientID, ClientSecret
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.LogLevel = "warn"
	cfg.Version = "bench"
	cfg.Jobs.Concurrency = concurrency
	// Thousands of offboards of one (empty) source are what the blast-radius
	// guard holds for an operator; a throughput run measures the job path,
	// as the container fault scenarios do, with counting off.
	cfg.Guard.Limit = 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := topology.Provision(pctx, b.JS, cfg.Topology, cfg.Jobs.Consumers())
	pcancel()
	if err != nil {
		return Run{}, err
	}
	if err := b.Publish(Offboards(n), job.SubjectPrefix+"offboard", nil); err != nil {
		return Run{}, err
	}
	stop := meter("worker", n)
	w, err := app.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		return Run{}, err
	}
	werr := b.WaitCount(topology.StreamResults, n, 10*time.Minute)
	run := stop()
	cancel()
	if err := w.Wait(); err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		return run, fmt.Errorf("worker: %w", werr)
	}
	if got := b.Count(topology.StreamResults); got != n {
		return run, fmt.Errorf("worker: %d results for %d jobs", got, n)
	}
	return run, nil
}
