package job_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/job/jobtest"
)

// onlyAfterParsing are rejection codes no message body can produce alone:
// id_reused needs the ledger (see the pipeline's tests), invalid_value is
// the fallback for a schema violation of no known kind (the schema has no
// enum or const outside "type", whose violations are invalid_type).
var onlyAfterParsing = map[string]bool{job.CodeIDReused: true, job.CodeInvalidValue: true}

// extraBadJobs cover codes that the pipeline's table cannot carry: a message
// on a subject that no consumer of the pipeline reads.
var extraBadJobs = []struct{ name, subject, body, id, code string }{
	{"unknown subject type", "mfa.jobs.disable", `{"id":"x01","type":"offboard","user_id":1}`, "x01", job.CodeUnknownSubject},
	{"subject outside the jobs", "mfa.other.offboard", `{"id":"x02","type":"offboard","user_id":1}`, "x02", job.CodeUnknownSubject},
	{"unknown subject, unreadable body", "mfa.jobs.x", `{`, "", job.CodeUnknownSubject},
	{"oversize, unreadable id", "mfa.jobs.offboard", `{"id":"x 04","pad":"` + strings.Repeat("A", 70<<10) + `"}`, "", job.CodeTooLarge},
}

func newParser(t *testing.T, allowPlain bool) *job.Parser {
	t.Helper()
	p, err := job.NewParser(64<<10, allowPlain)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadJobsParse(t *testing.T) {
	p := newParser(t, false)
	type tc struct{ name, subject, body, id, code string }
	var cases []tc
	for _, b := range jobtest.BadJobs {
		cases = append(cases, tc{b.Name, job.SubjectPrefix + b.Subject, b.Body, b.ID, b.Code})
	}
	for _, b := range extraBadJobs {
		cases = append(cases, tc(b))
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.code] = true
		j, rej := p.Parse(c.subject, []byte(c.body))
		if rej == nil {
			t.Errorf("%s: accepted as %+v", c.name, j)
			continue
		}
		if rej.Code != c.code || rej.JobID != c.id {
			t.Errorf("%s: got %s (id %q), want %s (id %q): %s", c.name, rej.Code, rej.JobID, c.code, c.id, rej.Message)
		}
		if strings.ContainsAny(rej.Message, "\x00\x1b\n") || strings.Contains(rej.Message, "<script>") {
			t.Errorf("%s: message echoes the value: %q", c.name, rej.Message)
		}
		if !job.KnownCode(rej.Code) {
			t.Errorf("%s: code %s is not in job.Codes", c.name, rej.Code)
		}
		res, ok := rej.Result(1, time.Unix(0, 0), time.Unix(1, 0))
		if ok != (c.id != "" && rej.Type.Valid()) {
			t.Errorf("%s: result %v, id %q type %q", c.name, ok, c.id, rej.Type)
		}
		if ok && (res.Outcome != job.Rejected || res.Error.Code != c.code || res.JobID != c.id) {
			t.Errorf("%s: result %+v", c.name, res)
		}
	}
	for _, code := range job.CodesOf(job.Rejected) {
		if !covered[code] && !onlyAfterParsing[code] {
			t.Errorf("no bad job is rejected with %s", code)
		}
	}
}

func TestGoodJobsParse(t *testing.T) {
	p := newParser(t, false)
	good := []struct{ subject, body string }{
		{"enroll", `{"id":"g1","type":"enroll","user_id":1,"params":{"factor_name":"OneLogin SMS","display_name":"p","number":"+15551234567"}}`},
		{"activate", `{"id":"g2","type":"activate","user_id":1e3,"params":{"device_id":5,"state_token_expires_in":300,"numeric_sms_otp":true}}`},
		{"verify", `{"id":"g3","type":"verify","user_id":1,"params":{"device_id":5,"otp_token":"123456","state_token":"s"}}`},
		{"remove", `{"id":"g4","type":"remove","user_id":1,"params":{"device_id":5}}`},
		{"offboard", `{"id":"g5","type":"offboard","user_id":1,"not_after":"2030-01-01T00:00:00Z","correlation_id":"c","source":"hr"}`},
	}
	for _, g := range good {
		j, rej := p.Parse(job.SubjectPrefix+g.subject, []byte(g.body))
		if rej != nil {
			t.Errorf("%s: rejected: %v", g.subject, rej)
			continue
		}
		if string(j.Type) != g.subject || j.Hash == "" {
			t.Errorf("%s: parsed %+v", g.subject, j)
		}
	}
	j, _ := p.Parse("mfa.jobs.activate", []byte(good[1].body))
	if j.UserID != 1000 || j.Params.DeviceID != 5 || j.Params.NumericSMSOTP == nil || !*j.Params.NumericSMSOTP {
		t.Errorf("activate params: %+v", j)
	}
	// The hash leaves the secrets out: a DLQ copy with blanked secrets
	// still matches its original in the ledger.
	v, _ := p.Parse("mfa.jobs.verify", []byte(good[2].body))
	other, rej := p.Parse("mfa.jobs.verify", []byte(`{"id":"g3","type":"verify","user_id":1,"params":{"device_id":5,"otp_token":"999999","state_token":"other"}}`))
	if rej != nil || other.Hash != v.Hash {
		t.Errorf("hash depends on secrets: %v", rej)
	}
	moved, _ := p.Parse("mfa.jobs.verify", []byte(`{"id":"g3","type":"verify","user_id":1,"params":{"device_id":6,"otp_token":"123456","state_token":"s"}}`))
	if moved.Hash == v.Hash {
		t.Error("hash ignores device_id")
	}
}

func TestMessageIDs(t *testing.T) {
	cases := map[string]string{
		job.ResultMsgID("a", 0): "a:result",
		job.ResultMsgID("a", 7): "a:result:replay:7",
		job.DLQMsgID(12):        "dlq:12",
		job.ReplayMsgID("a", 7): "a:replay:7",
		job.ReplayTag(7):        "7",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

func TestTypesAndLanes(t *testing.T) {
	urgent := job.TypesOf(job.LaneUrgent)
	if len(urgent) != 3 || len(urgent)+len(job.TypesOf(job.LaneNormal)) != len(job.Types) {
		t.Errorf("lanes: %v", urgent)
	}
	for _, typ := range job.Types {
		// A generate_token whose reply was lost is retried (contract 1.1).
		want := typ == job.TypeActivate || typ == job.TypeVerify
		if typ.AtMostOnce() != want {
			t.Errorf("%s at most once: %v", typ, typ.AtMostOnce())
		}
		guarded := typ == job.TypeEnroll || typ == job.TypeActivate || typ == job.TypeVerify || typ == job.TypeGenerateToken
		if typ.SupersededByOffboard() != guarded {
			t.Errorf("%s guarded: %v", typ, typ.SupersededByOffboard())
		}
	}
	if !job.TypeCancel.Urgent() {
		t.Error("cancel is not urgent")
	}
}

// not_before is bounded (366 days ahead), ordered before not_after, and
// forbidden on a cancel; a cancel needs params.job_id and takes no user.
func TestParseTimeRules(t *testing.T) {
	p, err := job.NewParser(64<<10, false)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	p.Now = func() time.Time { return now }
	off := func(extra string) []byte {
		return []byte(`{"id":"o1","type":"offboard","user_id":5` + extra + `}`)
	}
	ts := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
	cases := []struct {
		name, subject string
		body          []byte
		code          string
	}{
		{"366 days ahead", "mfa.jobs.offboard", off(`,"not_before":"` + ts(now.Add(job.MaxAhead)) + `"`), ""},
		{"past 366 days", "mfa.jobs.offboard", off(`,"not_before":"` + ts(now.Add(job.MaxAhead+time.Second)) + `"`), job.CodeOutOfRange},
		{"in the past", "mfa.jobs.offboard", off(`,"not_before":"2020-01-01T00:00:00Z"`), ""},
		{"after not_after", "mfa.jobs.offboard", off(`,"not_before":"` + ts(now.Add(2*time.Hour)) + `","not_after":"` + ts(now.Add(time.Hour)) + `"`), job.CodeConflictingFields},
		{"before not_after", "mfa.jobs.offboard", off(`,"not_before":"` + ts(now.Add(time.Hour)) + `","not_after":"` + ts(now.Add(2*time.Hour)) + `"`), ""},
		{"not a time", "mfa.jobs.offboard", off(`,"not_before":"friday"`), job.CodeInvalidFormat},
		{"cancel", "mfa.jobs.cancel", []byte(`{"id":"c1","type":"cancel","params":{"job_id":"o1"}}`), ""},
		{"cancel without target", "mfa.jobs.cancel", []byte(`{"id":"c1","type":"cancel","params":{}}`), job.CodeMissingField},
		{"cancel with user", "mfa.jobs.cancel", []byte(`{"id":"c1","type":"cancel","user_id":5,"params":{"job_id":"o1"}}`), "*"},
		{"cancel scheduled", "mfa.jobs.cancel", []byte(`{"id":"c1","type":"cancel","not_before":"` + ts(now.Add(time.Hour)) + `","params":{"job_id":"o1"}}`), "*"},
		{"offboard without user", "mfa.jobs.offboard", []byte(`{"id":"o1","type":"offboard"}`), job.CodeMissingField},
	}
	for _, c := range cases {
		j, rej := p.Parse(c.subject, c.body)
		switch {
		case c.code == "" && rej != nil:
			t.Errorf("%s: rejected %s", c.name, rej)
		case c.code == "*" && rej == nil:
			t.Errorf("%s: accepted", c.name)
		case c.code != "" && c.code != "*" && (rej == nil || rej.Code != c.code):
			t.Errorf("%s: got %v, want %s", c.name, rej, c.code)
		}
		if c.name == "cancel" && j != nil && j.Params.JobID != "o1" {
			t.Errorf("cancel target %q", j.Params.JobID)
		}
		if c.name == "before not_after" && j != nil && !j.NotBefore.Equal(now.Add(time.Hour)) {
			t.Errorf("not_before %v", j.NotBefore)
		}
	}
	j := &job.Job{RequestedAt: now}
	stored := now.Add(time.Minute)
	if got := j.Time(stored); !got.Equal(now) {
		t.Errorf("job time with requested_at: %v", got)
	}
	j.NotBefore = now.Add(3 * time.Minute)
	if got := j.Time(stored); !got.Equal(now.Add(3 * time.Minute)) {
		t.Errorf("job time with not_before: %v", got)
	}
	if got := (&job.Job{}).Time(stored); !got.Equal(stored) {
		t.Errorf("job time without either: %v", got)
	}
	// Bounded: min(declared time, stored + 5 minutes).
	j.NotBefore = now.Add(time.Hour)
	if got := j.Time(stored); !got.Equal(stored.Add(job.MaxClockAhead)) {
		t.Errorf("job time with not_before an hour ahead: %v", got)
	}
	far := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := (&job.Job{RequestedAt: far}).Time(stored); !got.Equal(stored.Add(job.MaxClockAhead)) {
		t.Errorf("job time with requested_at 2099: %v", got)
	}
	if got := job.BoundTime(far, time.Time{}); !got.Equal(far) {
		t.Errorf("bound without a stored time: %v", got)
	}
}

// A cancel's scope is its subject's tokens after mfa.jobs.cancel; the
// bare subject has none; wildcards, empty tokens and other types' subjects
// with more tokens are not job subjects.
func TestCancelScopeFromSubject(t *testing.T) {
	p, err := job.NewParser(64*1024, false)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"c1","type":"cancel","params":{"job_id":"o1"}}`)
	for _, c := range []struct{ subject, scope, code string }{
		{"mfa.jobs.cancel", "", ""},
		{"mfa.jobs.cancel.hr.cloudevents", "hr.cloudevents", ""},
		{"mfa.jobs.cancel.ops", "ops", ""},
		{"mfa.jobs.cancel.hr..x", "", job.CodeUnknownSubject},
		{"mfa.jobs.cancel.*", "", job.CodeUnknownSubject},
		{"mfa.jobs.cancel.hr.>", "", job.CodeUnknownSubject},
		{"mfa.jobs.cancel.", "", job.CodeUnknownSubject},
		{"mfa.jobs.offboard.hr", "", job.CodeUnknownSubject},
	} {
		j, rej := p.Parse(c.subject, body)
		switch {
		case c.code != "" && (rej == nil || rej.Code != c.code):
			t.Errorf("%s: got %+v, want %s", c.subject, rej, c.code)
		case c.code == "" && rej != nil:
			t.Errorf("%s: rejected %+v", c.subject, rej)
		case c.code == "" && j.CancelScope != c.scope:
			t.Errorf("%s: scope %q, want %q", c.subject, j.CancelScope, c.scope)
		}
	}
	// A scoped subject is a cancel's only: another type on it mismatches.
	if _, rej := p.Parse("mfa.jobs.cancel.hr.x", []byte(`{"id":"o","type":"offboard","user_id":1}`)); rej == nil || rej.Code != job.CodeTypeMismatch {
		t.Errorf("offboard on a cancel subject: %+v", rej)
	}
	if got := job.CancelSubject("hr.scim"); got != "mfa.jobs.cancel.hr.scim" {
		t.Errorf("CancelSubject: %s", got)
	}
}

// correlation_id and source hold printable characters only.
func TestCorrelationAndSourcePrintable(t *testing.T) {
	p, err := job.NewParser(64*1024, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"correlation_id", "source"} {
		for _, v := range []string{`\u001b[2J`, `a\nb`, `\u202eevil`, `\u0085`} {
			body := []byte(`{"id":"o","type":"offboard","user_id":1,"` + f + `":"` + v + `"}`)
			_, rej := p.Parse("mfa.jobs.offboard", body)
			if rej == nil || rej.Code != job.CodeInvalidCharacters {
				t.Errorf("%s %s: %+v", f, v, rej)
				continue
			}
			if !strings.HasPrefix(rej.Message, f+":") || strings.Contains(rej.Message, "evil") {
				t.Errorf("%s: message %q", f, rej.Message)
			}
		}
		body := []byte(`{"id":"o","type":"offboard","user_id":1,"` + f + `":"hr.scim émoji ok"}`)
		if _, rej := p.Parse("mfa.jobs.offboard", body); rej != nil {
			t.Errorf("%s printable: %+v", f, rej)
		}
	}
}

func TestResultDataKeepsLargeIDs(t *testing.T) {
	j := &job.Job{ID: "e", Type: job.TypeEnroll, UserID: 1}
	r := j.Result(job.Succeeded, 1, time.Unix(0, 0), time.Unix(1, 0), nil, job.EnrollData{DeviceID: 1<<62 + 1, FactorID: 7, AuthFactorName: "SMS"})
	body := string(r.Marshal())
	if !strings.Contains(body, `"device_id":4611686018427387905`) || strings.Contains(body, "state_token") || !strings.Contains(body, `"needs_trigger":false`) {
		t.Errorf("result: %s", body)
	}
	off := (&job.Job{ID: "o", Type: job.TypeOffboard, UserID: 1}).Result(job.Noop, 1, time.Unix(0, 0), time.Unix(1, 0), nil, job.OffboardData{RemovedDeviceIDs: []int64{}})
	if !strings.Contains(string(off.Marshal()), `"removed_device_ids":[]`) {
		t.Errorf("offboard: %s", off.Marshal())
	}
	if none := j.Result(job.Failed, 1, time.Unix(0, 0), time.Unix(1, 0), &job.ErrorInfo{Code: job.CodeUserNotFound}, nil); none.Data != nil {
		t.Errorf("data without data: %v", none.Data)
	}
}

func TestJobsThatNameAPerson(t *testing.T) {
	p := newParser(t, false)
	j, rej := p.Parse("mfa.jobs.offboard", []byte(`{"id":"p1","type":"offboard","user":{"external_id":"E-7"}}`))
	if rej != nil {
		t.Fatal(rej)
	}
	if j.UserID != 0 || j.User == nil || j.User.Kind() != job.SelectorExternalID || j.User.ExternalID != "E-7" {
		t.Fatalf("job %+v, user %+v", j, j.User)
	}
	r := j.Result(job.Failed, 1, time.Unix(0, 0), time.Unix(1, 0), &job.ErrorInfo{Code: job.CodeUserNotFound, Message: "m"}, nil)
	if b := string(r.Marshal()); !strings.Contains(b, `"user":{"external_id":"E-7"}`) || !strings.Contains(b, `"user_id":0`) {
		t.Fatalf("result %s", b)
	}
	// Several identifiers: all kept, in the result as given.
	j, rej = p.Parse("mfa.jobs.offboard", []byte(`{"id":"p1b","type":"offboard","user":{"external_id":"00u1","email":"Ada@Example.com","username":"ada"}}`))
	if rej != nil {
		t.Fatal(rej)
	}
	if j.User.Kind() != "email,username,external_id" || j.User.Email != "Ada@Example.com" || j.User.Username != "ada" || j.User.ExternalID != "00u1" {
		t.Fatalf("user %+v, kind %q", j.User, j.User.Kind())
	}
	r = j.Result(job.Failed, 1, time.Unix(0, 0), time.Unix(1, 0), &job.ErrorInfo{Code: job.CodeIdentityAmbiguous, Message: "m"}, nil)
	if b := string(r.Marshal()); !strings.Contains(b, `"user":{"email":"Ada@Example.com","username":"ada","external_id":"00u1"}`) {
		t.Fatalf("result %s", b)
	}
	// A rejected job's result keeps the identifiers that could be read.
	_, rej = p.Parse("mfa.jobs.offboard", []byte(`{"id":"p1c","type":"offboard","user":{"email":"a@b.c","external_id":"x!"}}`))
	if rej == nil || rej.Code != job.CodeInvalidSelector || rej.User == nil || rej.User.Email != "a@b.c" || rej.User.ExternalID != "x!" {
		t.Fatalf("rejection %+v", rej)
	}
	for _, c := range []struct{ name, body, code, msg string }{
		{"both", `{"id":"p2","type":"offboard","user_id":1,"user":{"email":"a@b.c"}}`, job.CodeConflictingFields, "user_id or user, not both"},
		{"neither", `{"id":"p3","type":"offboard"}`, job.CodeMissingField, "user_id or user is required"},
		{"empty selector", `{"id":"p4","type":"offboard","user":{}}`, job.CodeMissingField, "at least one of email"},
		{"second identifier bad", `{"id":"p5","type":"offboard","user":{"email":"a@b.c","external_id":"x*"}}`, job.CodeInvalidSelector, "user.external_id"},
		{"unknown field", `{"id":"p6","type":"offboard","user":{"phone":"1"}}`, job.CodeUnknownField, "user"},
		{"empty value", `{"id":"p7","type":"offboard","user":{"email":""}}`, job.CodeInvalidLength, "user.email"},
		{"leading wildcard", `{"id":"p8","type":"offboard","user":{"email":"*@b.c"}}`, job.CodeInvalidSelector, "user.email"},
		{"leading negation", `{"id":"p9","type":"offboard","user":{"username":"!root"}}`, job.CodeInvalidSelector, "user.username"},
		{"inner wildcard", `{"id":"p13","type":"offboard","user":{"email":"a*b@b.c"}}`, job.CodeInvalidSelector, "operators"},
		{"inner negation", `{"id":"p14","type":"offboard","user":{"username":"a!b","external_id":"E-1"}}`, job.CodeInvalidSelector, "user.username"},
		{"control character", `{"id":"p10","type":"offboard","user":{"username":"a\u0007b"}}`, job.CodeInvalidCharacters, "control"},
		{"not an object", `{"id":"p11","type":"offboard","user":"a@b.c"}`, job.CodeWrongType, "user"},
		{"missing param named", `{"id":"p12","type":"remove","user_id":1,"params":{}}`, job.CodeMissingField, "params.device_id is required"},
	} {
		typ := strings.Split(strings.Split(c.body, `"type":"`)[1], `"`)[0]
		_, rej := p.Parse("mfa.jobs."+typ, []byte(c.body))
		if rej == nil || rej.Code != c.code || !strings.Contains(rej.Message, c.msg) {
			t.Errorf("%s: %+v; want %s naming %q", c.name, rej, c.code, c.msg)
		}
		if rej != nil && strings.Contains(rej.Message, "a@b.c") {
			t.Errorf("%s: the message echoes the selector's value: %s", c.name, rej.Message)
		}
	}
}
