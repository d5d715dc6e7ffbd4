//go:build dev

package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/ingest"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/rules"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

// devUsage lists the commands only the worker-dev binary has.
const devUsage = `
commands of worker-dev (built with -tags dev):
  dev        embedded NATS JetStream + OneLogin simulator + worker, for trying it out
  simulate   the OneLogin simulator alone, on an address
`

// devCommand returns the worker-dev command called name.
func devCommand(name string) (func(ctx context.Context, args []string, stdout, stderr io.Writer) error, bool) {
	switch name {
	case "dev":
		return cmdDev, true
	case "simulate":
		return cmdSimulate, true
	}
	return nil, false
}

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	dc := devConfig{Version: version, Out: stdout}
	fs.StringVar(&dc.DataDir, "data-dir", env("WORKER_DATA_DIR", "data"), "JetStream storage folder")
	fs.IntVar(&dc.NATSPort, "nats-port", 4222, "NATS port (-1: any free port)")
	fs.StringVar(&dc.SimAddr, "sim-addr", "127.0.0.1:8089", "OneLogin simulator address")
	fs.StringVar(&dc.HTTPAddr, "http-addr", env("WORKER_HTTP_ADDR", "127.0.0.1:9464"), "metrics, health and status page address (loopback, like the others: the status page runs without auth here)")
	fs.StringVar(&dc.IngestAddr, "ingest-addr", env("INGEST_HTTP_ADDR", "127.0.0.1:8480"), "HR event receiver address")
	fs.StringVar(&dc.Rules, "rules", env("WORKER_RULES", ""), "ingest rules file; empty means the built-in rules (WORKER_RULES)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return dev(ctx, dc, newLogger(stderr, false, slog.LevelInfo), prometheus.NewRegistry(), nil)
}

// devConfig configures `worker dev`.
type devConfig struct {
	DataDir  string // JetStream storage (default ./data)
	NATSPort int    // default 4222; -1 picks a free port
	SimAddr  string // the simulator's address (default 127.0.0.1:8089)
	HTTPAddr string // metrics, health and the status page (default 127.0.0.1:9464)
	// IngestAddr is where the HR event receiver listens (default
	// 127.0.0.1:8480).
	IngestAddr string
	// Rules is the ingest rules file; empty means the built-in rules.
	Rules   string
	Version string
	// Out receives the how-to banner.
	Out io.Writer
}

// dev runs an embedded NATS JetStream server, the OneLogin simulator and a
// worker wired to both until ctx ends, and returns when all three stopped.
// ready, if not nil, receives the worker's HTTP address once it runs.
func dev(ctx context.Context, dc devConfig, log *slog.Logger, reg *prometheus.Registry, ready func(httpAddr string)) error {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dc.DataDir = cmp.Or(dc.DataDir, "data")
	dc.SimAddr = cmp.Or(dc.SimAddr, "127.0.0.1:8089")
	dc.IngestAddr = cmp.Or(dc.IngestAddr, "127.0.0.1:8480")
	dc.HTTPAddr = cmp.Or(dc.HTTPAddr, "127.0.0.1:9464")
	set := rules.Builtin()
	if dc.Rules != "" {
		var err error
		if set, err = rules.Load(dc.Rules); err != nil {
			return &config.Error{Setting: "--rules", Problem: err.Error()}
		}
	}
	out := &syncWriter{w: dc.Out}
	if dc.Out == nil {
		out.w = io.Discard
	}
	srv, err := broker.Start(broker.Options{Port: dc.NATSPort, StoreDir: filepath.Join(dc.DataDir, "jetstream")})
	if err != nil {
		return err
	}
	// Every OTP the simulator sends is printed, so that enroll, activate
	// and verify can be finished by hand. Only here: the simulator's codes
	// are not secrets, and `worker run` never links the simulator.
	sim := simulator.New(simulator.Config{OnOTP: func(user, device int64, otp string) {
		fmt.Fprintf(out, "simulator: OTP for user %d, device %d: %s\n", user, device, otp)
	}})
	ln, err := net.Listen("tcp", dc.SimAddr)
	if err != nil {
		srv.Stop()
		return fmt.Errorf("simulator address %s: %w", dc.SimAddr, err)
	}
	hs := app.InternalServer(sim, log) // read, write and idle time-outs
	simDone := make(chan struct{})
	go func() {
		defer close(simDone)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("simulator failed", "err", err)
		}
	}()
	cfg := app.Config{
		NATSURL:              srv.ClientURL(),
		OneLoginBaseURL:      "http://" + ln.Addr().String(),
		OneLoginClientID:     sim.Config().ClientID,
		OneLoginClientSecret: sim.Config().ClientSecret,
		HTTPAddr:             dc.HTTPAddr,
		StatusPage:           true,
		Version:              dc.Version,
	}
	stop := func() {
		_ = hs.Close()
		<-simDone
		srv.Stop()
	}
	w, err := app.Run(ctx, cfg, log, reg)
	if err != nil {
		stop()
		return err
	}
	// The HR event receiver, with fresh secrets printed below.
	secrets := ingest.NewDevSecrets()
	ingestDone, ingestAddr, err := devIngest(ctx, cfg, dc.IngestAddr, secrets, set, log, reg)
	if err != nil {
		cancel()
		_ = w.Wait()
		stop()
		return err
	}
	fmt.Fprintf(out, `
mfa-worker dev is ready in %v
  NATS JetStream   %s   (data in %s)
  OneLogin sim     %s   (users 1..10000000; client %s; every OTP it sends is printed here)
  metrics/health   http://%s/metrics  /healthz  /readyz
  status page      http://%s/status
  HR events in     http://%s   (POST /events, /hooks/bamboohr, /hooks/hibob, /scim/v2)
    CloudEvents secret  %s
    BambooHR secret     %s
    HiBob secret        %s
    SCIM token          %s
    a signed CloudEvent with curl and openssl: docs/hr-sources.md, "Sending one by hand"

Try it (in another terminal; bin/worker is what make build and make run build):
  bin/worker submit enroll --user 42 --factor-name "OneLogin SMS" --display-name "Work phone" --number +15551234567 --wait
  bin/worker submit offboard --email user42@example.com --wait
  bin/worker history --user 42
  bin/worker dlq list
`, time.Since(start).Round(time.Millisecond), cfg.NATSURL, dc.DataDir, cfg.OneLoginBaseURL, cfg.OneLoginClientID, w.HTTPAddr, w.HTTPAddr,
		ingestAddr, secrets.CloudEvents.Text, secrets.BambooHR.Text, secrets.HiBob.Text, secrets.SCIMToken.Text)
	if ready != nil {
		ready(w.HTTPAddr)
	}
	err = w.Wait()
	if ierr := <-ingestDone; ierr != nil && err == nil {
		err = ierr
	}
	stop()
	return err
}

// devIngest starts the HR event receiver and its mapper on addr with dev
// secrets, on a NATS connection of its own. The returned channel yields
// Serve's error once ctx ended and it stopped.
// Its metrics go to reg, next to the worker's.
func devIngest(ctx context.Context, cfg app.Config, addr string, secrets ingest.DevSecrets, set *rules.Set, log *slog.Logger, reg *prometheus.Registry) (<-chan error, string, error) {
	nc, err := app.Connect(cfg, log)
	if err != nil {
		return nil, "", fmt.Errorf("ingest: connect to NATS: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	s, err := ingest.New(pctx, ingest.Config{Addr: addr, Secrets: secrets.Secrets(), Rules: set},
		ingest.Deps{Conn: nc, Log: log.With("component", "ingest"), Metrics: metrics.NewIngest(reg), AuthFailures: metrics.NewAuthFailures(reg)})
	cancel()
	if err != nil {
		nc.Close()
		return nil, "", err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		nc.Close()
		return nil, "", fmt.Errorf("ingest address %s: %w", addr, err)
	}
	done := make(chan error, 1)
	go func() {
		err := s.Serve(ctx, ln)
		_ = nc.Drain()
		done <- err
	}()
	return done, ln.Addr().String(), nil
}

// syncWriter serialises writes from the simulator's OTP callback and the
// banner.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
