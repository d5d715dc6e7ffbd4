package ingest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mfa-worker/mfa-worker/internal/bamboohr"
)

// TestBambooHRPeople: the four documented shapes read into one view.
func TestBambooHRPeople(t *testing.T) {
	person := func(id, emp, status, term, num, mail string, leaver bool, eff string) map[string]any {
		return map[string]any{"id": id, "employmentStatus": emp, "status": status, "terminationDate": term,
			"employeeNumber": num, "workEmail": mail, "leaver": leaver, "effective": eff}
	}
	api, _ := json.Marshal(bamboohr.Employee{ID: "7", Status: "Inactive"})
	for _, c := range []struct {
		name string
		body string
		h    nats.Header
		want []any
	}{
		{"English names, plain values",
			`{"employees":[{"id":"1","fields":{"Employment Status":"Terminated","Employment Status: Date":"2026-12-04","Employee #":"E1","Work Email":"a@x.example"}}]}`, nil,
			[]any{person("1", "Terminated", "", "", "E1", "a@x.example", true, "2026-12-04")}},
		{"aliases, a termination date without status",
			`{"employees":[{"id":"2","fields":{"terminationDate":"2026-12-05"}},{"id":"3","fields":{"firstName":"C"}}]}`, nil,
			[]any{person("2", "", "", "2026-12-05", "", "", true, "2026-12-05"), person("3", "", "", "", "", "", false, "")}},
		{"value objects, numeric id, alias map",
			`{"employees":[{"id":4,"fields":{"st":{"value":"Terminated"},"end":{"value":"0000-00-00"}}}],"fields":{"st":"Employment Status","end":"Termination Date"}}`, nil,
			[]any{person("4", "Terminated", "", "", "", "", true, "")}},
		{"an active status is no leaver",
			`{"employees":[{"id":"5","fields":{"Status":"Active","Employment Status":"Full-Time"}}]}`, nil,
			[]any{person("5", "Full-Time", "Active", "", "", "", false, "")}},
		{"event-based, completed by the API",
			`{"type":"employee.updated","data":{"employeeId":"7","changedFields":["status"]}}`, nats.Header{HeaderBambooHREmployee: {string(api)}},
			[]any{person("7", "", "Inactive", "", "", "", true, "")}},
		{"event-based, the API's answer for another employee ignored",
			`{"type":"employee.updated","data":{"employeeId":"8"}}`, nats.Header{HeaderBambooHREmployee: {string(api)}},
			[]any{person("8", "", "", "", "", "", false, "")}},
		{"no employees", `{"foo":1}`, nil, []any{}},
	} {
		var m map[string]any
		if err := json.Unmarshal([]byte(c.body), &m); err != nil {
			t.Fatal(err)
		}
		bambooHRPeople(c.h, m)
		if !reflect.DeepEqual(m["people"], c.want) {
			t.Errorf("%s:\n got %v\nwant %v", c.name, m["people"], c.want)
		}
	}
}

// TestBambooHRDoor: an event-based webhook is completed from BambooHR's API
// before it is answered; what the API cannot give now is a 503 (BambooHR
// retries), what it can never give a 422; nothing is stored either way.
func TestBambooHRDoor(t *testing.T) {
	sim := bamboohr.NewSimulator("k")
	sim.Put(bamboohr.Employee{ID: "7", Status: "Inactive", TerminationDate: "2026-12-04"})
	hs := httptest.NewServer(sim)
	defer hs.Close()
	e := newEnv(t, func(c *Config) { c.Secrets.BambooHRAPIKey = []byte("k"); c.BambooHRBaseURL = hs.URL })
	noAPI := newEnv(t)
	body := func(id string) []byte {
		return []byte(`{"type":"employee.updated","timestamp":"2026-12-04T10:00:00+0000","data":{"companyId":"1","employeeId":"` + id + `"}}`)
	}
	send := func(e *env, b []byte) int {
		code, _ := e.post("/hooks/bamboohr", signBamboo(b, time.Now(), bambooKey), b)
		return code
	}
	sim.Fail(http.StatusServiceUnavailable, http.StatusTooManyRequests)
	for i := range 2 {
		if code := send(e, body("7")); code != http.StatusServiceUnavailable {
			t.Errorf("API failing (%d): %d, want 503", i, code)
		}
	}
	code, answer := e.post("/hooks/bamboohr", signBamboo(body("99"), time.Now(), bambooKey), body("99"))
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(answer), `"field":"data.employeeId"`) {
		t.Errorf("unknown employee: %d %s, want a 422 problem naming data.employeeId", code, answer)
	}
	if code := send(noAPI, body("7")); code != http.StatusUnprocessableEntity {
		t.Errorf("no API configured: %d, want 422", code)
	}
	if e.storedEvents() != 0 || noAPI.storedEvents() != 0 {
		t.Fatal("a refused event was stored")
	}
	if code := send(e, body("7")); code != http.StatusOK {
		t.Fatalf("API answering: %d", code)
	}
	stored := e.msgs(StreamEvents)
	var got bamboohr.Employee
	if len(stored) != 1 || json.Unmarshal([]byte(stored[0].Header.Get(HeaderBambooHREmployee)), &got) != nil ||
		got != (bamboohr.Employee{ID: "7", Status: "Inactive", TerminationDate: "2026-12-04"}) {
		t.Errorf("stored %d events, API answer %+v", len(stored), got)
	}
}

// TestBambooHRTimestamp: X-BambooHR-Timestamp in Unix seconds and ISO 8601
// with either offset form.
func TestBambooHRTimestamp(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for _, ts := range []string{"1796378400", "2026-12-04T10:00:00Z", "2026-12-04T10:00:00+00:00", "2026-12-04T10:00:00+0000",
		"2026-12-04T11:00:00+0100", "2026-12-04T10:00:00.123+0000"} {
		if err := checkTimestamp(ts, now); err != nil {
			t.Errorf("%s: %v", ts, err)
		}
	}
	for _, ts := range []string{"2026-12-04T10:10:00+0000", "2026-12-04 10:00", "yesterday"} {
		if err := checkTimestamp(ts, now); err == nil {
			t.Errorf("%s accepted", ts)
		}
	}
}
