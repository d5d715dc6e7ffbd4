package ingest

import (
	"context"
	"encoding/json"
	"fmt"
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
	kv, err := e.js.KeyValue(context.Background(), BucketSCIM)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), userKey(id))
	if err != nil {
		t.Fatal(err)
	}
	createdRev := entry.Revision()
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
	stored := e.msgs(StreamEvents)
	if len(stored) != 1 || stored[0].Subject != "hr.events.scim" {
		t.Fatalf("stored %d events", len(stored))
	}
	// The event is the transition: the user's id and the revision it was
	// deactivated from.
	eventID := stored[0].Header.Get("Hr-Event-Id")
	if eventID != scimEventID(SCIMDeactivated, id, createdRev) {
		t.Errorf("event id %s, want the hash of the transition from revision %d", eventID, createdRev)
	}
	checkJob(t, jobs[0], map[string]any{
		"id": "hr:scim:" + eventID + ":scim-deactivated", "type": "offboard",
		"user": map[string]any{"email": "ada@example.com", "external_id": "E-1001"}, "source": "hr.scim", "requested_at": "*",
	})
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
	for _, want := range []string{`{"email":"ada@example.com","external_id":"E-1001"}`, `{"email":"bob@example.com","external_id":"E-1002"}`,
		`{"email":"cy@example.com","external_id":"E-1003"}`, `{"email":"dee@example.com"}`} {
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

// TestSCIMTransitions: disable, enable, disable again with byte-identical
// bodies (as Entra and Okta send them) is two events and two offboards; a
// retried disable is none; an RFC 7644 URN-qualified path deactivates too.
func TestSCIMTransitions(t *testing.T) {
	e := newEnv(t)
	e.runMapper(e.s)
	id := e.scimCreate("ada@example.com", "E-1")
	off := patchPrefix + `[{"op":"Replace","path":"active","value":false}]}`
	on := patchPrefix + `[{"op":"Replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:active","value":true}]}`
	for i, b := range []string{off, off, on, off} {
		code, u := e.scim("PATCH", "/scim/v2/Users/"+id, b)
		if code != 200 || u["active"] != (b == on) {
			t.Fatalf("PATCH %d: %d %v", i+1, code, u)
		}
	}
	id2 := e.scimCreate("bob@example.com", "E-2")
	urnOff := patchPrefix + `[{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:active","value":"False"}]}`
	if code, u := e.scim("PATCH", "/scim/v2/Users/"+id2, urnOff); code != 200 || u["active"] != false {
		t.Fatalf("URN PATCH: %d %v", code, u)
	}
	e.waitMapped()
	if n := e.storedEvents(); n != 3 {
		t.Fatalf("%d events stored, want 3", n)
	}
	got := map[string]int{}
	for _, j := range e.jobs() {
		ext, _ := j["user"].(map[string]any)["external_id"].(string)
		got[ext]++
	}
	if got["E-1"] != 2 || got["E-2"] != 1 || len(got) != 2 {
		t.Errorf("offboards per person: %v, want E-1 twice and E-2 once", got)
	}
}

// TestSCIMResourceAsSent: a user is answered with every attribute it was
// sent (extensions included, PATCHes applied), never its password, with
// absolute locations; userName uniqueness folds case by one rule.
func TestSCIMResourceAsSent(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PublicURL = "https://ingest.example.com/" })
	body := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
		"urn:okta:custom"],"userName":"Kelvin@example.com","externalId":"E-9","password":"s3cret-pw","nickName":"K",
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":"701","department":"R"},
		"urn:okta:custom":{"costCenter":12345678901234567890},"emails":[{"type":"work","value":"k@example.com","primary":true}]}`
	code, b := e.do("POST", "/scim/v2/Users", scimHeaders(), strings.NewReader(body))
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	var u map[string]any
	_ = json.Unmarshal(b, &u)
	id := u["id"].(string)
	if strings.Contains(string(b), "s3cret-pw") || u["password"] != nil {
		t.Errorf("the password was answered: %s", b)
	}
	mustContain(t, string(b), `"costCenter":12345678901234567890`)
	ops := patchPrefix + `[{"op":"replace","path":"emails[type eq \"work\"].value","value":"k2@example.com"},
		{"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":{"value":"M-1"}},
		{"op":"replace","value":{"nickName":"Kel","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department":"S"}},
		{"op":"remove","path":"name.givenName"}]}`
	if code, u := e.scim("PATCH", "/scim/v2/Users/"+id, ops); code != 200 {
		t.Fatalf("PATCH: %d %v", code, u)
	}
	code, got := e.scim("GET", "/scim/v2/Users/"+id, "")
	if code != 200 {
		t.Fatalf("GET: %d", code)
	}
	ent := got["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"].(map[string]any)
	if ent["employeeNumber"] != "701" || ent["department"] != "S" || ent["manager"].(map[string]any)["value"] != "M-1" ||
		got["nickName"] != "Kel" || got["emails"].([]any)[0].(map[string]any)["value"] != "k2@example.com" || got["active"] != true {
		t.Errorf("resource after PATCH: %v", got)
	}
	if loc := got["meta"].(map[string]any)["location"]; loc != "https://ingest.example.com/scim/v2/Users/"+id {
		t.Errorf("meta.location %v", loc)
	}
	// One folding rule: the Kelvin sign K (U+212A) is the letter k.
	if code, _ := e.scim("POST", "/scim/v2/Users", `{"userName":"\u212aELVIN@EXAMPLE.COM"}`); code != http.StatusConflict {
		t.Errorf("a userName differing by case only: %d, want 409", code)
	}
	code, list := e.scim("GET", "/scim/v2/Users?filter="+url.QueryEscape(`userName eq "kelvin@example.com"`), "")
	if code != 200 || list["totalResults"] != float64(1) {
		t.Errorf("filter by folded name: %d %v", code, list)
	}
}

// TestSCIMDiscoveryAndGroups: a generic SCIM client finds its way
// (ServiceProviderConfig, ResourceTypes, Schemas), and group requests are
// answered without effect.
func TestSCIMDiscoveryAndGroups(t *testing.T) {
	e := newEnv(t)
	code, rt := e.scim("GET", "/scim/v2/ResourceTypes", "")
	if code != 200 || rt["totalResults"] != float64(2) {
		t.Fatalf("ResourceTypes: %d %v", code, rt)
	}
	if code, u := e.scim("GET", "/scim/v2/ResourceTypes/User", ""); code != 200 || u["endpoint"] != "/Users" {
		t.Errorf("ResourceTypes/User: %d %v", code, u)
	}
	code, sc := e.scim("GET", "/scim/v2/Schemas", "")
	if code != 200 || sc["totalResults"] != float64(3) {
		t.Fatalf("Schemas: %d %v", code, sc)
	}
	if code, u := e.scim("GET", "/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", ""); code != 200 || u["name"] != "User" {
		t.Errorf("Schemas/User: %d %v", code, u)
	}
	if code, c := e.scim("GET", "/scim/v2/ServiceProviderConfig", ""); code != 200 ||
		!strings.HasPrefix(c["meta"].(map[string]any)["location"].(string), e.http.URL) {
		t.Errorf("ServiceProviderConfig: %d %v", code, c)
	}
	code, g := e.scim("POST", "/scim/v2/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Staff","members":[{"value":"x"}]}`)
	if code != http.StatusCreated || g["members"] != nil {
		t.Fatalf("create group: %d %v", code, g)
	}
	gid := g["id"].(string)
	if code, _ := e.scim("PATCH", "/scim/v2/Groups/"+gid, patchPrefix+`[{"op":"Add","path":"members","value":[{"value":"x"}]},{"op":"Replace","path":"displayName","value":"Team"}]}`); code != http.StatusNoContent {
		t.Errorf("group PATCH: %d", code)
	}
	if code, l := e.scim("GET", "/scim/v2/Groups?filter="+url.QueryEscape(`displayName eq "team"`), ""); code != 200 || l["totalResults"] != float64(1) {
		t.Errorf("group filter: %d %v", code, l)
	}
	if code, _ := e.scim("DELETE", "/scim/v2/Groups/"+gid, ""); code != http.StatusNoContent {
		t.Errorf("group DELETE: %d", code)
	}
	if code, _ := e.scim("GET", "/scim/v2/Groups/"+gid, ""); code != http.StatusNotFound {
		t.Errorf("group after DELETE: %d", code)
	}
	if e.storedEvents() != 0 {
		t.Error("group requests stored events")
	}
}

// TestSCIMPages: pages count live users only (deleted ones are purged)
// and hold what was asked for, in a stable order.
func TestSCIMPages(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 7 {
		ids = append(ids, e.scimCreate(fmt.Sprintf("u%d@example.com", i), ""))
	}
	for _, id := range ids[:2] {
		if code, _ := e.scim("DELETE", "/scim/v2/Users/"+id, ""); code != http.StatusNoContent {
			t.Fatalf("DELETE: %d", code)
		}
	}
	seen := map[string]bool{}
	for start := 1; start <= 5; start += 2 {
		code, l := e.scim("GET", fmt.Sprintf("/scim/v2/Users?startIndex=%d&count=2", start), "")
		if code != 200 || l["totalResults"] != float64(5) || l["startIndex"] != float64(start) {
			t.Fatalf("page at %d: %d %v", start, code, l)
		}
		for _, r := range l["Resources"].([]any) {
			seen[r.(map[string]any)["id"].(string)] = true
		}
	}
	if len(seen) != 5 || seen[ids[0]] || seen[ids[1]] {
		t.Errorf("pages held %v, want the 5 live users", seen)
	}
	if code, l := e.scim("GET", "/scim/v2/Users?count=0", ""); code != 200 || l["totalResults"] != float64(5) || len(l["Resources"].([]any)) != 0 {
		t.Errorf("count=0: %d %v", code, l)
	}
	// No consumer is left behind by the pages.
	st, err := e.js.Stream(context.Background(), "KV_"+BucketSCIM)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil || info.State.Consumers != 0 {
		t.Errorf("consumers left on the SCIM bucket: %v %v", info.State.Consumers, err)
	}
}

// TestSCIMDecidedAtTheDoor: a deactivation whose job the worker would
// reject (a userName OneLogin would read as a wildcard) is a 400
// invalidValue naming the rule and the field, never the value; nothing is
// stored and the user stays active, so the identity provider shows the
// error instead of a success that ends in a dead letter.
func TestSCIMDecidedAtTheDoor(t *testing.T) {
	e := newEnv(t)
	id := e.scimCreate("ad*a@example.com", "")
	code, body := e.do("PATCH", "/scim/v2/Users/"+id, scimHeaders(), strings.NewReader(patchPrefix+`[{"op":"replace","path":"active","value":false}]}`))
	if code != http.StatusBadRequest {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	mustContain(t, string(body), `"scimType":"invalidValue"`)
	mustContain(t, string(body), `rule \"scim-deactivated\"`)
	mustContain(t, string(body), "user.email")
	if strings.Contains(string(body), "ad*a") {
		t.Errorf("the answer holds the value: %s", body)
	}
	if n := e.storedEvents(); n != 0 {
		t.Errorf("%d events stored", n)
	}
	if code, u := e.scim("GET", "/scim/v2/Users/"+id, ""); code != 200 || u["active"] != true {
		t.Errorf("after the refused PATCH: %d %v", code, u)
	}
}

// TestSCIMPatchForms: the forms of RFC 7644 PATCH identity providers use,
// each applied to the resource as sent.
func TestSCIMPatchForms(t *testing.T) {
	e := newEnv(t)
	id := e.scimCreate("pat@example.com", "E-7")
	for _, c := range []struct {
		name, ops string
		check     func(u map[string]any) bool
	}{
		{"core schema object without path", `[{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User":{"displayName":"Pat"}}}]`,
			func(u map[string]any) bool { return u["displayName"] == "Pat" }},
		{"add to a multi-valued attribute", `[{"op":"add","path":"emails","value":[{"type":"home","value":"p@home.example"}]},{"op":"add","path":"emails","value":[{"type":"work","value":"p@work.example"}]}]`,
			func(u map[string]any) bool { return len(u["emails"].([]any)) == 2 }},
		{"remove by value filter", `[{"op":"remove","path":"emails[type eq \"home\"]"}]`,
			func(u map[string]any) bool { return len(u["emails"].([]any)) == 1 }},
		{"extension attribute by URN path", `[{"op":"replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber","value":"77"}]`,
			func(u map[string]any) bool {
				ext, _ := u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"].(map[string]any)
				return ext["employeeNumber"] == "77"
			}},
		{"case-insensitive attribute names", `[{"op":"Replace","path":"DISPLAYNAME","value":"P."}]`,
			func(u map[string]any) bool { return u["displayName"] == "P." }},
	} {
		code, u := e.scim("PATCH", "/scim/v2/Users/"+id, patchPrefix+c.ops+"}")
		if code != 200 || !c.check(u) || u["active"] != true {
			t.Errorf("%s: %d %v", c.name, code, u)
		}
	}
	for _, bad := range []string{`[{"op":"remove"}]`, `[{"op":"remove","path":"userName"}]`, `[{"op":"replace","path":"emails[type co \"w\"].value","value":"x"}]`, `[]`} {
		if code, u := e.scim("PATCH", "/scim/v2/Users/"+id, patchPrefix+bad+"}"); code != http.StatusBadRequest {
			t.Errorf("%s: %d %v, want 400", bad, code, u)
		}
	}
	if code, _ := e.do("POST", "/scim/v2/Users", scimHeaders(), strings.NewReader(`{"userName":"x@example.com"} {"userName":"y"}`)); code != http.StatusBadRequest {
		t.Errorf("two objects in one body: %d, want 400", code)
	}
	if e.storedEvents() != 0 {
		t.Error("attribute changes stored events")
	}
}
