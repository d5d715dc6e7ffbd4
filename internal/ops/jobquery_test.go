package ops_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// A job that has not arrived but that cancels already wait for says,
// through mfa.query.job, who cancelled it and with what authority: the
// first cancel's id and scope, and the cancels of other scopes waiting
// beside it. The tombstones are the worker's own, left by cancels sent
// before their target.
func TestJobQueryNamesTheWaitingCancels(t *testing.T) {
	bed := testenv.StartBed(t, simulator.Config{})
	bed.RunWorker(t, jobs.DefaultConfig(), testenv.WorkerOptions{})
	ctx := context.Background()
	for _, c := range []struct{ scope, id, target string }{
		{"hr.cloudevents", "c-own", "off-late"},
		{"hr.workday", "c-other", "off-late"},
		{"", "c-operator", "off-bare"},
	} {
		m := nats.NewMsg(job.CancelSubject(c.scope))
		m.Data = fmt.Appendf(nil, `{"id":%q,"type":"cancel","params":{"job_id":%q}}`, c.id, c.target)
		m.Header.Set(jetstream.MsgIDHeader, c.id)
		if _, err := bed.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		// One at a time: the tombstone keeps its cancels first come
		// first.
		if err := bed.WaitCount(topology.StreamResults, map[string]int{"c-own": 1, "c-other": 2, "c-operator": 3}[c.id], 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	nc, err := nats.Connect(bed.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	q, err := ops.StartQueryService(ctx, nc, nil, "1.0.0", testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Stop() }()
	kv, err := bed.JS.KeyValue(ctx, topology.BucketLedger)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.AddJobEndpoint(ledger.New(kv), nil, nil); err != nil {
		t.Fatal(err)
	}
	ask := func(id string) map[string]any {
		t.Helper()
		m, err := nc.Request(job.QueryJob, fmt.Appendf(nil, `{"job_id":%q}`, id), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("%s: %s", id, m.Data)
		}
		return r.Data
	}
	for id, want := range map[string]map[string]any{
		"off-late": {"job_id": "off-late", "state": "unknown", "cancelled_by": "c-own", "cancel_scope": "hr.cloudevents",
			"more_cancels": []any{map[string]any{"cancelled_by": "c-other", "cancel_scope": "hr.workday"}}},
		// The operators' bare cancel has no scope.
		"off-bare":  {"job_id": "off-bare", "state": "unknown", "cancelled_by": "c-operator"},
		"off-never": {"job_id": "off-never", "state": "unknown"},
	} {
		if got := ask(id); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, want %v", id, got, want)
		}
	}
}
