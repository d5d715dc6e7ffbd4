package rules

import (
	"strings"
	"testing"
	"time"
)

// TestSpliceDoesNotLoad: a rule that splices event data into replace() can
// build a string of gigabytes from a body of megabytes; it does not load.
func TestSpliceDoesNotLoad(t *testing.T) {
	_, err := Parse([]byte(`
rules:
  - name: splice
    when: 'true'
    job:
      type: '"offboard"'
      user: '{"email": event.data.a.replace("x", event.data.a)}'
`), "f")
	if err == nil || !strings.Contains(err.Error(), `rule "splice"`) || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("err = %v, want the rule refused for its cost", err)
	}
}

// TestLongStringRefused: a string over 4 KiB is never handed to a rule; the
// error names the field, not the value.
func TestLongStringRefused(t *testing.T) {
	s := Builtin()
	long := strings.Repeat("7", 300<<10)
	jobs, errs := s.Apply(Event{Source: "cloudevents", ID: "x", Type: "io.mfaworker.person.left",
		Data: map[string]any{"email": "a@example.com", "notes": long}})
	if len(jobs) != 0 || len(errs) != 1 {
		t.Fatalf("jobs %v errs %v", jobs, errs)
	}
	if errs[0].Field != "event.data.notes" || strings.Contains(errs[0].Error(), "777") {
		t.Fatalf("error %q field %q", errs[0].Error(), errs[0].Field)
	}
}

// TestErrorsNameNoValue: a rule error on a value (a phone number that is
// not an int) names the rule and the field, never the value.
func TestErrorsNameNoValue(t *testing.T) {
	s, err := Parse([]byte(`
rules:
  - name: phone
    when: 'true'
    job:
      type: '"offboard"'
      user_id: 'int(event.data.phone)'
`), "f")
	if err != nil {
		t.Fatal(err)
	}
	_, errs := s.Apply(Event{Source: "hibob", ID: "x", Data: map[string]any{"phone": "+1 555 0100"}})
	if len(errs) != 1 {
		t.Fatalf("errs %v", errs)
	}
	msg := errs[0].Error()
	if strings.Contains(msg, "555") || !strings.Contains(msg, "job.user_id") || !strings.Contains(msg, `rule "phone"`) {
		t.Fatalf("error %q", msg)
	}
}

// TestJobModelAtTheDoor: a job the worker would reject is a rule error
// naming the rule, the field and the job model's code.
func TestJobModelAtTheDoor(t *testing.T) {
	s := Builtin()
	far := time.Now().AddDate(2, 0, 0).UTC().Format(time.RFC3339)
	cases := []struct {
		name string
		data map[string]any
		code string
	}{
		{"not_before past 366 days", map[string]any{"email": "a@example.com", "effective_at": far}, "out_of_range"},
		{"string user_id", map[string]any{"user_id": "42"}, ""},
		{"user with a wildcard", map[string]any{"email": "*@example.com"}, "invalid_selector"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			jobs, errs := s.Apply(Event{Source: "cloudevents", ID: "x", Type: "io.mfaworker.person.left", Data: c.data})
			if len(jobs) != 0 || len(errs) != 1 {
				t.Fatalf("jobs %v errs %v", jobs, errs)
			}
			e := errs[0]
			if e.Rule != "person-left" || e.Code != c.code {
				t.Fatalf("rule %q code %q: %v", e.Rule, e.Code, e)
			}
			if strings.Contains(e.Error(), "example.com") || strings.Contains(e.Error(), far) {
				t.Fatalf("error holds a value: %v", e)
			}
		})
	}
}

// TestHRTimes: dates, zone-less date-times and both offset forms.
func TestHRTimes(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in    string
		times Times
		want  string
	}{
		{"2026-12-04", Times{}, "2026-12-05T00:00:00Z"},
		{"2026-12-04", Times{DateStart: true}, "2026-12-04T00:00:00Z"},
		{"2026-12-04", Times{Zone: berlin}, "2026-12-04T23:00:00Z"},
		{"2026-12-04T10:00:00", Times{Zone: berlin}, "2026-12-04T09:00:00Z"},
		{"2026-12-04T10:00:00+0000", Times{}, "2026-12-04T10:00:00Z"},
		{"2026-12-04T10:00:00+00:00", Times{}, "2026-12-04T10:00:00Z"},
		{"2026-12-04T10:00:00.250Z", Times{}, "2026-12-04T10:00:00.25Z"},
		{"2026-12-04 10:00:00", Times{}, "2026-12-04T10:00:00Z"},
	}
	for _, c := range cases {
		got, err := c.times.ParseTime(c.in)
		if err != nil || got.UTC().Format(time.RFC3339Nano) != c.want {
			t.Errorf("%q: %v %v, want %s", c.in, got.UTC(), err, c.want)
		}
	}
	for _, bad := range []string{"", "next friday", "2026-13-01", "04/12/2026", "2026-12-04T25:00"} {
		if _, err := ParseTime(bad); err == nil || strings.Contains(err.Error(), bad) && bad != "" {
			t.Errorf("%q: err %v", bad, err)
		}
	}
	// A leaver event with a date alone offboards at the end of that day.
	s := Builtin().With(Times{Zone: berlin}, Settings{})
	day := time.Now().AddDate(0, 0, 3).Format("2006-01-02")
	jobs, errs := s.Apply(Event{Source: "cloudevents", ID: "x", Type: "io.mfaworker.person.left",
		Data: map[string]any{"email": "a@example.com", "effective_at": day}})
	if len(errs) != 0 || len(jobs) != 1 {
		t.Fatalf("jobs %v errs %v", jobs, errs)
	}
	d, _ := time.ParseInLocation("2006-01-02", day, berlin)
	if want := d.AddDate(0, 0, 1).UTC().Format(time.RFC3339Nano); jobs[0].NotBefore != want {
		t.Fatalf("not_before %s, want %s", jobs[0].NotBefore, want)
	}
}

// TestSettingsVariable: rules read the receiver's settings.
func TestSettingsVariable(t *testing.T) {
	src := []byte(`
rules:
  - name: opt-in
    when: 'settings.hibob_offboard_inactivated && event.type == "employee.inactivated"'
    job:
      type: '"offboard"'
      user: '{"external_id": event.data.employeeId}'
`)
	s, err := Parse(src, "f")
	if err != nil {
		t.Fatal(err)
	}
	ev := Event{Source: "hibob", ID: "x", Type: "employee.inactivated", Data: map[string]any{"employeeId": "e1"}}
	if jobs, errs := s.Apply(ev); len(jobs) != 0 || len(errs) != 0 {
		t.Fatalf("off: jobs %v errs %v", jobs, errs)
	}
	if jobs, errs := s.With(Times{}, Settings{HiBobOffboardInactivated: true}).Apply(ev); len(jobs) != 1 || len(errs) != 0 {
		t.Fatalf("on: jobs %v errs %v", jobs, errs)
	}
}

// TestFailTakesALiteral: fail() with event data in its message does not
// load; with a literal it does.
func TestFailTakesALiteral(t *testing.T) {
	rule := func(msg string) string {
		return "rules:\n  - name: stop\n    when: 'true'\n    job:\n      type: 'fail(" + msg + ")'\n"
	}
	if _, err := Parse([]byte(rule(`"bad phone " + event.data.phone`)), "f"); err == nil || !strings.Contains(err.Error(), "string literal") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Parse([]byte(rule(`"look at this one"`)), "f"); err != nil {
		t.Fatal(err)
	}
}
