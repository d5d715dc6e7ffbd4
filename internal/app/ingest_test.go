package app

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// TestIngestSettingsInREADME: every setting of `worker ingest` has a row
// in the README's tables showing its default.
func TestIngestSettingsInREADME(t *testing.T) {
	rows := readmeSettingRows(t)
	d := DefaultIngestConfig()
	for _, s := range IngestSettings(&d) {
		row, ok := rows[s.Env]
		if !ok {
			t.Errorf("README has no row for %s", s.Env)
			continue
		}
		if s.NATS || s.Env == "WORKER_HTTP_ADDR" || s.Env == "WORKER_LOG_LEVEL" || s.Env == "WORKER_STREAM_REPLICAS" {
			continue // the worker's rows, same defaults
		}
		if def := FormatDefault(s.Value); def != "" && def != "0" && def != "false" && !strings.Contains(row, def) {
			t.Errorf("README's row of %s does not show its default %s: %s", s.Env, def, row)
		}
	}
}

// TestIngestValidateReportsEveryProblem: one line per bad setting, all at
// once, each naming its setting.
func TestIngestValidateReportsEveryProblem(t *testing.T) {
	c := DefaultIngestConfig()
	c.Timezone = "Mars/Olympus"
	c.DateOnly = "noon"
	c.MaxConnections = 1
	c.IdleTimeout = time.Hour
	c.TLSCert = "cert.pem"
	err := c.Validate()
	var es *config.Errors
	if err == nil || !asErrors(err, &es) {
		t.Fatalf("err %v", err)
	}
	got := map[string]bool{}
	for _, e := range es.List {
		got[e.Setting] = true
	}
	for _, want := range []string{"NATS_URL", "INGEST_TIMEZONE", "INGEST_DATE_ONLY", "INGEST_MAX_CONNECTIONS", "INGEST_IDLE_TIMEOUT",
		"INGEST_TLS_CERT/INGEST_TLS_KEY", "INGEST_*_SECRET_FILE"} {
		if !got[want] {
			t.Errorf("no problem for %s: %v", want, err)
		}
	}
	ok := DefaultIngestConfig()
	ok.NATS.NATSURL = "nats://127.0.0.1:4222"
	ok.SCIMTokenFile = "token"
	ok.Addr = "" // set but empty: the default
	if err := ok.Validate(); err != nil || ok.Addr != ":8480" {
		t.Fatalf("defaults: %v (addr %q)", err, ok.Addr)
	}
}

func asErrors(err error, es **config.Errors) bool {
	e, ok := err.(*config.Errors)
	*es = e
	return ok
}

// TestInternalServerTimeouts: every internal listener has read, write and
// idle time-outs.
func TestInternalServerTimeouts(t *testing.T) {
	hs := InternalServer(nil, quiet())
	if hs.ReadHeaderTimeout <= 0 || hs.ReadTimeout <= 0 || hs.WriteTimeout <= 0 || hs.IdleTimeout <= 0 {
		t.Fatalf("time-outs %v %v %v %v", hs.ReadHeaderTimeout, hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout)
	}
}

// TestStatusPageWithoutAuthWarns: a status page without an auth file is a
// warning at start; with one, none.
func TestStatusPageWithoutAuthWarns(t *testing.T) {
	bed := newBed(t, simulator.Config{})
	for _, withAuth := range []bool{false, true} {
		cfg := workerConfig(bed, time.Second)
		cfg.StatusPage = true
		if withAuth {
			cfg.StatusAuthFile = filepath.Join(t.TempDir(), "auth")
			if err := os.WriteFile(cfg.StatusAuthFile, []byte("oncall:pw\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var logs testenv.SyncBuffer
		ctx, cancel := context.WithCancel(context.Background())
		w, err := Run(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)), prometheus.NewRegistry())
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		cancel()
		if err := w.Wait(); err != nil {
			t.Fatal(err)
		}
		warned := strings.Contains(logs.String(), "status page is served without authentication")
		if warned == withAuth {
			t.Errorf("auth file %v: warned %v", withAuth, warned)
		}
	}
}
