//go:build dev

package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// startDev runs `worker dev` on free ports until the test ends and returns
// once it is ready, with how long that took and the NATS URL its banner
// names.
func startDev(t *testing.T) (time.Duration, string) {
	ready, nurl, _ := startDevOutput(t)
	return ready, nurl
}

// startDevOutput is startDev that also returns what dev prints (the
// banner, the simulator's OTPs).
func startDevOutput(t *testing.T) (time.Duration, string, *testenv.SyncBuffer) {
	t.Helper()
	return startDevIn(t, t.TempDir())
}

// runDev runs dev with cfg (its logs discarded, a registry of its own)
// until the test ends, failing the test if it then returns an error, and
// returns the address of its HTTP listener once it listens.
func runDev(t *testing.T, cfg devConfig) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- dev(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), func(a string) { addr <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v", err)
		}
	})
	select {
	case a := <-addr:
		return a
	case err := <-done:
		done <- err
		t.Fatal(err)
		return ""
	}
}

// startDevIn is startDevOutput with dev's data directory at dataDir, which
// the caller makes (t.TempDir) before calling, so that it is removed after
// dev has stopped (cleanups run last first).
func startDevIn(t *testing.T, dataDir string) (time.Duration, string, *testenv.SyncBuffer) {
	t.Helper()
	banner := &testenv.SyncBuffer{}
	start := time.Now()
	httpAddr := runDev(t, devConfig{DataDir: dataDir, NATSPort: -1, SimAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", Version: "1.2.3", Out: banner})
	if err := testenv.WaitHTTP("http://"+httpAddr+"/readyz", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(start)
	var nurl string
	for _, l := range strings.Split(banner.String(), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "NATS" {
			nurl = f[2]
		}
	}
	if nurl == "" {
		t.Fatalf("banner names no NATS URL:\n%s", banner.String())
	}
	return ready, nurl, banner
}

func TestDevIsReadyQuicklyAndRunsJobs(t *testing.T) {
	ready, nurl := startDev(t)
	t.Logf("dev ready in %v", ready)
	if ready > 2*time.Second {
		t.Errorf("dev took %v to be ready; the promise is under 2s", ready)
	}
	m, err := testenv.RoundTrip(nurl, "offboard", `{"id":"dev-1","type":"offboard","user_id":5}`, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "mfa.results.offboard.noop" {
		t.Fatalf("result on %s: %s", m.Subject, m.Data)
	}
}
