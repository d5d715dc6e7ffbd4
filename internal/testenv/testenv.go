// Package testenv is the one test bed of the worker: an in-process NATS
// JetStream server, the OneLogin simulator behind a real HTTP server,
// in-process worker replicas, publishing jobs, the job mix, and reading a
// stream to its end. The pipeline's, the app's, the benchmarks' and the
// container tests use it. It is for tests and benchmarks only.
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Bed is a JetStream server and a OneLogin simulator.
type Bed struct {
	dir string
	srv *broker.Server
	nc  *nats.Conn
	// JS is a client of the bed's server.
	JS jetstream.JetStream
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
	sim := simulator.New(simCfg)
	hs := httptest.NewServer(sim)
	reg := prometheus.NewRegistry()
	return &Bed{dir: dir, srv: srv, nc: nc, JS: js, Sim: sim, SimURL: hs.URL, hs: hs, Logs: &SyncBuffer{}, Reg: reg, M: metrics.New(reg)}, nil
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
	b.nc.Close()
	b.srv.Stop()
	os.RemoveAll(b.dir)
}

// NATSURL is the bed's client URL.
func (b *Bed) NATSURL() string { return b.srv.ClientURL() }

// Server is the embedded NATS server.
func (b *Bed) Server() *broker.Server { return b.srv }

// Provision creates the worker's streams, buckets and consumers.
func (b *Bed) Provision(cfg jobs.Config) error {
	_, err := topology.Provision(context.Background(), b.JS, topology.Config{}, cfg.Consumers())
	return err
}

// WorkerOptions tune an in-process replica.
type WorkerOptions struct {
	// Reserve is its WORKER_RATE_LIMIT_RESERVE.
	Reserve int
	// Metrics receive its metrics; the bed's when nil.
	Metrics *metrics.Metrics
	// Log receives its logs; the bed's Logs when nil.
	Log *slog.Logger
	// Timeout and TokenMaxElapsed of its OneLogin client (defaults of the
	// client when zero).
	Timeout, TokenMaxElapsed time.Duration
}

// Worker is an in-process replica with its own NATS connection and
// OneLogin client.
type Worker struct {
	cancel context.CancelFunc
	done   chan error
	nc     *nats.Conn
	cut    *cuttable
	once   sync.Once
	err    error
}

// StartWorker provisions and runs a replica.
func (b *Bed) StartWorker(cfg jobs.Config, o WorkerOptions) (*Worker, error) {
	nc, err := nats.Connect(b.srv.ClientURL())
	if err != nil {
		return nil, err
	}
	js, _ := jetstream.New(nc)
	objs, err := topology.Provision(context.Background(), js, topology.Config{}, cfg.Consumers())
	if err != nil {
		nc.Close()
		return nil, err
	}
	m := o.Metrics
	if m == nil {
		m = b.M
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewJSONHandler(b.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cut := &cuttable{base: onelogin.NewTransport()}
	ol, err := onelogin.NewClient(onelogin.Config{
		BaseURL: b.SimURL, ClientID: b.Sim.Config().ClientID, ClientSecret: b.Sim.Config().ClientSecret,
		Timeout: o.Timeout, TokenMaxElapsed: o.TokenMaxElapsed, Observer: m, Transport: cut, RateLimitReserve: o.Reserve,
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	r, err := jobs.NewRunner(cfg, log, js, objs, ol, m)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Worker{cancel: cancel, done: make(chan error, 1), nc: nc, cut: cut}
	indexed := history.Start(ctx, objs.History, history.New(js), log)
	go func() {
		err := r.Run(ctx)
		<-indexed
		w.done <- err
	}()
	return w, nil
}

// Stop shuts the replica down gracefully and returns Run's error. It may be
// called more than once.
func (w *Worker) Stop() error {
	w.once.Do(func() {
		w.cancel()
		w.err = <-w.done
		w.nc.Close()
	})
	return w.err
}

// Kill stops the replica the hard way: OneLogin and NATS are cut off first,
// so it can neither make another effect nor settle a message; only then do
// its goroutines unwind.
func (w *Worker) Kill() error {
	w.cut.dead.Store(true)
	w.nc.Close()
	return w.Stop()
}

// errKilled is what a killed replica's OneLogin calls fail with.
var errKilled = errors.New("worker killed")

// cuttable is a transport that can be cut off at once, as when the process
// dies: nothing it sends after that reaches OneLogin, and an answer still
// in flight is lost.
type cuttable struct {
	base http.RoundTripper
	dead atomic.Bool
}

func (c *cuttable) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.dead.Load() {
		return nil, errKilled
	}
	resp, err := c.base.RoundTrip(r)
	if c.dead.Load() {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, errKilled
	}
	return resp, err
}

// Job is one job to publish.
type Job struct {
	ID, Type string
	Body     []byte
}

// Of builds one job.
func Of(id, typ string, user int64, params map[string]any) Job {
	m := map[string]any{"id": id, "type": typ, "user_id": user}
	if params != nil {
		m["params"] = params
	}
	b, _ := json.Marshal(m)
	return Job{ID: id, Type: typ, Body: b}
}

// Body builds a job body.
func Body(id, typ string, user int64, params map[string]any) string {
	return string(Of(id, typ, user, params).Body)
}

// Seeder is what a mixture needs of a OneLogin: devices enrolled up front.
type Seeder interface {
	EnrollDevice(user int64, factor, name string, active bool) (int64, error)
}

// Mixture is a repeating plan of jobs: Plan[i%10] is the type of the i-th
// job. Every job has an effect to make: the simulator is seeded with the
// devices its remove, offboard and activate jobs need.
type Mixture struct {
	Plan [10]job.Type
	// IDPrefix starts every id: <prefix>-<base>-<i>.
	IDPrefix string
	// OffboardDevices is how many factors an offboarded user has (1 or 2).
	OffboardDevices int
	// TokenExpiresIn is generate_token's expires_in (0: not set).
	TokenExpiresIn int
}

// BenchMix is the benchmarks' mix: 40% enroll, 20% remove, 20% offboard
// (one device each), 10% activate, 10% generate_token.
var BenchMix = Mixture{
	Plan:     [10]job.Type{"enroll", "enroll", "enroll", "enroll", "remove", "remove", "offboard", "offboard", "activate", "generate_token"},
	IDPrefix: "b", OffboardDevices: 1,
}

// FaultMix is the container fault suite's mix: 30% enroll, 20% activate,
// 10% generate_token, 20% offboard (two devices each), 20% remove.
var FaultMix = Mixture{
	Plan:     [10]job.Type{"enroll", "enroll", "enroll", "activate", "activate", "generate_token", "offboard", "offboard", "remove", "remove"},
	IDPrefix: "c", OffboardDevices: 2, TokenExpiresIn: 3600,
}

// Mix builds n jobs of BenchMix for users from base on.
func Mix(sim Seeder, n int, base int64) ([]Job, error) { return BenchMix.Jobs(sim, n, base) }

// Jobs builds n jobs of the mixture for users from base on, seeding sim.
func (x Mixture) Jobs(sim Seeder, n int, base int64) ([]Job, error) {
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	xkey, _ := kp.PublicKey() // tokens are sealed to it
	out := make([]Job, 0, n)
	for i := 0; i < n; i++ {
		user := base + int64(i)
		typ := x.Plan[i%10]
		var params map[string]any
		switch typ {
		case job.TypeEnroll:
			params = map[string]any{"factor_name": "OneLogin SMS", "display_name": "Phone", "number": "+15551230000"}
		case job.TypeRemove:
			dev, err := sim.EnrollDevice(user, "OneLogin Protect", "Pixel", true)
			if err != nil {
				return nil, err
			}
			params = map[string]any{"device_id": dev}
		case job.TypeOffboard:
			seeds := [][2]string{{"Google Authenticator", "GA"}, {"OneLogin Protect", "Pixel"}}
			for _, d := range seeds[:max(1, min(x.OffboardDevices, len(seeds)))] {
				if _, err := sim.EnrollDevice(user, d[0], d[1], true); err != nil {
					return nil, err
				}
			}
		case job.TypeActivate:
			dev, err := sim.EnrollDevice(user, "OneLogin Voice", "Desk", true)
			if err != nil {
				return nil, err
			}
			params = map[string]any{"device_id": dev}
		case job.TypeGenerateToken:
			params = map[string]any{"recipient_xkey": xkey}
			if x.TokenExpiresIn != 0 {
				params["expires_in"] = x.TokenExpiresIn
			}
		default:
			return nil, fmt.Errorf("mixture: no plan for type %q", typ)
		}
		out = append(out, Of(fmt.Sprintf("%s-%d-%d", x.IDPrefix, base, i), string(typ), user, params))
	}
	return out, nil
}

// Publish sends jobs to their subjects (or to prefix+type) with their ids
// as Nats-Msg-Id, asynchronously, and waits for every ack.
func Publish(js jetstream.JetStream, jobs []Job, prefix string) error {
	if prefix == "" {
		prefix = job.SubjectPrefix
	}
	for i, j := range jobs {
		m := nats.NewMsg(prefix + j.Type)
		m.Data = j.Body
		m.Header.Set(jetstream.MsgIDHeader, j.ID)
		if _, err := js.PublishMsgAsync(m); err != nil {
			return err
		}
		if i%5000 == 4999 {
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-time.After(5 * time.Minute):
		return errors.New("publishing timed out")
	}
}

// Publish sends jobs to the bed's server; see Publish.
func (b *Bed) Publish(jobs []Job, prefix string) error { return Publish(b.JS, jobs, prefix) }

// PublishOne sends one body to mfa.jobs.<typ> with Nats-Msg-Id msgID (none
// when empty) and waits for its ack.
func PublishOne(ctx context.Context, js jetstream.JetStream, typ, body, msgID string) error {
	m := nats.NewMsg(job.SubjectPrefix + typ)
	m.Data = []byte(body)
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	_, err := js.PublishMsg(ctx, m)
	return err
}

// Count returns a stream's message count, -1 when it cannot be read.
func Count(js jetstream.JetStream, stream string) int {
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		return -1
	}
	info, err := s.Info(context.Background())
	if err != nil {
		return -1
	}
	return int(info.State.Msgs)
}

// Count returns a stream's message count on the bed's server.
func (b *Bed) Count(stream string) int { return Count(b.JS, stream) }

// WaitFor polls cond until it holds or timeout passes; what describes the
// state for the error.
func WaitFor(timeout time.Duration, cond func() bool, what func() string) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v: %s", timeout, what())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// WaitCount waits until a stream holds at least n messages.
func (b *Bed) WaitCount(stream string, n int, timeout time.Duration) error {
	return WaitFor(timeout, func() bool { return b.Count(stream) >= n }, func() string {
		return fmt.Sprintf("%s: %d of %d messages", stream, b.Count(stream), n)
	})
}

// Msg is a message read back from a stream.
type Msg struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
}

// Result decodes the message as a result.
func (m Msg) Result() (job.Result, error) {
	var r job.Result
	err := json.Unmarshal(m.Data, &r)
	return r, err
}

// ReadStream reads a stream from its first message to its last, in order,
// skipping deleted messages.
func ReadStream(ctx context.Context, js jetstream.JetStream, stream string) ([]Msg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	out := make([]Msg, 0, info.State.Msgs)
	for {
		// FetchNoWait ends as soon as nothing more is at hand; every batch
		// is read to its end so that no fetch is left running.
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return out, err
		}
		done := false
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil || done {
				continue
			}
			out = append(out, Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			done = md.NumPending == 0 || md.Sequence.Stream >= info.State.LastSeq
		}
		if done {
			return out, nil
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return out, err
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
}

// Results reads every result of the bed's server, in order.
func (b *Bed) Results() ([]job.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return Results(ctx, b.JS)
}

// Results reads every result of MFA_RESULTS, in order.
func Results(ctx context.Context, js jetstream.JetStream) ([]job.Result, error) {
	msgs, err := ReadStream(ctx, js, topology.StreamResults)
	if err != nil {
		return nil, err
	}
	out := make([]job.Result, 0, len(msgs))
	for _, m := range msgs {
		r, err := m.Result()
		if err != nil {
			return out, fmt.Errorf("result #%d: %w", m.Seq, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// SyncBuffer is a goroutine-safe log sink.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Quiet is a logger that discards everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// WaitHTTP waits until url answers 200 (a /readyz).
func WaitHTTP(url string, timeout time.Duration) error {
	return WaitFor(timeout, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, func() string { return url + " does not answer 200" })
}

// RoundTrip publishes one job body to mfa.jobs.<typ> on the server at
// natsURL and returns the first result published after it.
func RoundTrip(natsURL, typ, body string, timeout time.Duration) (*nats.Msg, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(job.ResultSubjectPrefix + ">")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := PublishOne(ctx, js, typ, body, ""); err != nil {
		return nil, err
	}
	return sub.NextMsg(timeout)
}
