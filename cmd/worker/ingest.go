package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/ingest"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// ingestSettings are `worker ingest`'s settings after parsing.
type ingestSettings struct {
	nats     *app.Config
	cfg      ingest.Config
	httpAddr string // WORKER_HTTP_ADDR: /metrics, internal
	level    slog.Level
}

func cmdIngest(ctx context.Context, args []string, stderr io.Writer) error {
	st, err := ingestConfig(args)
	if err != nil {
		return err
	}
	log := newLogger(stderr, true, st.level)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.NewIngest(reg)
	nc, err := app.Connect(*st.nats, log)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	// The mapper gets a connection of its own, so that its traffic never
	// queues in front of a sender's event.
	mc, err := app.Connect(*st.nats, log)
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer mc.Close()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	s, err := ingest.New(pctx, st.cfg, ingest.Deps{Conn: nc, MapperConn: mc, Log: log, Metrics: m})
	cancel()
	if err != nil {
		return asConfigError(err)
	}
	// /metrics stays on the internal address, never on the one HR systems
	// reach.
	ln, err := net.Listen("tcp", st.httpAddr)
	if err != nil {
		return &config.Error{Setting: "WORKER_HTTP_ADDR", Problem: err.Error()}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/healthz", s.Handler())
	mux.Handle("/readyz", s.Handler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed", "err", err)
		}
	}()
	err = s.Run(ctx)
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = hs.Shutdown(sctx)
	scancel()
	<-done
	_ = mc.Drain()
	_ = nc.Drain()
	log.Info("ingest stopped")
	return asConfigError(err)
}

// asConfigError gives setting problems the worker's exit status 2.
func asConfigError(err error) error {
	var se *ingest.SettingError
	if errors.As(err, &se) {
		return &config.Error{Setting: se.Setting, Problem: se.Problem}
	}
	return err
}

// ingestConfig reads `worker ingest` flags, each defaulting to its
// environment variable. Every bad setting is reported, one line each.
func ingestConfig(args []string) (ingestSettings, error) {
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	st := ingestSettings{nats: natsFlags(fs, "")}
	c := &st.cfg
	fs.StringVar(&c.Addr, "addr", env("INGEST_HTTP_ADDR", ":8480"), "where HR systems reach the receiver (INGEST_HTTP_ADDR)")
	fs.StringVar(&c.TLSCert, "tls-cert", env("INGEST_TLS_CERT", ""), "TLS certificate file; with --tls-key serves HTTPS (INGEST_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", env("INGEST_TLS_KEY", ""), "TLS key file (INGEST_TLS_KEY)")
	fs.StringVar(&st.httpAddr, "http-addr", env("WORKER_HTTP_ADDR", ":9464"), "internal metrics and health address (WORKER_HTTP_ADDR)")
	files := []struct {
		p    *string
		name string
		env  string
		help string
	}{
		{new(string), "cloudevents-secret-file", "INGEST_CLOUDEVENTS_SECRET_FILE", "Standard Webhooks secret for POST /events"},
		{new(string), "bamboohr-secret-file", "INGEST_BAMBOOHR_SECRET_FILE", "BambooHR webhook private key"},
		{new(string), "hibob-secret-file", "INGEST_HIBOB_SECRET_FILE", "HiBob webhook signing secret"},
		{new(string), "scim-token-file", "INGEST_SCIM_TOKEN_FILE", "SCIM bearer token"},
	}
	for _, f := range files {
		fs.StringVar(f.p, f.name, env(f.env, ""), "file holding the "+f.help+" ("+f.env+")")
	}
	rulesFile := fs.String("rules", env("WORKER_RULES", ""), "rules file; empty means the built-in rules (WORKER_RULES)")
	level := fs.String("log-level", env("WORKER_LOG_LEVEL", "info"), "log level (WORKER_LOG_LEVEL)")

	var err error
	replicas, e := envInt("WORKER_STREAM_REPLICAS", 1)
	err = errors.Join(err, e)
	fs.IntVar(&c.Topology.Replicas, "stream-replicas", replicas, "replicas of HR_EVENTS and MFA_SCIM_USERS (WORKER_STREAM_REPLICAS)")
	conc, e := envInt("INGEST_CONCURRENCY", 4)
	err = errors.Join(err, e)
	fs.IntVar(&c.Concurrency, "concurrency", conc, "batches of queued events (up to 64 each) the mapper handles at once (INGEST_CONCURRENCY)")
	age, e := envDuration("INGEST_EVENTS_MAX_AGE", 30*24*time.Hour)
	err = errors.Join(err, e)
	fs.DurationVar(&c.Topology.EventsMaxAge, "events-max-age", age, "how long HR_EVENTS keeps events (INGEST_EVENTS_MAX_AGE)")
	if perr := fs.Parse(args); perr != nil {
		return st, perr
	}
	if fs.NArg() > 0 {
		return st, usageErr("ingest takes no arguments, got %q", fs.Args())
	}
	if st.nats.NATSURL == "" {
		err = errors.Join(err, &config.Error{Setting: "NATS_URL", Problem: "required (e.g. nats://127.0.0.1:4222)"})
	}
	if (st.nats.NATSUser == "") != (st.nats.NATSPassword == "") {
		err = errors.Join(err, &config.Error{Setting: "NATS_USER/NATS_PASSWORD", Problem: "set both or neither"})
	}
	keys := make([][]byte, len(files))
	for i, f := range files {
		k, e := ingest.ReadSecretFile(f.env, *f.p)
		err = errors.Join(err, asConfigError(e))
		keys[i] = k
	}
	if keys[0] != nil {
		k, e := ingest.ParseWebhookSecret(keys[0])
		if e != nil {
			err = errors.Join(err, &config.Error{Setting: "INGEST_CLOUDEVENTS_SECRET_FILE", Problem: e.Error()})
		}
		keys[0] = k
	}
	c.Secrets = ingest.Secrets{CloudEvents: keys[0], BambooHR: keys[1], HiBob: keys[2], SCIMToken: keys[3]}
	if *rulesFile != "" {
		set, e := rules.Load(*rulesFile)
		if e != nil {
			err = errors.Join(err, &config.Error{Setting: "WORKER_RULES", Problem: e.Error()})
		}
		c.Rules = set
	}
	if *level == "" {
		*level = "info"
	}
	l, e := parseLevel(*level)
	err = errors.Join(err, e)
	st.level = l
	if err == nil {
		err = asConfigError(c.Validate())
	}
	return st, err
}
