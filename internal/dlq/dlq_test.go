package dlq

import "testing"

// A dead-lettered cancel is replayed on the subject it came on: a scoped
// cancel keeps its scope, never the operators' bare subject.
func TestReplayTargetKeepsTheCancelScope(t *testing.T) {
	body := []byte(`{"id":"c1","type":"cancel","params":{"job_id":"o1"}}`)
	for _, c := range []struct{ original, want string }{
		{"mfa.jobs.cancel.hr.other", "mfa.jobs.cancel.hr.other"},
		{"mfa.jobs.cancel", "mfa.jobs.cancel"},
		{"", "mfa.jobs.cancel"},
		{"mfa.jobs.cancel.*", "mfa.jobs.cancel"},
	} {
		d := DeadLetter{Subject: "mfa.dlq.cancel", JobID: "c1", OriginalSubject: c.original, Body: body}
		subject, id, err := ReplayTarget(d)
		if err != nil || id != "c1" || subject != c.want {
			t.Errorf("original %q: replayed to %q (%q, %v), want %q", c.original, subject, id, err, c.want)
		}
	}
	// Another type never takes the original subject.
	d := DeadLetter{Subject: "mfa.dlq.offboard", JobID: "o1", OriginalSubject: "mfa.jobs.cancel.hr.x", Body: []byte(`{"id":"o1","type":"offboard","user_id":1}`)}
	if subject, _, err := ReplayTarget(d); err != nil || subject != "mfa.jobs.offboard" {
		t.Errorf("offboard replayed to %q, %v", subject, err)
	}
}
