package rules

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestExamplesGolden runs the documented example rules over the committed
// sample of events, as `worker rules test` does, and compares the jobs with
// the golden file.
func TestExamplesGolden(t *testing.T) {
	s, err := Load(filepath.Join("testdata", "examples.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(filepath.Join("testdata", "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out, errw bytes.Buffer
	n, err := Preview(s, in, &out, &errw)
	if err != nil || n != 0 {
		t.Fatalf("Preview: %d problems, %v: %s", n, err, errw.String())
	}
	golden := filepath.Join("testdata", "examples.golden.jsonl")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("jobs differ from %s (run with -update after checking):\n got:\n%s\nwant:\n%s", golden, out.Bytes(), want)
	}
	// Every job the examples make is a valid job of the contract.
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var j map[string]any
		if err := json.Unmarshal([]byte(line), &j); err != nil {
			t.Fatal(err)
		}
		_, uid := j["user_id"]
		_, u := j["user"]
		if j["type"] == "cancel" {
			if u || uid {
				t.Errorf("cancel names a user: %s", line)
			}
		} else if u == uid {
			t.Errorf("job must have exactly one of user and user_id: %s", line)
		}
		if len(j["id"].(string)) > 128 {
			t.Errorf("job id longer than 128: %s", line)
		}
	}
}

func TestBuiltinRules(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		ev   Event
		want []Job // nil: ignored
		err  string
	}{
		{"cloudevents leaver by user_id", Event{Source: "cloudevents", ID: "e1", Type: "io.mfaworker.person.left", Time: at,
			Data: map[string]any{"user_id": float64(42)}},
			[]Job{{ID: "hr:cloudevents:e1:person-left", Type: "offboard", UserID: 42, Source: "hr.cloudevents", RequestedAt: "2026-11-26T10:00:00Z"}}, ""},
		{"cloudevents leaver by email, effective", Event{Source: "cloudevents", ID: "e2", Type: "io.mfaworker.person.left", Time: at,
			Data: map[string]any{"email": "ada@example.com", "effective_at": "2026-11-28T17:00:00+01:00"}},
			[]Job{{ID: "hr:cloudevents:e2:person-left", Type: "offboard", User: &Person{Email: "ada@example.com"}, Source: "hr.cloudevents",
				RequestedAt: "2026-11-26T10:00:00Z", NotBefore: "2026-11-28T16:00:00Z"}}, ""},
		{"cloudevents leaver by username", Event{Source: "cloudevents", ID: "e3", Type: "io.mfaworker.person.left", Time: at,
			Data: map[string]any{"username": "ada"}},
			[]Job{{ID: "hr:cloudevents:e3:person-left", Type: "offboard", User: &Person{Username: "ada"}, Source: "hr.cloudevents", RequestedAt: "2026-11-26T10:00:00Z"}}, ""},
		{"cloudevents leaver naming nobody", Event{Source: "cloudevents", ID: "e4", Type: "io.mfaworker.person.left", Time: at}, nil, "exactly one of user and user_id"},
		{"cloudevents leaver naming two (contract 1.2: several identifiers)", Event{Source: "cloudevents", ID: "e5", Type: "io.mfaworker.person.left", Time: at,
			Data: map[string]any{"email": "a@example.com", "username": "a"}},
			[]Job{{ID: "hr:cloudevents:e5:person-left", Type: "offboard", User: &Person{Email: "a@example.com", Username: "a"}, Source: "hr.cloudevents", RequestedAt: "2026-11-26T10:00:00Z"}}, ""},
		{"cloudevents leaver with a fractional user_id", Event{Source: "cloudevents", ID: "e6", Type: "io.mfaworker.person.left", Time: at,
			Data: map[string]any{"user_id": 4.5}}, nil, "positive integer"},
		{"cloudevents leaver with a bad date", Event{Source: "cloudevents", ID: "e7", Type: "io.mfaworker.person.left", Time: at,
			Data: map[string]any{"user_id": float64(1), "effective_at": "next friday"}}, nil, "not a date"},
		{"cloudevents other type", Event{Source: "cloudevents", ID: "e8", Type: "io.mfaworker.person.joined", Time: at,
			Data: map[string]any{"user_id": float64(1)}}, nil, ""},
		{"scim deactivation", Event{Source: "scim", ID: "s1", Type: "user.deactivated", Time: at,
			Data: map[string]any{"userName": "ada@example.com", "externalId": "E-1"}},
			[]Job{{ID: "hr:scim:s1:scim-deactivated", Type: "offboard", User: &Person{Email: "ada@example.com", ExternalID: "E-1"}, Source: "hr.scim", RequestedAt: "2026-11-26T10:00:00Z"}}, ""},
		{"scim delete without externalId", Event{Source: "scim", ID: "s2", Type: "user.deleted", Time: at,
			Data: map[string]any{"userName": "ada@example.com"}},
			[]Job{{ID: "hr:scim:s2:scim-deactivated", Type: "offboard", User: &Person{Email: "ada@example.com"}, Source: "hr.scim", RequestedAt: "2026-11-26T10:00:00Z"}}, ""},
		// employee.inactivated is also a leave: it offboards only when
		// INGEST_HIBOB_OFFBOARD_INACTIVATED says so (TestBuiltinHiBobOptIn).
		{"hibob inactivated", Event{Source: "hibob", ID: "h1", Type: "employee.inactivated", Time: at,
			Data: map[string]any{"employeeId": "77"}}, nil, ""},
		{"hibob left", Event{Source: "hibob", ID: "h4", Type: "employee.left", Time: at,
			Data: map[string]any{"employeeId": "77"}},
			[]Job{{ID: "hr:hibob:h4:hibob-left", Type: "offboard", User: &Person{ExternalID: "77"}, Source: "hr.hibob", RequestedAt: "2026-11-26T10:00:00Z"}}, ""},
		{"scim userName without @", Event{Source: "scim", ID: "s3", Type: "user.deactivated", Time: at,
			Data: map[string]any{"userName": "ada", "externalId": "00u1"}},
			[]Job{{ID: "hr:scim:s3:scim-deactivated", Type: "offboard", User: &Person{Username: "ada", ExternalID: "00u1"}, Source: "hr.scim", RequestedAt: "2026-11-26T10:00:00Z"}}, ""},
		{"hibob employee id as a number", Event{Source: "hibob", ID: "h2", Type: "employee.left", Time: at,
			Data: map[string]any{"employeeId": float64(77)}}, nil, "must be a string"},
		{"hibob without data", Event{Source: "hibob", ID: "h3", Type: "employee.left", Time: at}, nil, "employeeId"},
		{"bamboohr: nobody", Event{Source: "bamboohr", ID: "b1", Time: at, Data: map[string]any{"employees": []any{}, "people": []any{}}}, nil, ""},
		{"bamboohr: a leaver at the end of the termination date", Event{Source: "bamboohr", ID: "b2", Time: at, Data: map[string]any{"people": []any{
			bambooPerson("41", true, "2026-12-04")}}},
			[]Job{{ID: "hr:bamboohr:b2:bamboohr-left", Type: "offboard", User: &Person{ExternalID: "41"}, Source: "hr.bamboohr",
				RequestedAt: "2026-11-26T10:00:00Z", NotBefore: "2026-12-05T00:00:00Z"}}, ""},
		{"bamboohr: a leaver now, one who stays", Event{Source: "bamboohr", ID: "b3", Time: at, Data: map[string]any{"people": []any{
			bambooPerson("40", false, ""), bambooPerson("41", true, "")}}},
			[]Job{{ID: "hr:bamboohr:b3:bamboohr-left-2", Type: "offboard", User: &Person{ExternalID: "41"}, Source: "hr.bamboohr",
				RequestedAt: "2026-11-26T10:00:00Z"}}, ""},
		{"bamboohr: a leaver in a batch of 11", Event{Source: "bamboohr", ID: "b4", Time: at, Data: map[string]any{"people": append(
			slices.Repeat([]any{bambooPerson("40", false, "")}, 10), bambooPerson("41", true, ""))}}, nil, "more than 10 employees"},
	}
	s := Builtin()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			jobs, errs := s.Apply(c.ev)
			if c.err != "" {
				if len(errs) != 1 || !strings.Contains(errs[0].Error(), c.err) {
					t.Fatalf("errors %v, want one containing %q", errs, c.err)
				}
				if len(jobs) != 0 {
					t.Errorf("jobs %v despite the error", jobs)
				}
				return
			}
			if len(errs) != 0 {
				t.Fatalf("errors: %v", errs)
			}
			if !reflect.DeepEqual(jobs, c.want) {
				t.Errorf("jobs\n got %+v\nwant %+v", jobs, c.want)
			}
		})
	}
}

// bambooPerson is one entry of the view the receiver gives BambooHR events
// (event.data.people).
func bambooPerson(id string, leaver bool, effective string) map[string]any {
	return map[string]any{"id": id, "employmentStatus": "", "status": "", "terminationDate": effective,
		"employeeNumber": "", "workEmail": "", "leaver": leaver, "effective": effective}
}

// TestBuiltinHiBobOptIn: with INGEST_HIBOB_OFFBOARD_INACTIVATED,
// employee.inactivated offboards as employee.left does.
func TestBuiltinHiBobOptIn(t *testing.T) {
	s := Builtin().With(Times{}, Settings{HiBobOffboardInactivated: true})
	jobs, errs := s.Apply(Event{Source: "hibob", ID: "h1", Type: "employee.inactivated", Time: time.Now(),
		Data: map[string]any{"employeeId": "77"}})
	if len(errs) != 0 || len(jobs) != 1 || jobs[0].User == nil || jobs[0].User.ExternalID != "77" {
		t.Fatalf("jobs %+v, errors %v", jobs, errs)
	}
}

// TestCompileErrors: a rule that cannot be used stops loading with one line
// naming the file, the line and the rule.
func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want string
	}{
		{"undeclared", "rules:\n  - name: r1\n    when: evnt.type == \"x\"\n    job:\n      type: '\"offboard\"'\n      user_id: '1'\n",
			`f.yaml:3: rule "r1": when: undeclared reference to 'evnt'`},
		{"unquoted string", "rules:\n  - name: r2\n    when: 'true'\n    job:\n      type: offboard\n",
			`f.yaml:5: rule "r2": job.type: undeclared reference to 'offboard'`},
		{"when not bool", "rules:\n  - name: r3\n    when: '\"yes\"'\n    job:\n      type: '\"offboard\"'\n",
			`f.yaml:3: rule "r3": when: has type string, want bool`},
		{"type not a string", "rules:\n  - name: r4\n    when: 'true'\n    job:\n      type: '42'\n",
			`f.yaml:5: rule "r4": job.type: has type int, want string or null`},
		{"user_id a string", "rules:\n  - name: r5\n    when: 'true'\n    job:\n      type: '\"offboard\"'\n      user_id: '\"42\"'\n",
			`f.yaml:6: rule "r5": job.user_id: has type string`},
		{"syntax", "rules:\n  - name: r6\n    when: 'event.type =='\n    job:\n      type: '\"offboard\"'\n",
			`f.yaml:3: rule "r6": when: Syntax error`},
		{"unknown field", "rules:\n  - name: r7\n    when: 'true'\n    job:\n      type: '\"offboard\"'\n      users: '1'\n",
			`f.yaml:6: rule "r7": unknown job field "users"`},
		{"no type", "rules:\n  - name: r8\n    when: 'true'\n    job:\n      user_id: '1'\n",
			`f.yaml:5: rule "r8": job.type is required`},
		{"bad name", "rules:\n  - name: 'a b'\n    when: 'true'\n    job:\n      type: '\"offboard\"'\n",
			`f.yaml:2: rule "a b": name must be`},
		{"duplicate name", "rules:\n  - name: a\n    when: 'true'\n    job:\n      type: '\"offboard\"'\n  - name: a\n    when: 'true'\n    job:\n      type: '\"offboard\"'\n",
			`f.yaml:6: rule "a": name already used by the rule at line 2`},
		{"not YAML", "rules: [", `f.yaml: not valid YAML`},
		{"no rules", "rules: []\n", `f.yaml:1: no rules`},
		{"unknown top key", "rulez: []\n", `f.yaml:1: unknown key "rulez"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "f.yaml")
			if err == nil {
				t.Fatal("compiled")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, c.want) && !strings.Contains(msg, c.want) {
				t.Errorf("error %q, want it to contain %q", msg, c.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
		})
	}
}

// TestCostLimit: an expression that would do too much work fails as a rule
// error instead of stalling the mapper.
func TestCostLimit(t *testing.T) {
	s, err := Parse([]byte(`
rules:
  - name: expensive
    when: 'event.data.xs.all(a, a + 1.0 >= 0.0 && a * 2.0 >= 0.0)'
    job:
      type: '"offboard"'
      user_id: '1'
`), "f")
	if err != nil {
		t.Fatal(err)
	}
	xs := make([]any, 100_000)
	for i := range xs {
		xs[i] = float64(i)
	}
	start := time.Now()
	jobs, errs := s.Apply(Event{Source: "cloudevents", ID: "x", Data: map[string]any{"xs": xs}})
	if len(jobs) != 0 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "cost limit") {
		t.Fatalf("jobs %v errors %v", jobs, errs)
	}
	t.Logf("stopped after %v", time.Since(start))
}

// TestFail: fail() makes a rule error with its message.
func TestFail(t *testing.T) {
	s, err := Parse([]byte("rules:\n  - name: stop\n    when: 'true'\n    job:\n      type: 'fail(\"look at this one\")'\n"), "f")
	if err != nil {
		t.Fatal(err)
	}
	_, errs := s.Apply(Event{Source: "hibob", ID: "x"})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `rule "stop"`) || !strings.Contains(errs[0].Error(), "look at this one") {
		t.Fatalf("errors %v", errs)
	}
}

// TestPreviewReportsErrors: bad lines and rule errors are counted and
// named by line.
func TestPreviewReportsErrors(t *testing.T) {
	in := strings.NewReader(`{"source":"hibob","id":"h1","type":"employee.left","time":"2026-11-26T10:00:00Z","data":{"employeeId":"7"}}
{"source":"hibob","id":"h2","type":"employee.left","time":"2026-11-26T10:00:00Z","data":{}}
not json
{"source":"hibob"}
`)
	var out, errw bytes.Buffer
	n, err := Preview(Builtin(), in, &out, &errw)
	if err != nil || n != 3 {
		t.Fatalf("problems %d, err %v: %s", n, err, errw.String())
	}
	if strings.Count(out.String(), "\n") != 1 || !strings.Contains(out.String(), `"hr:hibob:h1:hibob-left"`) {
		t.Errorf("jobs: %s", out.String())
	}
	for _, want := range []string{`line 2: event hibob:h2: rule "hibob-left"`, "line 3: not an event", "line 4: an event needs source and id"} {
		if !strings.Contains(errw.String(), want) {
			t.Errorf("errors lack %q: %s", want, errw.String())
		}
	}
}

func TestCloudEventID(t *testing.T) {
	a := CloudEventID("https://hr.example.com", "1")
	if len(a) != 64 || a == CloudEventID("https://hr.example.com", "2") || a == CloudEventID("https://hr.example.co", "m1") {
		t.Errorf("CloudEventID %s", a)
	}
}

// An HR source's cancels go on its own scope, mfa.jobs.cancel.hr.<source>,
// which may end only that source's jobs; other jobs on mfa.jobs.<type>.
func TestCancelSubjectIsTheSourceScope(t *testing.T) {
	for _, c := range []struct {
		j    Job
		want string
	}{
		{Job{Type: "cancel", Source: "hr.cloudevents"}, "mfa.jobs.cancel.hr.cloudevents"},
		{Job{Type: "cancel", Source: "hr.scim"}, "mfa.jobs.cancel.hr.scim"},
		{Job{Type: "offboard", Source: "hr.scim"}, "mfa.jobs.offboard"},
	} {
		if got := c.j.Subject(); got != c.want {
			t.Errorf("%s from %s: subject %s, want %s", c.j.Type, c.j.Source, got, c.want)
		}
	}
}
