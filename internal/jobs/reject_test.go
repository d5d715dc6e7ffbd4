package jobs

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

// badJobs are invalid jobs with the rejection code each must get. An empty
// id means the job's id cannot be read, so no result is published for it.
var badJobs = []struct {
	name, subject, body, id, code string
}{
	{"not JSON", "enroll", `{"id":"b01",`, "", CodeInvalidJSON},
	{"trailing data", "offboard", `{"id":"b02","type":"offboard","user_id":1} {}`, "", CodeInvalidJSON},
	{"array", "offboard", `[{"id":"b03"}]`, "", CodeNotAnObject},
	{"string", "offboard", `"b04"`, "", CodeNotAnObject},
	{"empty body", "remove", ``, "", CodeInvalidJSON},
	{"missing id", "offboard", `{"type":"offboard","user_id":1}`, "", CodeMissingField},
	{"id with a space", "offboard", `{"id":"b 07","type":"offboard","user_id":1}`, "", CodeInvalidID},
	{"id too long", "offboard", `{"id":"` + strings.Repeat("x", 129) + `","type":"offboard","user_id":1}`, "", CodeInvalidID},
	{"id not a string", "offboard", `{"id":9,"type":"offboard","user_id":1}`, "", CodeInvalidID},
	{"missing user", "offboard", `{"id":"b10","type":"offboard"}`, "b10", CodeMissingField},
	{"zero user", "offboard", `{"id":"b11","type":"offboard","user_id":0}`, "b11", CodeInvalidUserID},
	{"negative user", "offboard", `{"id":"b12","type":"offboard","user_id":-5}`, "b12", CodeInvalidUserID},
	{"user as string", "offboard", `{"id":"b13","type":"offboard","user_id":"12"}`, "b13", CodeInvalidUserID},
	{"user fractional", "offboard", `{"id":"b14","type":"offboard","user_id":1.5}`, "b14", CodeInvalidUserID},
	{"user too big", "offboard", `{"id":"b15","type":"offboard","user_id":1e30}`, "b15", CodeInvalidUserID},
	{"unknown type value", "offboard", `{"id":"b16","type":"disable","user_id":1}`, "b16", CodeInvalidType},
	{"type and subject disagree", "remove", `{"id":"b17","type":"offboard","user_id":1}`, "b17", CodeTypeMismatch},
	{"unknown top-level field", "offboard", `{"id":"b18","type":"offboard","user_id":1,"priority":"high"}`, "b18", CodeUnknownField},
	{"unknown param", "remove", `{"id":"b19","type":"remove","user_id":1,"params":{"device_id":5,"force":true}}`, "b19", CodeUnknownField},
	{"offboard with params", "offboard", `{"id":"b20","type":"offboard","user_id":1,"params":{"device_id":5}}`, "b20", CodeUnknownField},
	{"remove without params", "remove", `{"id":"b21","type":"remove","user_id":1}`, "b21", CodeMissingField},
	{"remove device zero", "remove", `{"id":"b22","type":"remove","user_id":1,"params":{"device_id":0}}`, "b22", CodeOutOfRange},
	{"device as string", "activate", `{"id":"b23","type":"activate","user_id":1,"params":{"device_id":"5"}}`, "b23", CodeWrongType},
	{"enroll without factor", "enroll", `{"id":"b24","type":"enroll","user_id":1,"params":{"display_name":"p","number":"+15551234567"}}`, "b24", CodeMissingField},
	{"enroll with both factors", "enroll", `{"id":"b25","type":"enroll","user_id":1,"params":{"factor_id":1,"factor_name":"OneLogin SMS","display_name":"p","number":"+15551234567"}}`, "b25", CodeConflictingFields},
	{"enroll bad number", "enroll", `{"id":"b26","type":"enroll","user_id":1,"params":{"factor_id":1,"display_name":"p","number":"555-1234"}}`, "b26", CodeInvalidFormat},
	{"sms message too long", "activate", `{"id":"b27","type":"activate","user_id":1,"params":{"device_id":5,"sms_message":"` + strings.Repeat("m", 161) + `"}}`, "b27", CodeInvalidLength},
	{"state token ttl too long", "activate", `{"id":"b28","type":"activate","user_id":1,"params":{"device_id":5,"state_token_expires_in":901}}`, "b28", CodeOutOfRange},
	{"token without recipient", "generate_token", `{"id":"b29","type":"generate_token","user_id":1}`, "b29", CodeRecipientXKeyRequired},
	{"recipient not a curve key", "generate_token", `{"id":"b30","type":"generate_token","user_id":1,"params":{"recipient_xkey":"X` + strings.Repeat("A", 55) + `"}}`, "b30", CodeInvalidRecipientXKey},
	{"token expiry too short", "generate_token", `{"id":"b31","type":"generate_token","user_id":1,"params":{"expires_in":60}}`, "b31", CodeOutOfRange},
	{"not_after not a time", "offboard", `{"id":"b32","type":"offboard","user_id":1,"not_after":"tomorrow"}`, "b32", CodeInvalidFormat},
	{"verify temp token without otp", "verify", `{"id":"b33","type":"verify","user_id":1,"params":{"device_id":0}}`, "b33", CodeMissingField},
	{"hostile strings", "enroll", `{"id":"b34","type":"enroll","user_id":1,"params":{"factor_name":"OneLogin SMS","display_name":"\u0000\u001b[2J<script>","number":"+1\n555"}}`, "b34", CodeInvalidFormat},
	{"oversize", "enroll", `{"id":"b35","type":"enroll","user_id":1,"params":{"factor_name":"` + strings.Repeat("A", 70<<10) + `","display_name":"p","number":"+15551234567"}}`, "b35", CodeTooLarge},
	{"unicode id", "offboard", `{"id":"b36-ü","type":"offboard","user_id":1}`, "", CodeInvalidID},
}

func TestBadJobsAreRejected(t *testing.T) {
	if len(badJobs) < 25 {
		t.Fatalf("only %d bad jobs", len(badJobs))
	}
	e := newEnv(t, simulator.Config{})
	e.provision()
	// A valid job, then the same id with another body.
	e.publish("offboard", `{"id":"b-reuse","type":"offboard","user_id":77}`, "b-reuse")
	w := e.start(testConfig())
	e.waitResults(1, 10*time.Second)
	callsBefore := e.sim.ResourceCalls()
	e.publish("offboard", `{"id":"b-reuse","type":"offboard","user_id":78}`, "b-reuse:2")
	for i, b := range badJobs {
		e.publish(b.subject, b.body, fmt.Sprintf("bad-%d", i))
	}
	withID := 1 // the reuse
	for _, b := range badJobs {
		if b.id != "" {
			withID++
		}
	}
	waitUntil(t, 20*time.Second, func() bool { return e.count(StreamDLQ) == len(badJobs)+1 }, func() string {
		return fmt.Sprintf("%d of %d dead letters", e.count(StreamDLQ), len(badJobs)+1)
	})
	rs := e.waitResults(1+withID, 10*time.Second)
	if calls := e.sim.ResourceCalls(); calls != callsBefore {
		t.Errorf("bad jobs made %d OneLogin calls", calls-callsBefore)
	}
	dlqByCode := map[string]int{}
	for _, m := range e.streamMsgs(StreamDLQ) {
		if m.Header.Get(HeaderReason) != string(Rejected) {
			t.Errorf("DLQ reason %q", m.Header.Get(HeaderReason))
		}
		dlqByCode[m.Header.Get(HeaderErrorCode)]++
	}
	wantCodes := map[string]int{CodeIDReused: 1}
	for _, b := range badJobs {
		wantCodes[b.code]++
	}
	for code, n := range wantCodes {
		if dlqByCode[code] != n {
			t.Errorf("DLQ has %d copies with code %s, want %d", dlqByCode[code], code, n)
		}
	}
	for _, b := range badJobs {
		if b.id == "" {
			continue
		}
		r, ok := rs[b.id]
		if !ok {
			t.Errorf("%s: no result", b.name)
			continue
		}
		if r.Result.Outcome != Rejected || r.Result.Error == nil || r.Result.Error.Code != b.code {
			t.Errorf("%s: got %s %+v, want rejected %s", b.name, r.Result.Outcome, r.Result.Error, b.code)
		}
		if strings.ContainsAny(r.Result.Error.Message, "\x00\x1b\n") {
			t.Errorf("%s: message echoes hostile bytes: %q", b.name, r.Result.Error.Message)
		}
		validResult(t, r.Data)
	}
	// The reuse got its own result, next to the original's.
	var reuse, original int
	for _, m := range e.streamMsgs(StreamResults) {
		if m.Result.JobID == "b-reuse" {
			switch m.Result.Outcome {
			case Rejected:
				reuse++
				if m.Result.Error.Code != CodeIDReused {
					t.Errorf("reuse code %s", m.Result.Error.Code)
				}
			default:
				original++
			}
		}
	}
	if reuse != 1 || original != 1 {
		t.Errorf("b-reuse results: %d rejected, %d original", reuse, original)
	}
	// Still healthy: a good job after all that succeeds.
	e.publish("offboard", `{"id":"after-bad","type":"offboard","user_id":79}`, "after-bad")
	rs = e.waitResults(2+withID, 10*time.Second)
	if rs["after-bad"].Result.Outcome != Noop {
		t.Fatalf("job after the bad ones: %+v", rs["after-bad"].Result)
	}
	waitUntil(t, 5*time.Second, func() bool { return e.count(StreamJobs) == 0 }, func() string { return "jobs left in the stream" })
	w.stop(t)
}
