package ingest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func (e *env) scim(method, path string, body string) (int, map[string]any) {
	e.t.Helper()
	code, b := e.do(method, path, scimHeaders(), strings.NewReader(body))
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			e.t.Fatalf("%s %s: answer not JSON: %s", method, path, b)
		}
	}
	return code, m
}

func (e *env) scimCreate(userName, externalID string) string {
	e.t.Helper()
	body := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"` + userName + `","active":true,"name":{"givenName":"A"}`
	if externalID != "" {
		body += `,"externalId":"` + externalID + `"`
	}
	code, m := e.scim("POST", "/scim/v2/Users", body+"}")
	if code != http.StatusCreated {
		e.t.Fatalf("create %s: %d %v", userName, code, m)
	}
	id, _ := m["id"].(string)
	if id == "" || m["userName"] != userName {
		e.t.Fatalf("create answer %v", m)
	}
	return id
}

const patchPrefix = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":`

// TestSCIMProvisioningSequence follows an identity provider: it creates a
// user, finds it with a filtered GET, and deactivates it with PATCH; that
// ends in one offboard of the user's externalId. The other ways to
// deactivate (PATCH without path, Entra's "False", PUT, DELETE) each make one
// offboard; a user without externalId is offboarded by username.
func TestSCIMProvisioningSequence(t *testing.T) {
	e := newEnv(t)
	e.runMapper(e.s)

	code, cfg := e.scim("GET", "/scim/v2/ServiceProviderConfig", "")
	if code != 200 || cfg["patch"].(map[string]any)["supported"] != true {
		t.Fatalf("ServiceProviderConfig: %d %v", code, cfg)
	}

	id := e.scimCreate("ada@example.com", "E-1001")
	for _, f := range []string{`userName eq "ada@example.com"`, `externalId eq "E-1001"`, `username EQ "ADA@example.com"`} {
		code, list := e.scim("GET", "/scim/v2/Users?filter="+url.QueryEscape(f), "")
		if code != 200 || list["totalResults"] != float64(1) {
			t.Fatalf("filter %s: %d %v", f, code, list)
		}
		res := list["Resources"].([]any)[0].(map[string]any)
		if res["id"] != id || res["externalId"] != "E-1001" || res["active"] != true {
			t.Errorf("filter %s found %v", f, res)
		}
	}
	code, list := e.scim("GET", "/scim/v2/Users?filter="+url.QueryEscape(`userName eq "nobody@example.com"`), "")
	if code != 200 || list["totalResults"] != float64(0) || len(list["Resources"].([]any)) != 0 {
		t.Errorf("filter for nobody: %d %v", code, list)
	}
	if code, u := e.scim("GET", "/scim/v2/Users/"+id, ""); code != 200 || u["userName"] != "ada@example.com" {
		t.Errorf("GET by id: %d %v", code, u)
	}
	if e.storedEvents() != 0 {
		t.Fatal("creating an active user stored an event")
	}
	deactivate := patchPrefix + `[{"op":"replace","path":"active","value":false}]}`
	code, u := e.scim("PATCH", "/scim/v2/Users/"+id, deactivate)
	if code != 200 || u["active"] != false {
		t.Fatalf("PATCH: %d %v", code, u)
	}
	// The same PATCH again (a retry) changes nothing more.
	if code, _ := e.scim("PATCH", "/scim/v2/Users/"+id, patchPrefix+`[{"op":"replace","path":"active","value":false}]}`); code != 200 {
		t.Fatalf("PATCH again: %d", code)
	}
	e.waitMapped()
	jobs := e.jobs()
	if len(jobs) != 1 {
		t.Fatalf("%d jobs, want 1: %v", len(jobs), jobs)
	}
	eventID := sha256Hex([]byte("PATCH"), []byte(id), []byte(deactivate))
	checkJob(t, jobs[0], map[string]any{
		"id": "hr:scim:" + eventID + ":scim-deactivated", "type": "offboard",
		"user": map[string]any{"external_id": "E-1001"}, "source": "hr.scim", "requested_at": "*",
	})
	stored := e.msgs(StreamEvents)
	if len(stored) != 1 || stored[0].Header.Get("Hr-Event-Id") != eventID || stored[0].Subject != "hr.events.scim" {
		t.Fatalf("stored %d events", len(stored))
	}
	var ev map[string]any
	_ = json.Unmarshal(stored[0].Data, &ev)
	if ev["type"] != "user.deactivated" || ev["data"].(map[string]any)["userName"] != "ada@example.com" || ev["data"].(map[string]any)["externalId"] != "E-1001" {
		t.Errorf("stored SCIM event %s", stored[0].Data)
	}

	// Entra ID's form: no path, "False" as a string.
	id2 := e.scimCreate("bob@example.com", "E-1002")
	if code, _ := e.scim("PATCH", "/scim/v2/Users/"+id2, patchPrefix+`[{"op":"Replace","value":{"active":"False"}}]}`); code != 200 {
		t.Fatalf("PATCH without path: %d", code)
	}
	id3 := e.scimCreate("cy@example.com", "E-1003")
	if code, _ := e.scim("PUT", "/scim/v2/Users/"+id3, `{"userName":"cy@example.com","externalId":"E-1003","active":false}`); code != 200 {
		t.Fatalf("PUT: %d", code)
	}
	id4 := e.scimCreate("dee@example.com", "")
	if code, _ := e.scim("DELETE", "/scim/v2/Users/"+id4, ""); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d", code)
	}
	if code, _ := e.scim("GET", "/scim/v2/Users/"+id4, ""); code != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d", code)
	}
	// A PUT that leaves active out neither deactivates nor revives.
	id5 := e.scimCreate("eve@example.com", "E-1005")
	if code, u := e.scim("PUT", "/scim/v2/Users/"+id5, `{"userName":"eve@example.com","externalId":"E-1005"}`); code != 200 || u["active"] != true {
		t.Fatalf("PUT without active: %d %v", code, u)
	}
	e.waitMapped()
	got := map[string]bool{}
	for _, j := range e.jobs() {
		b, _ := json.Marshal(j["user"])
		got[string(b)] = true
	}
	for _, want := range []string{`{"external_id":"E-1001"}`, `{"external_id":"E-1002"}`, `{"external_id":"E-1003"}`, `{"username":"dee@example.com"}`} {
		if !got[want] {
			t.Errorf("no offboard of %s; got %v", want, got)
		}
	}
	if len(got) != 4 || len(e.jobs()) != 4 {
		t.Errorf("jobs: %v", e.jobs())
	}
	// Listing without a filter pages through what is left.
	code, list = e.scim("GET", "/scim/v2/Users?startIndex=2&count=2", "")
	if code != 200 || list["totalResults"] != float64(4) || list["itemsPerPage"] != float64(2) {
		t.Errorf("list: %d %v", code, list)
	}
}
