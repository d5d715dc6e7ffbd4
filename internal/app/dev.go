package app

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

	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

// DevConfig configures `worker dev`.
type DevConfig struct {
	DataDir  string // JetStream storage (default ./data)
	NATSPort int    // default 4222; -1 picks a free port
	SimAddr  string // the simulator's address (default 127.0.0.1:8089)
	HTTPAddr string // metrics and health (default :9464)
	Version  string
	// Out receives the how-to banner.
	Out io.Writer
}

// Dev runs an embedded NATS JetStream server, the OneLogin simulator and a
// worker wired to both, until ctx ends.
func Dev(ctx context.Context, dc DevConfig, log *slog.Logger, reg *prometheus.Registry) (*Worker, error) {
	start := time.Now()
	if dc.DataDir == "" {
		dc.DataDir = "data"
	}
	if dc.SimAddr == "" {
		dc.SimAddr = "127.0.0.1:8089"
	}
	srv, err := broker.Start(broker.Options{Port: dc.NATSPort, StoreDir: filepath.Join(dc.DataDir, "jetstream")})
	if err != nil {
		return nil, err
	}
	sim := simulator.New(simulator.Config{})
	ln, err := net.Listen("tcp", dc.SimAddr)
	if err != nil {
		srv.Stop()
		return nil, fmt.Errorf("simulator address %s: %w", dc.SimAddr, err)
	}
	hs := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	simDone := make(chan struct{})
	go func() {
		defer close(simDone)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("simulator failed", "err", err)
		}
	}()
	cfg := Config{
		NATSURL:              srv.ClientURL(),
		OneLoginBaseURL:      "http://" + ln.Addr().String(),
		OneLoginClientID:     sim.Config().ClientID,
		OneLoginClientSecret: sim.Config().ClientSecret,
		HTTPAddr:             dc.HTTPAddr,
		Version:              dc.Version,
	}
	w, err := Run(ctx, cfg, log, reg)
	if err != nil {
		_ = hs.Close()
		<-simDone
		srv.Stop()
		return nil, err
	}
	dw := &Worker{HTTPAddr: w.HTTPAddr, done: make(chan error, 1)}
	go func() {
		err := w.Wait()
		_ = hs.Close()
		<-simDone
		srv.Stop()
		dw.done <- err
	}()
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
	return dw, nil
}
