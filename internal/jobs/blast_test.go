package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// startGuarded runs a replica whose blast-radius guard has the given limit
// per hour.
func (e *env) startGuarded(limit int) *worker {
	e.t.Helper()
	w, err := e.bed.StartWorker(testConfig(), testenv.WorkerOptions{Timeout: 5 * time.Second, TokenMaxElapsed: time.Second,
		Guard: guard.Config{Limit: limit, Window: time.Hour}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = w.Stop() })
	return &worker{w: w}
}

// sourced is a job body with a source.
func sourced(id, typ string, user int64, source string, params map[string]any) string {
	m := map[string]any{"id": id, "type": typ, "user_id": user, "source": source}
	if params != nil {
		m["params"] = params
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func (e *env) guard() *guard.Guard {
	e.t.Helper()
	g, err := guard.Open(context.Background(), e.js, guard.Config{})
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

func (e *env) held() []guard.Held {
	e.t.Helper()
	hs, err := e.guard().List(context.Background(), guard.Filter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return hs
}

func (e *env) ledgerEntry(id string) *ledger.Entry {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), topology.BucketLedger)
	if err != nil {
		e.t.Fatal(err)
	}
	en, err := ledger.New(kv).Get(context.Background(), id)
	if err != nil {
		e.t.Fatalf("ledger %s: %v", id, err)
	}
	return en
}

// heldGauge sums mfa_jobs_held over its sources.
func (e *env) heldGauge() float64 {
	fams, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() == "mfa_jobs_held" {
			for _, m := range f.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func resultsByJob(msgs []stored) map[string][]job.Result {
	out := map[string][]job.Result{}
	for _, m := range msgs {
		out[m.Result.JobID] = append(out[m.Result.JobID], m.Result)
	}
	return out
}

// Offboards of one source past the limit are held (ledger held, acked, no
// result, no OneLogin call, counted in mfa_jobs_held, "held" in the job
// query and the leaver registry); a cancel ends a held one; an operator's
// release runs one exactly once and a discard ends the rest cancelled
// discarded without a call. Every job ends with one result and a finished
// ledger record.
func TestGuardHoldsReleasesAndDiscardsOffboards(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	e.provision()
	e.startGuarded(2)
	const n = 6
	ids := make([]string, n)
	for i := range n {
		user := int64(500 + i)
		if _, err := e.sim.EnrollDevice(user, "Google Authenticator", "GA", true); err != nil {
			t.Fatal(err)
		}
		ids[i] = fmt.Sprintf("guarded-%d", i)
		e.publish("offboard", sourced(ids[i], "offboard", user, "hr.scim", nil), ids[i])
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		return len(e.held()) == n-2 && e.count(topology.StreamResults) >= 2 && e.ackPending() == 0
	},
		func() string {
			return fmt.Sprintf("%d held, %d results, %d pending", len(e.held()), e.count(topology.StreamResults), e.ackPending())
		})
	testenv.Eventually(t, 10*time.Second, func() bool { return e.heldGauge() == n-2 }, func() string { return fmt.Sprintf("mfa_jobs_held %v", e.heldGauge()) })
	// MfaOffboardsHeld fires on max by (source) (mfa_jobs_held) > 0.
	if v := testutil.ToFloat64(e.m.HeldGauge("hr.scim")); v != n-2 {
		t.Errorf("mfa_jobs_held{source=hr.scim} = %v, want %d", v, n-2)
	}
	if c := e.count(topology.StreamResults); c != 2 {
		t.Fatalf("%d results with %d jobs held, want 2", c, n-2)
	}
	ran := resultsByJob(e.streamMsgs(topology.StreamResults))
	heldIDs := map[string]bool{}
	for _, h := range e.held() {
		heldIDs[h.JobID] = true
		if h.Source != "hr.scim" || h.Type != job.TypeOffboard || h.UserID == 0 {
			t.Errorf("held record %+v", h)
		}
		if en := e.ledgerEntry(h.JobID); en.State != ledger.Held || en.Source != "hr.scim" || en.Type != "offboard" || en.UserID != h.UserID || en.Hash == "" || en.JobTime.IsZero() {
			t.Errorf("ledger record of held %s: %+v", h.JobID, en.Record)
		}
		if s := e.jobState(h.JobID); s.State != ops.JobHeld {
			t.Errorf("job query of held %s: %s", h.JobID, s.State)
		}
		if len(ran[h.JobID]) != 0 {
			t.Errorf("held %s has a result", h.JobID)
		}
		if effectsByRequest(e.sim)[h.JobID][simulator.EffectRemove] != 0 {
			t.Errorf("held %s removed a factor", h.JobID)
		}
		lkv, err := e.js.KeyValue(context.Background(), leaver.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		if r, _, err := leaver.NewStore(lkv).Get(context.Background(), leaver.UserKey(h.UserID)); err != nil || r.State != leaver.Held {
			t.Errorf("leaver record of held %s: %+v %v", h.JobID, r, err)
		}
	}
	for id, rs := range ran {
		if rs[0].Outcome != job.Succeeded {
			t.Errorf("%s ran: %s", id, rs[0].Outcome)
		}
		fs, _ := rs[0].Data["removed_factors"].([]any)
		if len(fs) != 1 || fs[0].(map[string]any)["auth_factor_name"] != "Google Authenticator" {
			t.Errorf("%s: removed_factors %v", id, rs[0].Data["removed_factors"])
		}
	}
	for _, m := range e.streamMsgs(topology.StreamResults) {
		validResult(t, m.Data)
	}
	var order []string
	for _, id := range ids {
		if heldIDs[id] {
			order = append(order, id)
		}
	}
	if len(order) != n-2 {
		t.Fatalf("held %v", heldIDs)
	}
	cancelled, released := order[0], order[1]

	// A cancel ends a held job like a scheduled one.
	e.publish("cancel", timedBody("cancel-held", "cancel", 0, map[string]any{"job_id": cancelled}, nil), "cancel-held")
	// The operator releases one job, then discards the rest of the source.
	ctx := context.Background()
	g := e.guard()
	if rep, err := g.Release(ctx, guard.Filter{JobID: released}, guard.Operator{By: "test", Reason: "checked"}, time.Now()); err != nil || len(rep.Done) != 1 {
		t.Fatalf("release: %+v %v", rep, err)
	}
	// The cancel's own result, the cancelled job's and the released one's.
	testenv.Eventually(t, 20*time.Second, func() bool { return e.count(topology.StreamResults) >= 5 }, func() string {
		return fmt.Sprintf("%d of 5 results; logs:\n%s", e.count(topology.StreamResults), e.logs.String())
	})
	if rep, err := g.Discard(ctx, guard.Filter{Source: "hr.scim", BySource: true}, guard.Operator{By: "test", Reason: "misfire"}, time.Now()); err != nil || len(rep.Done) != n-4 {
		t.Fatalf("discard: %+v %v", rep, err)
	}
	all := e.waitResults(n+1, 20*time.Second)
	testenv.Eventually(t, 10*time.Second, func() bool { return e.ackPending() == 0 && e.heldGauge() == 0 && len(e.held()) == 0 },
		func() string { return fmt.Sprintf("%d pending, gauge %v", e.ackPending(), e.heldGauge()) })
	if v := testutil.ToFloat64(e.m.HeldGauge("hr.scim")); v != 0 {
		t.Errorf("mfa_jobs_held{source=hr.scim} = %v after the decisions, want 0", v)
	}
	by := resultsByJob(e.streamMsgs(topology.StreamResults))
	effects := effectsByRequest(e.sim)
	for _, id := range ids {
		if len(by[id]) != 1 {
			t.Errorf("%s: %d results", id, len(by[id]))
			continue
		}
		r := by[id][0]
		if en := e.ledgerEntry(id); en.State != ledger.Finished || en.Outcome != string(r.Outcome) {
			t.Errorf("%s: ledger %s %s, result %s", id, en.State, en.Outcome, r.Outcome)
		}
		switch {
		case id == cancelled:
			if r.Outcome != job.Cancelled || r.Error == nil || r.Error.Code != job.CodeCancelled || effects[id][simulator.EffectRemove] != 0 {
				t.Errorf("cancelled held %s: %+v %v", id, r, effects[id])
			}
		case id == released || !heldIDs[id]:
			if r.Outcome != job.Succeeded || effects[id][simulator.EffectRemove] != 1 {
				t.Errorf("run %s: %s, %d removals", id, r.Outcome, effects[id][simulator.EffectRemove])
			}
		default:
			if r.Outcome != job.Cancelled || r.Error == nil || r.Error.Code != job.CodeDiscarded || len(effects[id]) != 0 {
				t.Errorf("discarded %s: %+v %v", id, r, effects[id])
			}
		}
	}
	if all["cancel-held"].Result.Outcome != job.Succeeded {
		t.Errorf("cancel: %+v", all["cancel-held"].Result)
	}
	h, err := g.Lookup(ctx, cancelled)
	if err != nil || h == nil || h.State != guard.StateCancelled {
		t.Errorf("guard record of the cancelled job: %+v %v", h, err)
	}
	if v := testutil.ToFloat64(e.m.OffboardsCancelled("hr.scim")); v != 1 {
		t.Errorf("mfa_offboards_cancelled_total{hr.scim} = %v, want 1", v)
	}
	if v, err := testenv.Counter(e.reg, "mfa_jobs_cancelled_total", "type", "offboard", "code", job.CodeDiscarded); err != nil || v != n-4 {
		t.Errorf("mfa_jobs_cancelled_total{offboard,discarded} = %v (%v), want %d", v, err, n-4)
	}
}
