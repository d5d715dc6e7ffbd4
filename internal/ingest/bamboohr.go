package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mfa-worker/mfa-worker/internal/bamboohr"
)

// HeaderBambooHREmployee holds, on a stored event-based BambooHR webhook,
// what BambooHR's API said of the employee when the event was received
// (JSON: id, status, terminationDate). It is read once, at the door, so
// that mapping the event again later makes the same job.
const HeaderBambooHREmployee = "Hr-Bamboohr-Employee"

// BambooHR's webhooks come in four documented shapes:
//
//   - field-based (global, made in BambooHR's settings), fields under
//     BambooHR's English names ("Employment Status": "Terminated");
//   - the same with aliased names ("employmentHistoryStatus": ...);
//   - field-based made through the API (permissioned), each value an object
//     {"value": ...}, with a top-level "fields" map from alias to name;
//   - event-based ({"type": "employee.updated", "data": {"employeeId": ...}}),
//     which carries no values: status and termination date come from the
//     API (bambooHREmployee).
//
// bambooHRPeople reads all four the same way into event.data.people, a list
// with one entry per employee of the payload: id (BambooHR's employee id),
// employmentStatus, status, terminationDate, employeeNumber, workEmail (each
// "" when not sent), leaver (a termination: employment status Terminated,
// status Inactive or a termination date) and effective (the termination
// date, else the date of a Terminated employment status, else "").

// bambooHRNames maps the field names BambooHR uses (English names and API
// aliases, compared without regard to case) to the view's keys.
var bambooHRNames = map[string]string{
	"employment status":           "employmentStatus",
	"employmenthistorystatus":     "employmentStatus",
	"employmentstatus":            "employmentStatus",
	"status":                      "status",
	"termination date":            "terminationDate",
	"terminationdate":             "terminationDate",
	"employment status: date":     "statusDate",
	"employmenthistorystatusdate": "statusDate",
	"employmentstatusdate":        "statusDate",
	"employee #":                  "employeeNumber",
	"employeenumber":              "employeeNumber",
	"work email":                  "workEmail",
	"workemail":                   "workEmail",
}

// bambooHRPeople adds event.data.people to a decoded BambooHR body m; h
// are the stored event's headers (the API's answer, for event-based ones).
func bambooHRPeople(h nats.Header, m map[string]any) {
	if m == nil {
		return // a JSON null: no employees, nothing to add to
	}
	var people []any
	if emps, ok := m["employees"].([]any); ok {
		aliases, _ := m["fields"].(map[string]any)
		for _, e := range emps {
			em, ok := e.(map[string]any)
			if !ok {
				continue
			}
			p := map[string]string{"id": scalar(em["id"])}
			fields, _ := em["fields"].(map[string]any)
			for k, v := range fields {
				name, ok := bambooHRNames[strings.ToLower(strings.TrimSpace(k))]
				if !ok {
					// A permissioned webhook names each alias's field.
					if n, isStr := aliases[k].(string); isStr {
						name, ok = bambooHRNames[strings.ToLower(n)]
					}
				}
				if !ok {
					continue
				}
				if vm, isObj := v.(map[string]any); isObj {
					v = vm["value"]
				}
				p[name] = scalar(v)
			}
			people = append(people, personView(p))
		}
	} else if d, ok := m["data"].(map[string]any); ok {
		p := map[string]string{"id": scalar(d["employeeId"])}
		var api bamboohr.Employee
		if err := json.Unmarshal([]byte(h.Get(HeaderBambooHREmployee)), &api); err == nil && api.ID == p["id"] {
			p["status"], p["terminationDate"] = api.Status, api.TerminationDate
		}
		people = append(people, personView(p))
	}
	if people == nil {
		people = []any{}
	}
	m["people"] = people
}

// scalar is a JSON scalar as a string ("" for null, objects and lists).
func scalar(v any) string {
	switch x := v.(type) {
	case string:
		return strings.TrimSpace(x)
	case float64:
		b, _ := json.Marshal(x)
		return string(b)
	case json.Number:
		return x.String()
	case bool:
		if x {
			return "true"
		}
		return "false"
	}
	return ""
}

func personView(p map[string]string) map[string]any {
	out := map[string]any{}
	for _, k := range []string{"id", "employmentStatus", "status", "terminationDate", "employeeNumber", "workEmail"} {
		out[k] = p[k]
	}
	term := p["terminationDate"]
	if term == "0000-00-00" {
		term = ""
		out["terminationDate"] = ""
	}
	terminated := strings.EqualFold(p["employmentStatus"], "Terminated")
	out["leaver"] = terminated || strings.EqualFold(p["status"], "Inactive") || term != ""
	eff := term
	if eff == "" && terminated && p["statusDate"] != "0000-00-00" {
		eff = p["statusDate"]
	}
	out["effective"] = eff
	return out
}

// bambooHRLookup is the door's part for BambooHR: an event-based
// employee.updated webhook gets the employee's status and termination date
// from BambooHR's API before the rules decide and it is stored, as a header
// of the stored event. An answer the API cannot give now (unreachable, 429,
// 5xx, our key refused) is a 503: the sender retries. An event the API can
// never complete (no API configured, an employee BambooHR does not know) is
// a 422 problem naming the field, and nothing is stored. answered reports
// that the sender has been answered.
func (s *Server) bambooHRLookup(ctx context.Context, w http.ResponseWriter, body []byte) (h nats.Header, answered bool) {
	var ev struct {
		Type string `json:"type"`
		Data *struct {
			EmployeeID json.RawMessage `json:"employeeId"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &ev) != nil || ev.Data == nil || ev.Type != "employee.updated" {
		return nil, false
	}
	refuse := func(detail string) (nats.Header, bool) {
		writeProblem(w, &Refusal{Status: http.StatusUnprocessableEntity, Title: "BambooHR's API cannot complete this event",
			Detail: detail, Field: "data.employeeId"})
		return nil, true
	}
	var id string
	if err := json.Unmarshal(ev.Data.EmployeeID, &id); err != nil {
		var n json.Number
		if err := json.Unmarshal(ev.Data.EmployeeID, &n); err != nil {
			return refuse("data.employeeId must be an employee id")
		}
		id = n.String()
	}
	if s.bamboo == nil {
		return refuse("an event-based BambooHR webhook needs BambooHR's API: set INGEST_BAMBOOHR_SUBDOMAIN and INGEST_BAMBOOHR_API_KEY_FILE")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	emp, err := s.bamboo.Employee(ctx, id)
	switch {
	case errors.Is(err, bamboohr.ErrNotFound), errors.Is(err, bamboohr.ErrBadID):
		return refuse("data.employeeId: " + err.Error())
	case err != nil:
		s.log.Warn("BambooHR API cannot be read; the sender will retry", "err", err)
		w.Header().Set("Retry-After", "30")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "BambooHR's API cannot be read now; retry"})
		return nil, true
	}
	b, _ := json.Marshal(emp)
	return nats.Header{HeaderBambooHREmployee: {string(b)}}, false
}
