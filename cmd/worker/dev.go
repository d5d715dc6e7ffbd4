//go:build dev

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
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
	fs := newFlagSet("dev")
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
	// simulator, if set, is called with the simulator before the worker
	// starts (tests inject faults through it).
	simulator func(*simulator.Server)
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
	if errors.Is(err, broker.ErrPortInUse) {
		return fmt.Errorf("%w: another worker dev or nats-server runs there; choose another port with --nats-port (-1 picks a free one)", err)
	}
	if err != nil {
		return err
	}
	// Every OTP the simulator sends is printed, so that enroll, activate
	// and verify can be finished by hand. Only here: the simulator's codes
	// are not secrets, and `worker run` never links the simulator.
	// Enroll sends a code and activate sends a new one that replaces it:
	// each is labelled with the call that sent it and the state token that
	// goes with it.
	sim := simulator.New(simulator.Config{OnOTP: func(user, device int64, otp, sentBy string) {
		fmt.Fprintf(out, "simulator: OTP for user %d, device %d, sent by %s: %s (verify it with the %s result's state_token; it replaces any earlier code)\n",
			user, device, sentBy, otp, sentBy)
	}})
	if dc.simulator != nil {
		dc.simulator(sim)
	}
	ln, err := net.Listen("tcp", dc.SimAddr)
	if err != nil {
		srv.Stop()
		return fmt.Errorf("simulator address %s (--sim-addr): %w", dc.SimAddr, err)
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
	// The HR event receiver, with fresh secrets written to the data
	// directory (the banner names the files, never the secrets).
	secrets := ingest.NewDevSecrets()
	secretsDir, err := writeDevSecrets(filepath.Join(dc.DataDir, "secrets"), secrets)
	if err != nil {
		cancel()
		_ = w.Wait()
		stop()
		return err
	}
	ingestDone, ingestAddr, err := devIngest(ctx, cfg, dc.IngestAddr, secrets, set, log, reg)
	if err != nil {
		cancel()
		_ = w.Wait()
		stop()
		return err
	}
	// The commands below reach this NATS server as printed: with another
	// port than submit's default, they carry the NATS_URL prefix.
	try := "bin/worker"
	if cfg.NATSURL != defaultNATSURL {
		try = "NATS_URL=" + cfg.NATSURL + " bin/worker"
	}
	fmt.Fprintf(out, `
mfa-worker dev is ready in %v
  NATS JetStream   %s   (data in %s)
  OneLogin sim     %s   (users 1..10000000; client %s; every OTP it sends is printed here)
  metrics/health   http://%s/metrics  /healthz  /readyz
  status page      http://%s/status
  HR events in     http://%s   (POST /events, /hooks/bamboohr, /hooks/hibob, /scim/v2)
    secrets, new at every start: %s/{cloudevents-secret,bamboohr-secret,hibob-secret,scim-token}
    a signed CloudEvent with curl and openssl: docs/hr-sources.md, "Sending one by hand"

Try it (in another terminal; bin/worker is what make build and make run build):
  %[10]s submit enroll --user 42 --factor-name "OneLogin SMS" --display-name "Work phone" --number +15551234567 --wait
  %[10]s submit offboard --email user42@example.com --wait
  %[10]s history --user 42
  %[10]s dlq list
`, time.Since(start).Round(time.Millisecond), cfg.NATSURL, dc.DataDir, cfg.OneLoginBaseURL, cfg.OneLoginClientID, localAddr(w.HTTPAddr), localAddr(w.HTTPAddr),
		ingestAddr, secretsDir, try)
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

// localAddr is addr as this machine reaches it: a wildcard host (":9464"
// listens as [::]:9464) becomes 127.0.0.1, so that the banner's URLs open.
func localAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// defaultNATSURL is where submit, dlq, job and history look for NATS
// without NATS_URL or --nats-url.
const defaultNATSURL = "nats://127.0.0.1:4222"

// writeDevSecrets writes the receiver's secrets to dir, one file each,
// readable by the owner only, in the forms the INGEST_*_FILE settings of
// `worker ingest` read. It returns dir.
func writeDevSecrets(dir string, s ingest.DevSecrets) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("dev secrets: %w", err)
	}
	for name, v := range map[string]string{
		"cloudevents-secret": s.CloudEvents.Text,
		"bamboohr-secret":    s.BambooHR.Text,
		"hibob-secret":       s.HiBob.Text,
		"scim-token":         s.SCIMToken.Text,
	} {
		// WriteFile keeps the mode of a file that exists: set it again.
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("dev secrets: %w", err)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			return "", fmt.Errorf("dev secrets: %w", err)
		}
	}
	return dir, nil
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
