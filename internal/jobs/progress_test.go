package jobs_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// A job given back for a retry tells the job query its deliveries so far,
// the error code and when it comes back; once OneLogin answers again it
// finishes, its attempts counting every delivery.
func TestRetryingJobTellsItsProgress(t *testing.T) {
	e := newEnv(t, simulator.Config{LastUser: 1000})
	e.sim.SetFaults(simulator.Faults{OutageUntil: time.Now().Add(time.Hour)})
	e.provision()
	cfg := testConfig()
	cfg.NakBase, cfg.NakMax, cfg.MaxDeliver = 3*time.Second, 3*time.Second, 10
	e.start(cfg)
	e.publish("offboard", jobBody("progress-1", "offboard", 7, nil), "progress-1")

	var s *ops.JobState
	testenv.Eventually(t, 20*time.Second, func() bool {
		s = e.jobState("progress-1")
		return s.State == ops.JobRunning && s.Attempts >= 1
	}, func() string { return fmt.Sprintf("job state %+v", s) })
	if s.LastErrorCode != job.CodeOneLoginUnavailable || s.NextRetryAt == nil {
		t.Fatalf("a retrying job: %+v", s)
	}
	if d := time.Until(*s.NextRetryAt); d > 3*time.Second || d < -2*time.Second {
		t.Errorf("next retry in %v, the nak delay is 3s", d)
	}

	e.sim.SetFaults(simulator.Faults{})
	rs := e.waitResults(1, 30*time.Second)
	if r := rs["progress-1"].Result; r.Outcome != job.Noop && r.Outcome != job.Succeeded || r.Attempts < 2 {
		t.Errorf("after the outage: %s, attempts %d", r.Outcome, r.Attempts)
	}
	if s := e.jobState("progress-1"); s.State != ops.JobFinished || s.Attempts != 0 || s.NextRetryAt != nil {
		t.Errorf("a finished job still tells retry fields: %+v", s)
	}
}
