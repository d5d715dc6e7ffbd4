package jobs_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/mfa-worker/mfa-worker/internal/dlq"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
	"github.com/mfa-worker/mfa-worker/schemas"
)

// env is one test's world: the test bed (a JetStream server, the
// simulator) and workers.
type env struct {
	t    *testing.T
	bed  *testenv.Bed
	js   jetstream.JetStream
	sim  *simulator.Server
	logs *testenv.SyncBuffer
	reg  *prometheus.Registry
	m    *metrics.Metrics
}

func newEnv(t *testing.T, simCfg simulator.Config) *env {
	t.Helper()
	bed, err := testenv.NewBed(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bed.Close)
	return &env{t: t, bed: bed, js: bed.JS, sim: bed.Sim, logs: bed.Logs, reg: bed.Reg, m: bed.M}
}

// worker is one running replica.
type worker struct{ w *testenv.Worker }

// kill stops the replica the hard way (see testenv.Worker.Kill).
func (w *worker) kill(t *testing.T) {
	t.Helper()
	if err := w.w.Kill(); err != nil {
		t.Errorf("worker: %v", err)
	}
}

// testConfig is a pipeline config sized for tests.
func testConfig() jobs.Config {
	return jobs.Config{
		Concurrency: 8, MaxDeliver: 4, AckWait: 3 * time.Second, Lease: 3 * time.Second,
		RetryInitial: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond, RetryWithin: 500 * time.Millisecond,
		NakBase: 50 * time.Millisecond, NakMax: 200 * time.Millisecond, ShutdownGrace: 5 * time.Second,
	}
}

// start runs a worker replica with its own NATS connection and OneLogin
// client.
func (e *env) start(cfg jobs.Config) *worker {
	e.t.Helper()
	w, err := e.bed.StartWorker(cfg, testenv.WorkerOptions{Timeout: 5 * time.Second, TokenMaxElapsed: time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = w.Stop() })
	return &worker{w: w}
}

// stop shuts the replica down gracefully.
func (w *worker) stop(t *testing.T) {
	t.Helper()
	if err := w.w.Stop(); err != nil {
		t.Errorf("worker: %v", err)
	}
}

// provision creates the streams, as a worker would at start.
func (e *env) provision() {
	e.t.Helper()
	if err := e.bed.Provision(testConfig()); err != nil {
		e.t.Fatal(err)
	}
}

// publish sends a job body to mfa.jobs.<typ> with Nats-Msg-Id msgID (none
// when empty).
func (e *env) publish(typ, body, msgID string) {
	e.t.Helper()
	if err := testenv.PublishOne(context.Background(), e.js, typ, body, msgID); err != nil {
		e.t.Fatalf("publish %s: %v", typ, err)
	}
}

// jobBody builds a job body.
var jobBody = testenv.Body

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
	msgs, err := testenv.ReadStream(context.Background(), e.js, stream)
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]stored, 0, len(msgs))
	for _, m := range msgs {
		st := stored{Subject: m.Subject, Header: m.Header, Data: m.Data}
		if stream == topology.StreamResults {
			if st.Result, err = m.Result(); err != nil {
				e.t.Fatalf("result %s: %v", m.Data, err)
			}
		}
		out = append(out, st)
	}
	return out
}

func (e *env) count(stream string) int { return e.bed.Count(stream) }

// waitResults waits until the results stream holds n messages and returns
// them by job id (the last one per id).
func (e *env) waitResults(n int, timeout time.Duration) map[string]stored {
	e.t.Helper()
	testenv.Eventually(e.t, timeout, func() bool { return e.count(topology.StreamResults) >= n }, func() string {
		return fmt.Sprintf("%d of %d results", e.count(topology.StreamResults), n)
	})
	out := map[string]stored{}
	for _, m := range e.streamMsgs(topology.StreamResults) {
		out[m.Result.JobID] = m
	}
	return out
}

// validResult checks a result body against schemas/result.v1.json.
func validResult(t *testing.T, data []byte) {
	t.Helper()
	s, err := schemas.Result()
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("result does not match result.v1.json: %v\n%s", err, data)
	}
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

// deadLetterOf is the one dead letter of job id of type typ.
func (e *env) deadLetterOf(t *testing.T, typ, id string) dlq.DeadLetter {
	t.Helper()
	all, err := dlq.ListDeadLetters(context.Background(), e.js, dlq.DeadLetterFilter{Type: typ})
	if err != nil {
		t.Fatal(err)
	}
	var dls []dlq.DeadLetter
	for _, d := range all {
		if d.JobID == id {
			dls = append(dls, d)
		}
	}
	if len(dls) != 1 {
		t.Fatalf("%d dead letters of %s in %+v, want 1", len(dls), id, all)
	}
	return dls[0]
}

// replaySuperseded replays the dead letter of an enroll that an offboard
// stored later supersedes: its new result (results is the count before it,
// returned with it) is cancelled superseded_by_offboard, without a
// OneLogin call.
func (e *env) replaySuperseded(t *testing.T, dl dlq.DeadLetter, results int) int {
	t.Helper()
	calls := e.sim.ResourceCalls()
	if err := dlq.Replay(context.Background(), e.js, dl); err != nil {
		t.Fatal(err)
	}
	results++
	e.waitResults(results, 3*time.Second)
	var replayed *stored
	for _, m := range e.streamMsgs(topology.StreamResults) {
		if m.Result.JobID == dl.JobID && m.Header.Get("Nats-Msg-Id") != dl.JobID+":result" {
			replayed = &m
		}
	}
	if replayed == nil || replayed.Result.Outcome != job.Cancelled || replayed.Result.Error.Code != job.CodeSupersededByOffboard {
		t.Fatalf("replayed %s: %+v", dl.JobID, replayed)
	}
	if n := e.sim.ResourceCalls() - calls; n != 0 {
		t.Fatalf("the superseded %s made %d OneLogin calls", dl.JobID, n)
	}
	return results
}
