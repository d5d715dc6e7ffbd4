// Package testenv is the one test bed of the worker: an in-process NATS
// JetStream server, the OneLogin simulator behind a real HTTP server,
// in-process worker replicas, publishing jobs, the job mix, and reading a
// stream to its end. The pipeline's, the app's, the benchmarks' and the
// container tests use it. It is for tests and benchmarks only.
//
// testenv.go is the bed (server, simulator, provisioning); worker.go the
// in-process replicas; workload.go the jobs, the mixes and publishing;
// readers.go reading streams back; wait.go waiting on conditions
// (Eventually) and log sinks; http.go HTTP probes.
package testenv

import (
	"context"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Broker is an embedded NATS JetStream server (file storage) whose data
// lives under a folder of its own, and a client of it.
type Broker struct {
	dir string
	srv *broker.Server
	nc  *nats.Conn
	// JS is a client of the server.
	JS jetstream.JetStream
}

// StartBroker starts a server whose data lives under a fresh folder.
func StartBroker() (*Broker, error) {
	dir, err := os.MkdirTemp("", "mfa-testenv-*")
	if err != nil {
		return nil, err
	}
	srv, err := broker.Start(broker.Options{Port: -1, StoreDir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		srv.Stop()
		os.RemoveAll(dir)
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		srv.Stop()
		os.RemoveAll(dir)
		return nil, err
	}
	return &Broker{dir: dir, srv: srv, nc: nc, JS: js}, nil
}

// Close stops the server and removes its data.
func (b *Broker) Close() {
	b.nc.Close()
	b.srv.Stop()
	os.RemoveAll(b.dir)
}

// NATSURL is the server's client URL.
func (b *Broker) NATSURL() string { return b.srv.ClientURL() }

// Count returns a stream's message count on the server, -1 when it cannot
// be read.
func (b *Broker) Count(stream string) int { return Count(b.JS, stream) }

// Bed is a JetStream server and a OneLogin simulator.
type Bed struct {
	*Broker
	// Sim is the simulator; SimURL its base URL.
	Sim    *simulator.Server
	SimURL string
	hs     *httptest.Server
	// Logs receives the workers' logs (JSON lines, debug level).
	Logs *SyncBuffer
	// Reg and M are the metrics the bed's workers share.
	Reg *prometheus.Registry
	M   *metrics.Metrics
}

// NewBed starts a bed whose JetStream data lives under a fresh folder.
func NewBed(simCfg simulator.Config) (*Bed, error) {
	br, err := StartBroker()
	if err != nil {
		return nil, err
	}
	sim := simulator.New(simCfg)
	hs := httptest.NewServer(sim)
	reg := prometheus.NewRegistry()
	return &Bed{Broker: br, Sim: sim, SimURL: hs.URL, hs: hs, Logs: &SyncBuffer{}, Reg: reg, M: metrics.New(reg)}, nil
}

// JetStream starts a bare embedded JetStream server, its data under a
// temporary folder of tb, and connects a client to it, for tests that need
// no simulator and no worker. Both are closed when tb ends.
func JetStream(tb testing.TB) (*broker.Server, *nats.Conn, jetstream.JetStream) {
	tb.Helper()
	srv, err := broker.Start(broker.Options{Port: -1, StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Stop)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return srv, nc, js
}

// Close stops everything and removes the data.
func (b *Bed) Close() {
	b.hs.Close()
	b.Broker.Close()
}

// Provision creates the worker's streams, buckets and consumers.
func (b *Bed) Provision(cfg jobs.Config) error {
	_, err := topology.Provision(context.Background(), b.JS, topology.Config{}, cfg.Consumers())
	return err
}

// StartBed is NewBed for a test: it fails the test when the bed does not
// start and closes it when the test ends.
func StartBed(tb testing.TB, simCfg simulator.Config) *Bed {
	tb.Helper()
	b, err := NewBed(simCfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	return b
}

// RunWorker is StartWorker for a test: it fails the test when the replica
// does not start, and stops it when the test ends (before the bed closes),
// failing the test if it ended with an error.
func (b *Bed) RunWorker(tb testing.TB, cfg jobs.Config, o WorkerOptions) *Worker {
	tb.Helper()
	w, err := b.StartWorker(cfg, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := w.Stop(); err != nil {
			tb.Error(err)
		}
	})
	return w
}
