package ingest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/rules"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// Test secrets. The CloudEvents one is given in the whsec_ form.
var (
	ceKey       = []byte("0123456789abcdef0123456789abcdef")
	ceSecret    = []byte("whsec_" + base64.StdEncoding.EncodeToString(ceKey))
	bambooKey   = []byte("bamboo-private-key")
	hibobKey    = []byte("hibob-signing-secret")
	scimToken   = []byte("scim-bearer-token")
	testStreams = map[string]string{"TEST_JOBS": "mfa.jobs.>", "TEST_DLQ": "mfa.dlq.>"}
)

func testRules(t testing.TB) *rules.Set {
	t.Helper()
	s, err := rules.Parse(rules.BuiltinYAML(), "test")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// env is one test's world: a JetStream server with stand-ins for the
// worker's job and dead-letter streams, and an ingest server on httptest.
type env struct {
	t    testing.TB
	srv  *broker.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	s    *Server
	http *httptest.Server
	reg  *prometheus.Registry
	m    *metrics.Ingest
	logs *testenv.SyncBuffer
	cfg  Config
}

type envOpt func(*Config)

func newEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	srv, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	for name, subj := range testStreams {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Duplicates: 10 * time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	key, err := ParseWebhookSecret(ceSecret)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Secrets:  Secrets{CloudEvents: key, BambooHR: bambooKey, HiBob: hibobKey, SCIMToken: scimToken},
		Rules:    testRules(t),
		Topology: Topology{AckWait: time.Second},
	}
	for _, o := range opts {
		o(&cfg)
	}
	e := &env{t: t, srv: srv, nc: nc, js: js, reg: prometheus.NewRegistry(), logs: &testenv.SyncBuffer{}, cfg: cfg}
	e.m = metrics.NewIngest(e.reg)
	e.s = e.newServer()
	e.http = httptest.NewServer(e.s.Handler())
	t.Cleanup(e.http.Close)
	return e
}

// serve runs the server's own listener (Serve) on a loopback port until
// the test ends, failing the test if Serve then returns an error.
func (e *env) serve() net.Listener {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.s.Serve(ctx, ln) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("serve: %v", err)
		}
	})
	return ln
}

func (e *env) newServer() *Server {
	e.t.Helper()
	mc, err := nats.Connect(e.srv.ClientURL())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(mc.Close)
	s, err := New(context.Background(), e.cfg, Deps{Conn: e.nc, MapperConn: mc, Log: slog.New(slog.NewTextHandler(e.logs, nil)), Metrics: e.m,
		AuthFailures: metrics.NewAuthFailures(e.reg)})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// runMapper runs s's mapper until the returned stop is called (or the
// test ends); stop waits for it.
func (e *env) runMapper(s *Server) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunMapper(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("mapper: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// post sends a request and returns the status and body.
func (e *env) do(method, path string, h http.Header, body io.Reader) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (e *env) post(path string, h http.Header, body []byte) (int, []byte) {
	e.t.Helper()
	return e.do(http.MethodPost, path, h, bytes.NewReader(body))
}

// signCE signs a CloudEvent the Standard Webhooks way at time ts.
func signCE(body []byte, msgID string, ts time.Time, key []byte) http.Header {
	t := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", msgID, t)
	mac.Write(body)
	return http.Header{
		"Content-Type":      {"application/cloudevents+json"},
		"Webhook-Id":        {msgID},
		"Webhook-Timestamp": {t},
		// A stale signature first, as during a key rotation.
		"Webhook-Signature": {"v1,c3RhbGU= v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))},
	}
}

func signBamboo(body []byte, ts time.Time, key []byte) http.Header {
	t := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	mac.Write([]byte(t))
	return http.Header{
		"Content-Type":         {"application/json"},
		"X-Bamboohr-Timestamp": {t},
		"X-Bamboohr-Signature": {hex.EncodeToString(mac.Sum(nil))},
	}
}

func signHiBob(body []byte, key []byte) http.Header {
	mac := hmac.New(sha512.New, key)
	mac.Write(body)
	return http.Header{"Content-Type": {"application/json"}, "Bob-Signature": {base64.StdEncoding.EncodeToString(mac.Sum(nil))}}
}

func scimHeaders() http.Header {
	return http.Header{"Authorization": {"Bearer " + string(scimToken)}, "Content-Type": {"application/scim+json"}}
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// msgs returns every message of a stream, in order.
func (e *env) msgs(stream string) []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.js.Stream(ctx, stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err == nil {
			out = append(out, m)
		}
	}
	return out
}

// jobs returns the bodies of the jobs published so far.
func (e *env) jobs() []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for _, m := range e.msgs("TEST_JOBS") {
		var j map[string]any
		if err := json.Unmarshal(m.Data, &j); err != nil {
			e.t.Fatalf("job body not JSON: %s", m.Data)
		}
		if got := m.Header.Get("Nats-Msg-Id"); got != j["id"] {
			e.t.Errorf("job %v published with Nats-Msg-Id %q", j["id"], got)
		}
		if want := "mfa.jobs." + j["type"].(string); m.Subject != want {
			e.t.Errorf("job %v on %s, want %s", j["id"], m.Subject, want)
		}
		out = append(out, j)
	}
	return out
}

// waitFor waits up to 15 s for cond; a failure shows the receiver's logs.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	testenv.Eventually(e.t, 15*time.Second, cond, func() string { return "waiting for " + what + "; logs:\n" + e.logs.String() })
}

// waitMapped waits until mfa-ingest has acknowledged every stored event.
func (e *env) waitMapped() {
	e.t.Helper()
	// Every stored event acknowledged: the consumer's counts alone can
	// read zero for a moment before it has seen the newest event.
	e.waitFor("the mapper to finish", func() bool {
		st, err := e.s.objs.Events.Info(context.Background())
		if err != nil {
			return false
		}
		info, err := e.s.objs.Consumer.Info(context.Background())
		return err == nil && info.AckFloor.Stream >= st.State.LastSeq && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	})
}

func (e *env) storedEvents() int {
	e.t.Helper()
	return len(e.msgs(StreamEvents))
}

func jsonBody(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustContain(t testing.TB, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Errorf("%q does not contain %q", s, sub)
	}
}

// counter reads one counter series from the test's registry.
func (e *env) counter(name string, labels ...string) float64 {
	e.t.Helper()
	v, err := testenv.Counter(e.reg, name, labels...)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// storeDirect stores a CloudEvent (or a webhook body) as the receiver
// would, without the door's decision: an event stored before a rule change.
func (e *env) storeDirect(source string, body []byte) {
	e.t.Helper()
	id := sha256Hex(body)
	if source == SourceCloudEvents {
		var err error
		if id, err = identifyCloudEvent(body); err != nil {
			e.t.Fatal(err)
		}
	}
	if _, err := e.s.store(context.Background(), source, id, body); err != nil {
		e.t.Fatal(err)
	}
}
