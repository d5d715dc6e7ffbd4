package security

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/testenv/leak"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// TestMain runs the suite and checks that no test leaves a goroutine behind.
func TestMain(m *testing.M) {
	leak.VerifyTestMain(m)
}

// secEnv is one attack's world: the test bed (JetStream, the simulator)
// and one worker replica. Helpers of this suite start with sec so that
// other files of the package can add their own.
type secEnv struct {
	t   *testing.T
	bed *testenv.Bed
	js  jetstream.JetStream
	sim *simulator.Server
	w   *testenv.Worker
}

// secConfig is a pipeline configuration sized for the suite.
func secConfig() jobs.Config {
	return jobs.Config{
		Concurrency: 8, MaxDeliver: 3, AckWait: 3 * time.Second, Lease: 3 * time.Second,
		RetryInitial: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, RetryWithin: 300 * time.Millisecond,
		NakBase: 50 * time.Millisecond, NakMax: 200 * time.Millisecond, ShutdownGrace: 5 * time.Second,
	}
}

// secStart starts a bed with simCfg and a worker on it.
func secStart(t *testing.T, simCfg simulator.Config) *secEnv {
	t.Helper()
	bed, err := testenv.NewBed(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bed.Close)
	w, err := bed.StartWorker(secConfig(), testenv.WorkerOptions{Timeout: 5 * time.Second, TokenMaxElapsed: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	return &secEnv{t: t, bed: bed, js: bed.JS, sim: bed.Sim, w: w}
}

// secPublish publishes body on subject with the given headers (Nats-Msg-Id
// among them, if wanted) as any job publisher could, and waits for the ack.
func (e *secEnv) secPublish(subject, body string, hdr map[string]string) {
	e.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(body)
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		e.t.Fatalf("publish to %s: %v", subject, err)
	}
}

// secMsgs reads a stream (or a bucket's stream, KV_<bucket>) to its end.
func (e *secEnv) secMsgs(stream string) []testenv.Msg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := testenv.ReadStream(ctx, e.js, stream)
	if err != nil {
		e.t.Fatalf("read %s: %v", stream, err)
	}
	return msgs
}

// secResults returns the results stored so far, with their message ids.
func (e *secEnv) secResults() []secResult {
	e.t.Helper()
	var out []secResult
	for _, m := range e.secMsgs(topology.StreamResults) {
		r, err := m.Result()
		if err != nil {
			e.t.Fatalf("result #%d: %v", m.Seq, err)
		}
		out = append(out, secResult{Result: r, MsgID: m.Header.Get(jetstream.MsgIDHeader)})
	}
	return out
}

type secResult struct {
	job.Result
	MsgID string
}

// secResultsOf returns the results of one job id.
func (e *secEnv) secResultsOf(id string) []secResult {
	var out []secResult
	for _, r := range e.secResults() {
		if r.JobID == id {
			out = append(out, r)
		}
	}
	return out
}

// secWait waits for cond, failing the test with what's description.
func (e *secEnv) secWait(timeout time.Duration, cond func() bool, what func() string) {
	e.t.Helper()
	testenv.Eventually(e.t, timeout, cond, what)
}

// secSettled waits until MFA_JOBS is empty: every job message settled.
func (e *secEnv) secSettled(timeout time.Duration) {
	e.t.Helper()
	e.secWait(timeout, func() bool { return e.bed.Count(topology.StreamJobs) == 0 }, func() string {
		return fmt.Sprintf("%d job messages left in %s", e.bed.Count(topology.StreamJobs), topology.StreamJobs)
	})
}

// secStreams are every stream a secret could end up in: jobs, results,
// dead letters and the ledger bucket.
var secStreams = []string{topology.StreamJobs, topology.StreamResults, topology.StreamDLQ, "KV_" + topology.BucketLedger}

// secFindSecret reports where secret appears: in any message (subject,
// headers or body) of secStreams, or in the worker's log.
func (e *secEnv) secFindSecret(secret string) []string {
	e.t.Helper()
	var where []string
	for _, s := range secStreams {
		for _, m := range e.secMsgs(s) {
			hit := bytes.Contains(m.Data, []byte(secret)) || bytes.Contains([]byte(m.Subject), []byte(secret))
			for k, vs := range m.Header {
				for _, v := range vs {
					hit = hit || bytes.Contains([]byte(k+v), []byte(secret))
				}
			}
			if hit {
				where = append(where, fmt.Sprintf("%s #%d (%s)", s, m.Seq, m.Subject))
			}
		}
	}
	if bytes.Contains([]byte(e.bed.Logs.String()), []byte(secret)) {
		where = append(where, "the worker's log")
	}
	return where
}
