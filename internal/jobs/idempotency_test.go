package jobs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// mixedJobs builds n jobs over four types, seeding the simulator so that
// each has an effect to make: enroll (users base+0..), generate_token,
// offboard and remove (users with one seeded device each). It returns the
// job bodies by id and each job's type and the effect it should cause.
type plannedJob struct {
	id, typ, body, effect string
}

func mixedJobs(t *testing.T, sim *simulator.Server, n int, base int64) []plannedJob {
	t.Helper()
	kp, _ := nkeys.CreateCurveKeys()
	xkey, _ := kp.PublicKey()
	var out []plannedJob
	for i := 0; i < n; i++ {
		user := base + int64(i)
		id := fmt.Sprintf("job-%d-%d", base, i)
		var p plannedJob
		switch i % 5 {
		case 0, 1:
			p = plannedJob{id, "enroll", jobBody(id, "enroll", user, map[string]any{"factor_name": "OneLogin SMS", "display_name": "Phone", "number": "+15551230000"}), simulator.EffectEnroll}
		case 2:
			p = plannedJob{id, "generate_token", jobBody(id, "generate_token", user, map[string]any{"recipient_xkey": xkey}), simulator.EffectMFAToken}
		case 3:
			if _, err := sim.EnrollDevice(user, "Google Authenticator", "GA", true); err != nil {
				t.Fatal(err)
			}
			p = plannedJob{id, "offboard", jobBody(id, "offboard", user, nil), simulator.EffectRemove}
		case 4:
			dev, err := sim.EnrollDevice(user, "OneLogin Protect", "Pixel", true)
			if err != nil {
				t.Fatal(err)
			}
			p = plannedJob{id, "remove", jobBody(id, "remove", user, map[string]any{"device_id": dev}), simulator.EffectRemove}
		}
		out = append(out, p)
	}
	return out
}

// checkEffectsOnce asserts that every planned job caused its effect exactly
// once and nothing else.
func checkEffectsOnce(t *testing.T, sim *simulator.Server, planned []plannedJob, allowNone map[string]bool) {
	t.Helper()
	checkEffects(t, sim, planned, allowNone, false)
}

// checkEffectsAfterKill is checkEffectsOnce for a run that a kill cut short
// while calls were in flight. Contract 1.1: a generate_token whose reply was
// lost is retried (nobody saw the lost token, and it expires), so its
// mfa_token effect may be made again; every other effect at most once.
func checkEffectsAfterKill(t *testing.T, sim *simulator.Server, planned []plannedJob, allowNone map[string]bool) {
	t.Helper()
	checkEffects(t, sim, planned, allowNone, true)
}

func checkEffects(t *testing.T, sim *simulator.Server, planned []plannedJob, allowNone map[string]bool, lostReplies bool) {
	t.Helper()
	by := effectsByRequest(sim)
	for _, p := range planned {
		got := by[p.id]
		if lostReplies && p.effect == "mfa_token" && got[p.effect] > 1 {
			t.Logf("%s: %d temporary tokens (a lost reply retried)", p.id, got[p.effect])
		} else if got[p.effect] > 1 {
			t.Errorf("%s: effect %s made %d times", p.id, p.effect, got[p.effect])
		}
		if got[p.effect] == 0 && !allowNone[p.id] {
			t.Errorf("%s: effect %s never made", p.id, p.effect)
		}
		for k, v := range got {
			if k != p.effect {
				t.Errorf("%s: unexpected effect %s x%d", p.id, k, v)
			}
		}
	}
}

func TestThousandJobsPublishedTwiceRunOnce(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	const n = 1000
	planned := mixedJobs(t, e.sim, n, 10_000)
	ctx := context.Background()
	dupInWindow := 0
	e.provision()
	for _, p := range planned {
		e.publish(p.typ, p.body, p.id)
	}
	e.start(testConfig())
	for _, p := range planned {
		// Inside the duplicate window: JetStream drops it.
		m := nats.NewMsg("mfa.jobs." + p.typ)
		m.Data = []byte(p.body)
		m.Header.Set(jetstream.MsgIDHeader, p.id)
		ack, err := e.js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate {
			dupInWindow++
		}
		// Outside the window (JetStream cannot tell): the ledger must.
		e.publish(p.typ, p.body, p.id+":after-window")
	}
	if dupInWindow != n {
		t.Fatalf("JetStream dropped %d of %d in-window duplicates", dupInWindow, n)
	}
	e.waitResults(n, 90*time.Second)
	testenv.Eventually(t, 60*time.Second, func() bool { return e.count(topology.StreamJobs) == 0 }, func() string {
		return fmt.Sprintf("%d job messages left", e.count(topology.StreamJobs))
	})
	// The duplicates' stored results were published again with the same
	// Nats-Msg-Id, so the result stream still holds one per job.
	if got := e.count(topology.StreamResults); got != n {
		t.Fatalf("results stored = %d, want %d", got, n)
	}
	seen := map[string]int{}
	for _, m := range e.streamMsgs(topology.StreamResults) {
		seen[m.Result.JobID]++
		if m.Result.Outcome != job.Succeeded {
			t.Errorf("%s: %s %+v", m.Result.JobID, m.Result.Outcome, m.Result.Error)
		}
	}
	for _, p := range planned {
		if seen[p.id] != 1 {
			t.Errorf("%s: %d results", p.id, seen[p.id])
		}
	}
	checkEffectsOnce(t, e.sim, planned, nil)
	dups := 0.0
	for _, typ := range []string{"enroll", "generate_token", "offboard", "remove"} {
		dups += testutil.ToFloat64(e.m.DuplicateCounter(typ))
	}
	if dups != n {
		t.Errorf("mfa_duplicate_jobs_total = %v, want %d", dups, n)
	}
}
