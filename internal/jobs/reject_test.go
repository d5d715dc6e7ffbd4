package jobs_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/job/jobtest"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

func TestBadJobsAreRejected(t *testing.T) {
	if len(jobtest.BadJobs) < 25 {
		t.Fatalf("only %d bad jobs", len(jobtest.BadJobs))
	}
	e := newEnv(t, simulator.Config{})
	e.provision()
	// A valid job, then the same id with another body.
	e.publish("offboard", `{"id":"b-reuse","type":"offboard","user_id":77}`, "b-reuse")
	w := e.start(testConfig())
	e.waitResults(1, 10*time.Second)
	callsBefore := e.sim.ResourceCalls()
	e.publish("offboard", `{"id":"b-reuse","type":"offboard","user_id":78}`, "b-reuse:2")
	for i, b := range jobtest.BadJobs {
		e.publish(b.Subject, b.Body, fmt.Sprintf("bad-%d", i))
	}
	withID := 0 // the reuse gets no result: its id has one already
	for _, b := range jobtest.BadJobs {
		if b.ID != "" {
			withID++
		}
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return e.count(topology.StreamDLQ) == len(jobtest.BadJobs)+1 }, func() string {
		return fmt.Sprintf("%d of %d dead letters", e.count(topology.StreamDLQ), len(jobtest.BadJobs)+1)
	})
	rs := e.waitResults(1+withID, 10*time.Second)
	if calls := e.sim.ResourceCalls(); calls != callsBefore {
		t.Errorf("bad jobs made %d OneLogin calls", calls-callsBefore)
	}
	dlqByCode := map[string]int{}
	for _, m := range e.streamMsgs(topology.StreamDLQ) {
		if m.Header.Get(job.HeaderReason) != string(job.Rejected) {
			t.Errorf("DLQ reason %q", m.Header.Get(job.HeaderReason))
		}
		dlqByCode[m.Header.Get(job.HeaderErrorCode)]++
	}
	wantCodes := map[string]int{job.CodeIDReused: 1}
	for _, b := range jobtest.BadJobs {
		wantCodes[b.Code]++
	}
	for code, n := range wantCodes {
		if dlqByCode[code] != n {
			t.Errorf("DLQ has %d copies with code %s, want %d", dlqByCode[code], code, n)
		}
	}
	for _, b := range jobtest.BadJobs {
		if b.ID == "" {
			continue
		}
		r, ok := rs[b.ID]
		if !ok {
			t.Errorf("%s: no result", b.Name)
			continue
		}
		if r.Result.Outcome != job.Rejected || r.Result.Error == nil || r.Result.Error.Code != b.Code {
			t.Errorf("%s: got %s %+v, want rejected %s", b.Name, r.Result.Outcome, r.Result.Error, b.Code)
		}
		if strings.ContainsAny(r.Result.Error.Message, "\x00\x1b\n") {
			t.Errorf("%s: message echoes hostile bytes: %q", b.Name, r.Result.Error.Message)
		}
		validResult(t, r.Data)
	}
	// The reuse got no result: the id keeps its one result.
	var reuse, original int
	for _, m := range e.streamMsgs(topology.StreamResults) {
		if m.Result.JobID == "b-reuse" {
			switch m.Result.Outcome {
			case job.Rejected:
				reuse++
				if m.Result.Error.Code != job.CodeIDReused {
					t.Errorf("reuse code %s", m.Result.Error.Code)
				}
			default:
				original++
			}
		}
	}
	if reuse != 0 || original != 1 {
		t.Errorf("b-reuse results: %d rejected, %d original", reuse, original)
	}
	// Still healthy: a good job after all that succeeds.
	e.publish("offboard", `{"id":"after-bad","type":"offboard","user_id":79}`, "after-bad")
	rs = e.waitResults(2+withID, 10*time.Second)
	if rs["after-bad"].Result.Outcome != job.Noop {
		t.Fatalf("job after the bad ones: %+v", rs["after-bad"].Result)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return e.count(topology.StreamJobs) == 0 }, func() string { return "jobs left in the stream" })
	w.stop(t)
}

// A rejection is final: the id keeps its one result, and a corrected job
// under the same id gets a DLQ copy (id_reused) but no second result, while
// the same rejected body again only gets the stored result again.
func TestRejectionIsFinalForItsID(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	e.provision()
	w := e.start(testConfig())
	bad := `{"id":"r-1","type":"remove","user_id":5,"params":{"device_id":0}}`
	e.publish("remove", bad, "r-1")
	e.waitResults(1, 10*time.Second)
	e.publish("remove", bad, "r-1:again")
	e.publish("remove", `{"id":"r-1","type":"remove","user_id":5,"params":{"device_id":9}}`, "r-1:fixed")
	testenv.Eventually(t, 10*time.Second, func() bool { return e.count(topology.StreamJobs) == 0 && e.count(topology.StreamDLQ) == 2 }, func() string {
		return fmt.Sprintf("%d jobs, %d dead letters", e.count(topology.StreamJobs), e.count(topology.StreamDLQ))
	})
	rs := e.streamMsgs(topology.StreamResults)
	if len(rs) != 1 || rs[0].Result.Outcome != job.Rejected || rs[0].Header.Get("Nats-Msg-Id") != "r-1:result" {
		t.Fatalf("results: %+v", rs)
	}
	dl := e.streamMsgs(topology.StreamDLQ)
	if dl[1].Header.Get(job.HeaderErrorCode) != job.CodeIDReused {
		t.Errorf("second dead letter: %v", dl[1].Header)
	}
	if e.sim.ResourceCalls() != 0 {
		t.Errorf("%d OneLogin calls", e.sim.ResourceCalls())
	}
	w.stop(t)
}
