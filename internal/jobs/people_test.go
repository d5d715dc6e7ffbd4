package jobs_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// personBody builds a job that names its person by a user selector.
func personBody(t *testing.T, id, typ string, user map[string]string, params map[string]any) string {
	t.Helper()
	m := map[string]any{"id": id, "type": typ, "user": user}
	if params != nil {
		m["params"] = params
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// people is the directory of the people tests: a user per selector kind,
// two users sharing an external id, and users whose emails a wildcard
// would match.
var people = []simulator.DirectoryUser{
	{ID: 201, Email: "ada@example.com", Username: "ada", ExternalID: "E-201", Status: 1, State: 1},
	{ID: 202, Email: "grace@example.com", Username: "grace", ExternalID: "E-202", Status: 1, State: 1},
	{ID: 203, Email: "alan@example.com", Username: "alan", ExternalID: "E-DUP", Status: 1, State: 1},
	{ID: 204, Email: "alan2@example.com", Username: "alan2", ExternalID: "E-DUP", Status: 1, State: 1},
	{ID: 205, Email: "bob@example.com", Username: "bob", ExternalID: "E-205", Status: 1, State: 1},
	{ID: 206, Email: "bobby@example.com", Username: "bobby", ExternalID: "E-206", Status: 1, State: 1},
	// Several identifiers: carol is named by her email and an identity
	// provider's own id (unknown to OneLogin); dave's external id is held
	// by a look-alike, eve; frank's email matches two people.
	{ID: 207, Email: "carol@example.com", Username: "carol", ExternalID: "E-207", Status: 1, State: 1},
	{ID: 208, Email: "dave@example.com", Username: "dave", ExternalID: "E-208", Status: 1, State: 1},
	{ID: 209, Email: "eve@example.com", Username: "eve", ExternalID: "E-DAVE", Status: 1, State: 1},
	{ID: 210, Email: "Frank@example.com", Username: "frank", ExternalID: "E-210", Status: 1, State: 1},
	{ID: 211, Email: "frank@example.com", Username: "frank.k", ExternalID: "E-211", Status: 1, State: 1},
}

func TestJobsThatNamePeople(t *testing.T) {
	e := newEnv(t, simulator.Config{Directory: people})
	for _, u := range []int64{201, 205, 206, 207, 208, 209, 210, 211} {
		if _, err := e.sim.EnrollDevice(u, "OneLogin SMS", "phone", true); err != nil {
			t.Fatal(err)
		}
	}
	e.start(testConfig())
	sms := map[string]any{"factor_name": "OneLogin SMS", "display_name": "Work phone", "number": "+15551230001"}
	jobs := [][3]string{
		{"offboard", "by-email", personBody(t, "by-email", "offboard", map[string]string{"email": "ADA@example.com"}, nil)},
		{"enroll", "by-username", personBody(t, "by-username", "enroll", map[string]string{"username": "grace"}, sms)},
		{"offboard", "by-external-id", personBody(t, "by-external-id", "offboard", map[string]string{"external_id": "E-206"}, nil)},
		{"offboard", "nobody", personBody(t, "nobody", "offboard", map[string]string{"email": "nobody@example.com"}, nil)},
		{"offboard", "two", personBody(t, "two", "offboard", map[string]string{"external_id": "E-DUP"}, nil)},
		{"offboard", "star", personBody(t, "star", "offboard", map[string]string{"email": "bob*@example.com"}, nil)},
		{"offboard", "ext-case", personBody(t, "ext-case", "offboard", map[string]string{"external_id": "e-205"}, nil)},
		{"offboard", "leading-star", personBody(t, "leading-star", "offboard", map[string]string{"email": "*@example.com"}, nil)},
		{"offboard", "both", `{"id":"both","type":"offboard","user_id":205,"user":{"email":"bob@example.com"}}`},
		{"offboard", "neither", `{"id":"neither","type":"offboard"}`},
		{"offboard", "empty-user", `{"id":"empty-user","type":"offboard","user":{}}`},
		{"offboard", "inner-bang", personBody(t, "inner-bang", "offboard", map[string]string{"email": "bob@example.com", "username": "b!ob"}, nil)},
		{"offboard", "okta", personBody(t, "okta", "offboard", map[string]string{"email": "carol@example.com", "external_id": "00u1okta"}, nil)},
		{"offboard", "look-alike", personBody(t, "look-alike", "offboard", map[string]string{"email": "dave@example.com", "external_id": "E-DAVE"}, nil)},
		{"offboard", "email-twins", personBody(t, "email-twins", "offboard", map[string]string{"email": "frank@example.com", "external_id": "E-210"}, nil)},
		{"offboard", "none-of-them", personBody(t, "none-of-them", "offboard", map[string]string{"username": "nobody", "external_id": "E-NONE"}, nil)},
	}
	for _, j := range jobs {
		e.publish(j[0], j[2], j[1])
	}
	rs := e.waitResults(len(jobs), 30*time.Second)

	r := expectResult(t, rs, "by-email", "offboard", job.Succeeded, "")
	if r.UserID != 201 || r.User == nil || r.User.Email != "ADA@example.com" {
		t.Errorf("by-email: user_id %d, user %+v; want 201 and the email as given", r.UserID, r.User)
	}
	if d := e.sim.Devices(201); len(d) != 0 {
		t.Errorf("user 201 still has %d factors", len(d))
	}
	r = expectResult(t, rs, "by-username", "enroll", job.Succeeded, "")
	if r.UserID != 202 || r.User == nil || r.User.Username != "grace" {
		t.Errorf("by-username: user_id %d, user %+v", r.UserID, r.User)
	}
	if d := e.sim.Devices(202); len(d) != 1 {
		t.Errorf("user 202 has %d factors, want 1", len(d))
	}
	if r = expectResult(t, rs, "by-external-id", "offboard", job.Succeeded, ""); r.UserID != 206 {
		t.Errorf("by-external-id: user_id %d, want 206", r.UserID)
	}
	for id, code := range map[string]string{"nobody": job.CodeUserNotFound, "two": job.CodeIdentityAmbiguous, "ext-case": job.CodeUserNotFound,
		"look-alike": job.CodeIdentityAmbiguous, "email-twins": job.CodeIdentityAmbiguous, "none-of-them": job.CodeUserNotFound} {
		r := expectResult(t, rs, id, "offboard", job.Failed, code)
		if r.UserID != 0 || r.User == nil {
			t.Errorf("%s: user_id %d, user %+v; want 0 and the user echoed", id, r.UserID, r.User)
		}
		if strings.Contains(r.Error.Message, "@") || strings.Contains(r.Error.Message, "E-DUP") || strings.Contains(r.Error.Message, "E-DAVE") {
			t.Errorf("%s: the error message holds the selector's value: %s", id, r.Error.Message)
		}
	}
	// The Okta-style pair: the email finds carol, the identity provider's
	// own id finds nobody; carol is offboarded and the result carries the
	// user as given.
	r = expectResult(t, rs, "okta", "offboard", job.Succeeded, "")
	if r.UserID != 207 || r.User == nil || r.User.Email != "carol@example.com" || r.User.ExternalID != "00u1okta" {
		t.Errorf("okta: user_id %d, user %+v", r.UserID, r.User)
	}
	if d := e.sim.Devices(207); len(d) != 0 {
		t.Errorf("user 207 still has %d factors", len(d))
	}
	// Look-alikes keep their factors: bob and bobby ("bob*" is refused,
	// never a wildcard), dave and eve (eve holds dave's external id),
	// frank and his namesake (the email names both).
	for _, u := range []int64{205, 208, 209, 210, 211} {
		if d := e.sim.Devices(u); len(d) != 1 {
			t.Errorf("user %d has %d factors, want 1", u, len(d))
		}
	}
	for _, id := range []string{"star", "leading-star", "inner-bang"} {
		expectResult(t, rs, id, "offboard", job.Rejected, job.CodeInvalidSelector)
	}
	expectResult(t, rs, "both", "offboard", job.Rejected, job.CodeConflictingFields)
	expectResult(t, rs, "neither", "offboard", job.Rejected, job.CodeMissingField)
	expectResult(t, rs, "empty-user", "offboard", job.Rejected, job.CodeMissingField)

	// Every dead letter of a job named by a selector says which kinds of
	// identifier, never their values.
	want := map[string]string{"nobody": "email", "two": "external_id", "star": "email", "ext-case": "external_id", "leading-star": "email",
		"inner-bang": "email,username", "look-alike": "email,external_id", "email-twins": "email,external_id", "none-of-them": "username,external_id"}
	seen := 0
	for _, m := range e.streamMsgs(topology.StreamDLQ) {
		id := m.Header.Get(job.HeaderJobID)
		kind, ok := want[id]
		if !ok {
			continue
		}
		seen++
		if got := m.Header.Get(job.HeaderUserSelector); got != kind {
			t.Errorf("dead letter of %s: %s = %q, want %q", id, job.HeaderUserSelector, got, kind)
		}
		for k, vs := range m.Header {
			for _, v := range vs {
				if strings.Contains(v, "@") || strings.Contains(v, "E-DUP") || strings.Contains(v, "E-DAVE") {
					t.Errorf("dead letter of %s: header %s holds the selector's value", id, k)
				}
			}
		}
	}
	if seen != len(want) {
		t.Errorf("%d dead letters of selector jobs, want %d", seen, len(want))
	}

	// A duplicate of a job named by email is answered from the ledger,
	// without asking OneLogin again, even after the person was deleted.
	calls := e.sim.ResourceCalls()
	e.sim.DeleteUser(201)
	e.publish("offboard", personBody(t, "by-email", "offboard", map[string]string{"email": "ADA@example.com"}, nil), "")
	testenv.Eventually(t, 20*time.Second, func() bool {
		return testutil.ToFloat64(e.m.DuplicateCounter("offboard")) == 1 && e.count(topology.StreamJobs) == 0
	}, func() string { return "the duplicate was not answered" })
	rs = e.waitResults(len(jobs), time.Second)
	if r := expectResult(t, rs, "by-email", "offboard", job.Succeeded, ""); r.UserID != 201 {
		t.Errorf("the stored result has user_id %d", r.UserID)
	}
	if got := e.sim.ResourceCalls(); got != calls {
		t.Errorf("the duplicate made %d OneLogin calls", got-calls)
	}
}

// A positive answer is cached: a second job for the same person within the
// cache's time does not look the person up again.
func TestResolvedUsersAreCached(t *testing.T) {
	e := newEnv(t, simulator.Config{Directory: people})
	e.start(testConfig())
	e.publish("offboard", personBody(t, "c-1", "offboard", map[string]string{"email": "bob@example.com"}, nil), "")
	e.waitResults(1, 20*time.Second)
	lookups := func() int { return e.sim.Stats().Requests["users"] }
	before := lookups()
	if before == 0 {
		t.Fatal("the first job made no Users API call")
	}
	e.publish("offboard", personBody(t, "c-2", "offboard", map[string]string{"email": "BOB@example.com"}, nil), "")
	rs := e.waitResults(2, 20*time.Second)
	if r := expectResult(t, rs, "c-2", "offboard", job.Noop, ""); r.UserID != 205 {
		t.Errorf("user_id %d, want 205", r.UserID)
	}
	if after := lookups(); after != before {
		t.Errorf("the second job looked the user up again (%d lookups, then %d)", before, after)
	}
}

// A job named by a selector keeps the time model: a cancel that came first
// ends it cancelled even when its person cannot be found, and one whose
// not_before is ahead is looked up only when it is due.
func TestPeopleWithCancelAndSchedule(t *testing.T) {
	e := newEnv(t, simulator.Config{Directory: people})
	if _, err := e.sim.EnrollDevice(205, "OneLogin SMS", "phone", true); err != nil {
		t.Fatal(err)
	}
	e.start(testConfig())
	e.publish("cancel", `{"id":"cancel-1","type":"cancel","params":{"job_id":"sel-unknown"}}`, "")
	e.waitResults(1, 20*time.Second)
	lookups := func() int { return e.sim.Stats().Requests["users"] }
	due := time.Now().Add(3 * time.Second).UTC().Format(time.RFC3339)
	e.publish("offboard", personBody(t, "sel-unknown", "offboard", map[string]string{"email": "nobody@example.com"}, nil), "")
	e.publish("offboard", `{"id":"sel-later","type":"offboard","user":{"username":"bob"},"not_before":"`+due+`"}`, "")
	rs := e.waitResults(2, 20*time.Second)
	expectResult(t, rs, "sel-unknown", "offboard", job.Cancelled, job.CodeCancelled)
	if n := lookups(); n > 1 {
		t.Errorf("%d Users API calls before the scheduled job was due", n)
	}
	rs = e.waitResults(3, 20*time.Second)
	if r := expectResult(t, rs, "sel-later", "offboard", job.Succeeded, ""); r.UserID != 205 {
		t.Errorf("scheduled job resolved to %d", r.UserID)
	}
	if d := e.sim.Devices(205); len(d) != 0 {
		t.Errorf("user 205 still has %v", d)
	}
}
