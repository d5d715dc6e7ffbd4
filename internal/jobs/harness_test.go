package jobs

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/schemas"
)

// env is one test's world: a JetStream server, the simulator, and workers.
type env struct {
	t    *testing.T
	srv  *broker.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	sim  *simulator.Server
	http *httptest.Server
	logs *syncBuffer
	reg  *prometheus.Registry
	m    *metrics.Metrics
}

func newEnv(t *testing.T, simCfg simulator.Config) *env {
	t.Helper()
	srv, err := broker.Start(broker.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	sim := simulator.New(simCfg)
	hs := httptest.NewServer(sim)
	t.Cleanup(hs.Close)
	reg := prometheus.NewRegistry()
	return &env{t: t, srv: srv, nc: nc, js: js, sim: sim, http: hs, logs: &syncBuffer{}, reg: reg, m: metrics.New(reg)}
}

// worker is one running replica.
type worker struct {
	cancel context.CancelFunc
	done   chan error
	nc     *nats.Conn
	cut    *cuttable
}

// cuttable is a transport that can be cut off at once, as when the process
// dies: nothing it sends after that reaches OneLogin, and an answer still
// in flight is lost.
type cuttable struct {
	base http.RoundTripper
	dead atomic.Bool
}

var errKilled = errors.New("worker killed")

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

// kill stops the replica the hard way: OneLogin and NATS are cut off first,
// so it can neither make another effect nor settle a message; only then do
// its goroutines unwind.
func (w *worker) kill(t *testing.T) {
	w.cut.dead.Store(true)
	w.nc.Close()
	w.stop(t)
}

// testConfig is a pipeline config sized for tests.
func testConfig() Config {
	return Config{
		Concurrency: 8, MaxDeliver: 4, AckWait: 3 * time.Second, Lease: 3 * time.Second,
		RetryInitial: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond, RetryWithin: 500 * time.Millisecond,
		NakBase: 50 * time.Millisecond, NakMax: 200 * time.Millisecond, ShutdownGrace: 5 * time.Second,
	}
}

// start runs a worker replica with its own NATS connection and OneLogin
// client.
func (e *env) start(cfg Config) *worker {
	e.t.Helper()
	nc, err := nats.Connect(e.srv.ClientURL())
	if err != nil {
		e.t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	objs, err := Provision(ctx, js, Topology{}, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	cut := &cuttable{base: http.DefaultTransport.(*http.Transport).Clone()}
	ol, err := onelogin.NewClient(onelogin.Config{
		BaseURL: e.http.URL, ClientID: e.sim.Config().ClientID, ClientSecret: e.sim.Config().ClientSecret,
		Timeout: 5 * time.Second, Observer: e.m, Transport: cut, TokenMaxElapsed: time.Second,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := NewRunner(cfg, log, js, objs, ol, e.m)
	if err != nil {
		e.t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	w := &worker{cancel: cancel, done: make(chan error, 1), nc: nc, cut: cut}
	go func() { w.done <- r.Run(rctx) }()
	e.t.Cleanup(func() { w.stop(e.t) })
	return w
}

// stop shuts the replica down gracefully.
func (w *worker) stop(t *testing.T) {
	if w.cancel == nil {
		return
	}
	w.cancel()
	w.cancel = nil
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("worker: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("worker did not stop in 30s")
	}
	w.nc.Close()
}

// provision creates the streams, as a worker would at start.
func (e *env) provision() {
	e.t.Helper()
	if _, err := Provision(context.Background(), e.js, Topology{}, testConfig()); err != nil {
		e.t.Fatal(err)
	}
}

// publish sends a job body to mfa.jobs.<typ> with Nats-Msg-Id msgID (none
// when empty).
func (e *env) publish(typ, body, msgID string) {
	e.t.Helper()
	m := nats.NewMsg("mfa.jobs." + typ)
	m.Data = []byte(body)
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		e.t.Fatalf("publish %s: %v", typ, err)
	}
}

// job builds a job body.
func jobBody(id, typ string, user int64, params map[string]any) string {
	m := map[string]any{"id": id, "type": typ, "user_id": user}
	if params != nil {
		m["params"] = params
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// stored is a message read back from a stream.
type stored struct {
	Subject string
	Header  nats.Header
	Data    []byte
	Result  job.Result
}

// streamMsgs reads every message of a stream.
func (e *env) streamMsgs(stream string) []stored {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		st := stored{Subject: m.Subject, Header: m.Header, Data: m.Data}
		if stream == StreamResults {
			if err := json.Unmarshal(m.Data, &st.Result); err != nil {
				e.t.Fatalf("result %s: %v", m.Data, err)
			}
		}
		out = append(out, st)
	}
	return out
}

func (e *env) count(stream string) int {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return int(info.State.Msgs)
}

// waitResults waits until the results stream holds n messages and returns
// them by job id (the last one per id).
func (e *env) waitResults(n int, timeout time.Duration) map[string]stored {
	e.t.Helper()
	waitUntil(e.t, timeout, func() bool { return e.count(StreamResults) >= n }, func() string {
		return fmt.Sprintf("%d of %d results", e.count(StreamResults), n)
	})
	out := map[string]stored{}
	for _, m := range e.streamMsgs(StreamResults) {
		out[m.Result.JobID] = m
	}
	return out
}

func waitUntil(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, what())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// validResult checks a result body against schemas/result.v1.json.
func validResult(t *testing.T, data []byte) {
	t.Helper()
	s, err := schemas.Result()
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschemaUnmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("result does not match result.v1.json: %v\n%s", err, data)
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func effectsByRequest(sim *simulator.Server) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, e := range sim.Effects() {
		if out[e.RequestID] == nil {
			out[e.RequestID] = map[string]int{}
		}
		out[e.RequestID][e.Kind]++
	}
	return out
}

func curveKey(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return kp, pub
}

// openToken opens a generate_token result's sealed token.
func openToken(t *testing.T, kp nkeys.KeyPair, r job.Result) string {
	t.Helper()
	sealed, err := base64.StdEncoding.DecodeString(r.Data["sealed_mfa_token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := kp.Open(sealed, r.Data["sender_xkey"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}
