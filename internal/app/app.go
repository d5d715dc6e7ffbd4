package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mfa-worker/mfa-worker/internal/assurance"
	"github.com/mfa-worker/mfa-worker/internal/authlimit"
	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/status"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Worker is a started worker; Wait blocks until it stopped.
type Worker struct {
	// HTTPAddr is where /metrics, /healthz and /readyz answer.
	HTTPAddr string
	done     chan error
}

// Wait returns when the worker has shut down.
func (w *Worker) Wait() error { return <-w.done }

// Run starts the worker and returns once it is consuming; it stops when ctx
// ends. Call Wait for the shutdown to complete.
func Run(ctx context.Context, cfg Config, log *slog.Logger, reg *prometheus.Registry) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Load(); err != nil {
		return nil, err
	}
	m := metrics.New(reg)
	nc, err := Connect(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	fail := func(err error) (*Worker, error) {
		nc.Close()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	objs, err := topology.Provision(pctx, js, cfg.Topology, cfg.Jobs.Consumers())
	cancel()
	if err != nil {
		return fail(err)
	}
	ol, err := onelogin.NewClient(onelogin.Config{
		BaseURL: cfg.baseURL(), ClientID: cfg.OneLoginClientID, ClientSecret: cfg.OneLoginClientSecret,
		ClientSecretFunc: cfg.secretFunc(),
		UserAgent:        "mfa-worker/" + cfg.Version, Observer: m, RateLimitReserve: cfg.RateLimitReserve,
		QueryReserve: cfg.QueryReserve,
	})
	if err != nil {
		return fail(err)
	}
	runner, err := jobs.NewRunner(cfg.Jobs, log, js, objs, ol, m)
	if err != nil {
		return fail(err)
	}
	q, err := ops.StartQueryServiceWith(ctx, nc, ol, ops.QueryOptions{Version: semver(cfg.Version), MaxConcurrent: cfg.QueryConcurrency}, log)
	if err != nil {
		return fail(fmt.Errorf("start query service: %w", err))
	}
	// The blast-radius guard, shared by every replica through MFA_GUARD.
	blast := guard.New(objs.Guard, js, cfg.Guard)
	runner.UseGuard(blast)
	if err := q.AddJobEndpoint(ledger.New(objs.Ledger), objs.Jobs, blast); err != nil {
		_ = q.Stop()
		return fail(fmt.Errorf("start query service: %w", err))
	}
	if err := q.AddHistory(history.New(js), log); err != nil {
		_ = q.Stop()
		return fail(fmt.Errorf("start query service: %w", err))
	}
	// The leaver registry and re-verification run beside the job path,
	// fed by the result stream (package leaver).
	pctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	leavers, err := leaver.Start(pctx, js, cfg.Topology.Replicas, nil, log)
	cancel()
	if err != nil {
		_ = q.Stop()
		return fail(err)
	}
	slo := cfg.LeaverSLO
	if slo == 0 {
		slo = time.Hour
	}
	lm := metrics.NewLeavers(reg, leavers.View, slo)
	leavers.SetObserver(lm)
	leavers.SetJobTimes(ledger.NewPeople(objs.People))
	runner.UseLeavers(leavers.Store)
	checker, err := assurance.New(cfg.Assurance, leavers.Store, leavers.View, ol, js, lm, log)
	if err != nil {
		_ = q.Stop()
		return fail(err)
	}
	if err := q.AddLeavers(leaver.NewHandler(leavers.View)); err != nil {
		_ = q.Stop()
		return fail(fmt.Errorf("start query service: %w", err))
	}

	h := newHealth(nc, js, runner.Credentials)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", h.healthz)
	mux.HandleFunc("/readyz", h.readyz)
	af := metrics.NewAuthFailures(reg)
	if cfg.StatusPage {
		if cfg.statusAuth == nil {
			log.Warn("the status page is served without authentication: set WORKER_STATUS_AUTH_FILE, or keep WORKER_HTTP_ADDR on a trusted network",
				"http_addr", cfg.HTTPAddr)
		}
		streams := status.NewStreams(js)
		page, err := status.New(status.Config{Auth: cfg.statusAuth, Version: cfg.Version,
			Throttle: authlimit.New(authlimit.DefaultBudget, func() { af.Inc("status") })}, status.Deps{
			Gatherer: reg, Results: streams, History: history.New(js), DeadLetters: streams, Budget: ol, Log: log,
			People: ops.NewResolver(ol), Leavers: status.Leavers{Store: leavers.Store, View: leavers.View},
			Held:    guard.New(objs.Guard, js, guard.DefaultConfig()), // read only: List
			Retries: streams,
		})
		if err != nil {
			_ = q.Stop()
			return fail(err)
		}
		mux.Handle("/status", page)
	}
	addr := cfg.HTTPAddr
	if addr == "" {
		addr = ":9464"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = q.Stop()
		return fail(&config.Error{Setting: "WORKER_HTTP_ADDR", Problem: err.Error()})
	}
	hs := InternalServer(mux, log)
	w := &Worker{HTTPAddr: ln.Addr().String(), done: make(chan error, 1)}

	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server failed", "err", err)
		}
	}()
	log.Info("worker started", "version", cfg.Version, "http_addr", w.HTTPAddr, "concurrency", runner.Concurrency(), "onelogin", cfg.baseURL())
	go func() {
		runDone := make(chan error, 1)
		go func() { runDone <- runner.Run(ctx) }()
		var side sync.WaitGroup
		side.Go(func() {
			if err := leavers.Run(ctx); err != nil {
				log.Error("the leaver registry stopped; leavers are not tracked until the next start", "err", err)
			}
		})
		side.Go(func() {
			if err := checker.Run(ctx); err != nil {
				log.Error("re-verification stopped until the next start", "err", err)
			}
		})
		side.Go(func() {
			// mfa_jobs_held, from the guard's bucket.
			blast.RunHeldGauge(ctx, m.SetHeld, log)
		})
		side.Go(func() {
			// The per-person history is indexed from the result stream,
			// off the job path.
			if err := history.Index(ctx, objs.History, history.New(js), log); err != nil {
				log.Error("the history index stopped; results are not indexed until the next start", "err", err)
			}
		})
		<-ctx.Done()
		// Stop answering queries at once; answers in progress end with
		// ctx. Running jobs get their grace in runner.Run.
		_ = q.Stop()
		err := <-runDone
		side.Wait()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = hs.Shutdown(sctx)
		cancel()
		<-httpDone
		if derr := drain(nc); derr != nil && err == nil {
			err = derr
		}
		log.Info("worker stopped")
		w.done <- err
	}()
	return w, nil
}

// Connect opens a NATS connection with the configuration's servers, auth and
// TLS, reconnecting forever.
func Connect(cfg Config, log *slog.Logger) (*nats.Conn, error) {
	opts := append([]nats.Option{
		nats.Name("mfa-worker"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(false),
	}, NATSLogOptions(log)...)
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	if cfg.NATSNKey != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NATSNKey)
		if err != nil {
			return nil, &config.Error{Setting: "NATS_NKEY", Problem: "cannot read the seed file"}
		}
		opts = append(opts, o)
	}
	if cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(cfg.NATSUser, cfg.NATSPassword))
	}
	if cfg.NATSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.NATSCA))
	}
	if cfg.NATSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.NATSCert, cfg.NATSKey))
	}
	return nats.Connect(cfg.NATSURL, opts...)
}

// NATSLogOptions route nats.go's callbacks to log: asynchronous errors
// (slow consumers, permission violations), disconnects and reconnects.
// Without its error handler nats.go prints plain-text lines to stderr,
// into the JSON log.
func NATSLogOptions(log *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", err}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			log.Warn("NATS asynchronous error", attrs...)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted()) }),
	}
}

func drain(nc *nats.Conn) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return nil
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		nc.Close()
	}
	return nil
}

var semverRE = regexp.MustCompile(`^v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)$`)

// semver gives the micro service a valid version whatever the build says.
func semver(v string) string {
	if m := semverRE.FindStringSubmatch(v); m != nil {
		return m[1]
	}
	return "0.0.0-dev"
}

// health answers /healthz and /readyz.
type health struct {
	nc *nats.Conn
	js jetstream.JetStream
	// credentials says whether the worker takes jobs, and if not why
	// (no token yet, or OneLogin refuses the credentials).
	credentials func() (bool, string)
}

func newHealth(nc *nats.Conn, js jetstream.JetStream, credentials func() (bool, string)) *health {
	return &health{nc: nc, js: js, credentials: credentials}
}

func (h *health) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz: NATS connected, the streams and consumers present, a OneLogin
// token obtained (the answer names the cause when not, e.g. the
// credentials refused; jobs are not taken meanwhile).
func (h *health) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fail := func(why string) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: " + why + "\n"))
	}
	if !h.nc.IsConnected() {
		fail("NATS not connected")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	for _, s := range []string{topology.StreamJobs, topology.StreamResults, topology.StreamDLQ} {
		if _, err := h.js.Stream(ctx, s); err != nil {
			fail("stream " + s + " missing")
			return
		}
	}
	for _, c := range []string{topology.ConsumerUrgent, topology.ConsumerNormal} {
		if _, err := h.js.Consumer(ctx, topology.StreamJobs, c); err != nil {
			fail("consumer " + c + " missing")
			return
		}
	}
	if ok, cause := h.credentials(); !ok {
		fail(cause)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}
