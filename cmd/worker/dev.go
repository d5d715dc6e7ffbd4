package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

// devConfig configures `worker dev`.
type devConfig struct {
	DataDir  string // JetStream storage (default ./data)
	NATSPort int    // default 4222; -1 picks a free port
	SimAddr  string // the simulator's address (default 127.0.0.1:8089)
	HTTPAddr string // metrics and health (default :9464)
	Version  string
	// Out receives the how-to banner.
	Out io.Writer
}

// dev runs an embedded NATS JetStream server, the OneLogin simulator and a
// worker wired to both until ctx ends, and returns when all three stopped.
// ready, if not nil, receives the worker's HTTP address once it runs.
func dev(ctx context.Context, dc devConfig, log *slog.Logger, reg *prometheus.Registry, ready func(httpAddr string)) error {
	start := time.Now()
	if dc.DataDir == "" {
		dc.DataDir = "data"
	}
	if dc.SimAddr == "" {
		dc.SimAddr = "127.0.0.1:8089"
	}
	srv, err := broker.Start(broker.Options{Port: dc.NATSPort, StoreDir: filepath.Join(dc.DataDir, "jetstream")})
	if err != nil {
		return err
	}
	sim := simulator.New(simulator.Config{})
	ln, err := net.Listen("tcp", dc.SimAddr)
	if err != nil {
		srv.Stop()
		return fmt.Errorf("simulator address %s: %w", dc.SimAddr, err)
	}
	hs := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
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
	if dc.Out != nil {
		fmt.Fprintf(dc.Out, `
mfa-worker dev is ready in %v
  NATS JetStream   %s   (data in %s)
  OneLogin sim     %s   (users 1..10000000; client %s)
  metrics/health   http://%s/metrics  /healthz  /readyz

Try it (in another terminal):
  go run ./cmd/worker submit enroll --user 42 --factor-name "OneLogin SMS" --display-name "Work phone" --number +15551234567 --wait
  go run ./cmd/worker submit offboard --user 42 --wait
  go run ./cmd/worker dlq list
`, time.Since(start).Round(time.Millisecond), cfg.NATSURL, dc.DataDir, cfg.OneLoginBaseURL, cfg.OneLoginClientID, w.HTTPAddr)
	}
	if ready != nil {
		ready(w.HTTPAddr)
	}
	err = w.Wait()
	stop()
	return err
}
