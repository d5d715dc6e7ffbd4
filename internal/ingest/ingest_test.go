package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// leaver is one source's correctly signed leaver event and the job it must
// become.
type leaver struct {
	source string
	path   string
	body   []byte
	header func(body []byte) http.Header
	// eventID is the expected Hr-Event-Id.
	eventID string
	want    map[string]any // requested_at "*" means "about now"
}

func leavers(t *testing.T) []leaver {
	ce := jsonBody(t, map[string]any{
		"specversion": "1.0", "id": "evt-" + randomID(), "source": "https://hr.example.com/events",
		"type": "io.mfaworker.person.left", "time": "2026-11-26T10:00:00Z", "datacontenttype": "application/json",
		"data": map[string]any{"external_id": "E-1001", "effective_at": "2026-11-28T17:00:00+01:00"},
	})
	var ceAttrs struct{ ID, Source string }
	_ = json.Unmarshal(ce, &ceAttrs)
	ceID := rules.CloudEventID(ceAttrs.Source, ceAttrs.ID)
	bamboo := jsonBody(t, map[string]any{"employees": []any{map[string]any{
		"id": "1001", "action": "Updated", "changedFields": []string{"employmentHistoryStatus"},
		"fields": map[string]any{"employmentHistoryStatus": map[string]any{"value": "Terminated"}},
	}}})
	hibob := jsonBody(t, map[string]any{
		"companyId": 640, "type": "employee.left", "triggeredBy": "system", "triggeredAt": time.Now().UTC().Add(-10 * time.Second).Format("2006-01-02T15:04:05.000Z"),
		"version": "v2", "data": map[string]any{"employeeId": "3332883884017713238"},
	})
	return []leaver{{
		source: SourceCloudEvents, path: "/events", body: ce, eventID: ceID,
		header: func(b []byte) http.Header { return signCE(b, "msg_"+randomID(), time.Now(), ceKey) },
		want: map[string]any{
			"id": "hr:cloudevents:" + ceID + ":person-left", "type": "offboard", "user": map[string]any{"external_id": "E-1001"},
			"source": "hr.cloudevents", "requested_at": "2026-11-26T10:00:00Z", "not_before": "2026-11-28T16:00:00Z",
		},
	}, {
		source: SourceBambooHR, path: "/hooks/bamboohr", body: bamboo, eventID: sha256Hex(bamboo),
		header: func(b []byte) http.Header { return signBamboo(b, time.Now(), bambooKey) },
		want: map[string]any{
			"id": "hr:bamboohr:" + sha256Hex(bamboo) + ":bamboohr-left", "type": "offboard",
			"user": map[string]any{"external_id": "1001"}, "source": "hr.bamboohr", "requested_at": "*",
		},
	}, {
		source: SourceHiBob, path: "/hooks/hibob", body: hibob, eventID: sha256Hex(hibob),
		header: func(b []byte) http.Header { return signHiBob(b, hibobKey) },
		want: map[string]any{
			"id": "hr:hibob:" + sha256Hex(hibob) + ":hibob-left", "type": "offboard",
			"user": map[string]any{"external_id": "3332883884017713238"}, "source": "hr.hibob", "requested_at": "*",
		},
	}}
}

// checkJob compares a job body with the expected one.
func checkJob(t *testing.T, got, want map[string]any) {
	t.Helper()
	want = clone(want)
	if want["requested_at"] == "*" {
		ra, _ := got["requested_at"].(string)
		at, err := time.Parse(time.RFC3339Nano, ra)
		if err != nil || time.Since(at) > time.Minute || time.Since(at) < 0 {
			t.Errorf("requested_at %q is not about now", ra)
		}
		want["requested_at"] = got["requested_at"]
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("job\n got %v\nwant %v", got, want)
	}
}

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestLeaverEachSource: a correctly signed leaver event is stored once, as
// received, and mapped to exactly one job with the right id and body.
func TestLeaverEachSource(t *testing.T) {
	for _, l := range leavers(t) {
		t.Run(l.source, func(t *testing.T) {
			e := newEnv(t)
			e.runMapper(e.s)
			code, body := e.post(l.path, l.header(l.body), l.body)
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, body)
			}
			mustContain(t, string(body), `"stored"`)
			e.waitMapped()
			stored := e.msgs(StreamEvents)
			if len(stored) != 1 {
				t.Fatalf("%d events stored, want 1", len(stored))
			}
			m := stored[0]
			if m.Subject != "hr.events."+l.source || !bytes.Equal(m.Data, l.body) {
				t.Errorf("stored on %s: %s", m.Subject, m.Data)
			}
			wantH := map[string]string{"Nats-Msg-Id": l.source + ":" + l.eventID, "Hr-Source": l.source, "Hr-Event-Id": l.eventID}
			for k, v := range wantH {
				if got := m.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if _, err := time.Parse(time.RFC3339Nano, m.Header.Get("Hr-Received-At")); err != nil {
				t.Errorf("Hr-Received-At %q", m.Header.Get("Hr-Received-At"))
			}
			for k := range m.Header {
				if k != "Nats-Msg-Id" && k != "Nats-Expected-Stream" && !strings.HasPrefix(k, "Hr-") {
					t.Errorf("stored header %s: no authentication header may be stored", k)
				}
			}
			jobs := e.jobs()
			if len(jobs) != 1 {
				t.Fatalf("%d jobs, want 1: %v", len(jobs), jobs)
			}
			checkJob(t, jobs[0], l.want)
			if got := e.counter("mfa_hr_events_total", "source", l.source, "result", "mapped"); got != 1 {
				t.Errorf("mfa_hr_events_total{mapped} = %v", got)
			}
			if got := e.counter("mfa_ingest_requests_total", "source", l.source, "code", "200"); got != 1 {
				t.Errorf("mfa_ingest_requests_total{200} = %v", got)
			}
		})
	}
}

// TestDeliveredThreeTimes: the same event delivered three times (a sender
// retrying) is stored once, answered 2xx each time, and makes one job.
func TestDeliveredThreeTimes(t *testing.T) {
	e := newEnv(t)
	e.runMapper(e.s)
	ls := leavers(t)
	for _, l := range ls {
		for i := range 3 {
			code, body := e.post(l.path, l.header(l.body), l.body)
			if code != http.StatusOK {
				t.Fatalf("%s delivery %d: status %d: %s", l.source, i+1, code, body)
			}
			if i > 0 {
				mustContain(t, string(body), `"duplicate"`)
			}
		}
	}
	e.waitMapped()
	if n := e.storedEvents(); n != len(ls) {
		t.Errorf("%d events stored, want %d", n, len(ls))
	}
	jobs := e.jobs()
	if len(jobs) != len(ls) {
		t.Fatalf("%d jobs, want %d", len(jobs), len(ls))
	}
	byID := map[any]map[string]any{}
	for _, j := range jobs {
		byID[j["id"]] = j
	}
	for _, l := range ls {
		checkJob(t, byID[l.want["id"]], l.want)
	}
}

// TestMapperKilledBeforeAck: a mapper that published the jobs but died
// before acknowledging the event leaves it to the next mapper, which makes
// the same job again; JetStream keeps one.
func TestMapperKilledBeforeAck(t *testing.T) {
	e := newEnv(t)
	l := leavers(t)[0]
	if code, body := e.post(l.path, l.header(l.body), l.body); code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	reached := make(chan struct{}, 1)
	first := e.newServer()
	first.beforeAck = func(rules.Event) bool {
		select {
		case reached <- struct{}{}:
		default:
		}
		return false // dies here: no ack
	}
	stopFirst := e.runMapper(first)
	select {
	case <-reached:
	case <-time.After(15 * time.Second):
		t.Fatal("first mapper never reached the ack")
	}
	stopFirst()
	if n := len(e.jobs()); n != 1 {
		t.Fatalf("after the first mapper: %d jobs, want 1", n)
	}
	second := e.newServer()
	e.runMapper(second)
	e.waitFor("the event to be acknowledged", func() bool {
		info, err := second.objs.Consumer.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.Delivered.Consumer >= 2
	})
	jobs := e.jobs()
	if len(jobs) != 1 {
		t.Fatalf("%d jobs, want 1", len(jobs))
	}
	checkJob(t, jobs[0], l.want)
}

// TestHostileInput: each bad request gets its status, and nothing is
// stored and no job made.
func TestHostileInput(t *testing.T) {
	e := newEnv(t)
	e.runMapper(e.s)
	good := leavers(t)
	ce, bamboo, hibob := good[0].body, good[1].body, good[2].body
	now := time.Now()
	other := bytes.Replace(ce, []byte("E-1001"), []byte("E-6666"), 1)
	truncated := ce[:len(ce)-7]
	big := bytes.Repeat([]byte("x"), 2<<20)
	noType := jsonBody(t, map[string]any{"specversion": "1.0", "id": "x", "source": "y"})
	withCT := func(h http.Header, ct string) http.Header { h.Set("Content-Type", ct); return h }
	without := func(h http.Header, k string) http.Header { h.Del(k); return h }

	// A user to PATCH harmlessly.
	code, body := e.post("/scim/v2/Users", scimHeaders(), []byte(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com","externalId":"E-1"}`))
	if code != http.StatusCreated {
		t.Fatalf("SCIM create: %d %s", code, body)
	}
	var user struct{ ID string }
	_ = json.Unmarshal(body, &user)
	patch := func(ops string) []byte {
		return []byte(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":` + ops + `}`)
	}

	cases := []struct {
		name   string
		method string
		path   string
		header http.Header
		body   []byte
		want   int
	}{
		{"cloudevents no signature", "POST", "/events", http.Header{"Content-Type": {"application/cloudevents+json"}}, ce, 401},
		{"cloudevents bad signature", "POST", "/events", withCT(signCE(ce, "m1", now, []byte("wrong key")), "application/cloudevents+json"), ce, 401},
		{"cloudevents signature of another body", "POST", "/events", signCE(other, "m1", now, ceKey), ce, 401},
		{"cloudevents old timestamp", "POST", "/events", signCE(ce, "m1", now.Add(-6*time.Minute), ceKey), ce, 401},
		{"cloudevents future timestamp", "POST", "/events", signCE(ce, "m1", now.Add(6*time.Minute), ceKey), ce, 401},
		{"cloudevents no webhook-id", "POST", "/events", without(signCE(ce, "m1", now, ceKey), "Webhook-Id"), ce, 401},
		{"cloudevents wrong content type", "POST", "/events", withCT(signCE(ce, "m1", now, ceKey), "application/json"), ce, 415},
		{"cloudevents batch content type", "POST", "/events", withCT(signCE(ce, "m1", now, ceKey), "application/cloudevents-batch+json"), ce, 415},
		{"cloudevents truncated JSON", "POST", "/events", signCE(truncated, "m1", now, ceKey), truncated, 400},
		{"cloudevents without type", "POST", "/events", signCE(noType, "m1", now, ceKey), noType, 400},
		{"cloudevents 2 MiB", "POST", "/events", signCE(big, "m1", now, ceKey), big, 413},
		{"cloudevents GET", "GET", "/events", nil, nil, 405},
		{"bamboohr bad signature", "POST", "/hooks/bamboohr", signBamboo(bamboo, now, []byte("nope")), bamboo, 401},
		{"bamboohr old timestamp", "POST", "/hooks/bamboohr", signBamboo(bamboo, now.Add(-10*time.Minute), bambooKey), bamboo, 401},
		{"bamboohr signature of another body", "POST", "/hooks/bamboohr", signBamboo([]byte(`{}`), now, bambooKey), bamboo, 401},
		{"bamboohr not JSON", "POST", "/hooks/bamboohr", signBamboo([]byte(`employees=1`), now, bambooKey), []byte(`employees=1`), 400},
		{"bamboohr wrong content type", "POST", "/hooks/bamboohr", withCT(signBamboo(bamboo, now, bambooKey), "text/plain"), bamboo, 415},
		{"hibob missing signature", "POST", "/hooks/hibob", http.Header{"Content-Type": {"application/json"}}, hibob, 401},
		{"hibob signature of another body", "POST", "/hooks/hibob", signHiBob([]byte(`{}`), hibobKey), hibob, 401},
		{"hibob truncated", "POST", "/hooks/hibob", signHiBob(hibob[:20], hibobKey), hibob[:20], 400},
		{"hibob PUT", "PUT", "/hooks/hibob", signHiBob(hibob, hibobKey), hibob, 405},
		{"unknown path", "POST", "/hooks/workday", nil, []byte(`{}`), 404},
		{"root", "GET", "/", nil, nil, 404},
		{"scim no token", "GET", "/scim/v2/Users", nil, nil, 401},
		{"scim wrong token", "GET", "/scim/v2/Users", http.Header{"Authorization": {"Bearer nope"}}, nil, 401},
		{"scim unknown resource", "GET", "/scim/v2/Roles", scimHeaders(), nil, 404},
		{"scim DELETE collection", "DELETE", "/scim/v2/Users", scimHeaders(), nil, 405},
		{"scim truncated JSON", "POST", "/scim/v2/Users", scimHeaders(), []byte(`{"userName":"b`), 400},
		{"scim no userName", "POST", "/scim/v2/Users", scimHeaders(), []byte(`{"externalId":"E-2"}`), 400},
		{"scim duplicate userName", "POST", "/scim/v2/Users", scimHeaders(), []byte(`{"userName":"ADA@example.com"}`), 409},
		{"scim wrong content type", "POST", "/scim/v2/Users", withCT(scimHeaders(), "text/xml"), []byte(`{"userName":"c"}`), 415},
		{"scim 2 MiB", "POST", "/scim/v2/Users", scimHeaders(), big, 413},
		{"scim PATCH that does not deactivate", "PATCH", "/scim/v2/Users/" + user.ID, scimHeaders(),
			patch(`[{"op":"replace","path":"name.givenName","value":"Ada"},{"op":"Replace","path":"active","value":true}]`), 200},
		{"scim PATCH unknown user", "PATCH", "/scim/v2/Users/0000", scimHeaders(), patch(`[{"op":"replace","path":"active","value":false}]`), 404},
		{"scim PATCH bad active", "PATCH", "/scim/v2/Users/" + user.ID, scimHeaders(), patch(`[{"op":"replace","path":"active","value":"maybe"}]`), 400},
		{"scim PATCH bad op", "PATCH", "/scim/v2/Users/" + user.ID, scimHeaders(), patch(`[{"op":"move","path":"active","value":false}]`), 400},
		{"scim bad filter", "GET", "/scim/v2/Users?filter=" + "emails%20co%20%22x%22", scimHeaders(), nil, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r *bytes.Reader
			if c.body != nil {
				r = bytes.NewReader(c.body)
			} else {
				r = bytes.NewReader(nil)
			}
			code, body := e.do(c.method, c.path, c.header, r)
			if code != c.want {
				t.Errorf("status %d, want %d: %s", code, c.want, body)
			}
			if strings.HasPrefix(c.path, "/scim/") && code >= 400 {
				mustContain(t, string(body), "urn:ietf:params:scim:api:messages:2.0:Error")
			}
			for _, secret := range [][]byte{ceKey, ceSecret, bambooKey, hibobKey, scimToken} {
				if bytes.Contains(body, secret) {
					t.Errorf("answer holds a secret: %s", body)
				}
			}
		})
	}
	// A body of unknown length (chunked) over the limit.
	t.Run("cloudevents 2 MiB chunked", func(t *testing.T) {
		code, _ := e.do("POST", "/events", signCE(big, "m1", now, ceKey), struct{ *bytes.Reader }{bytes.NewReader(big)})
		if code != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413", code)
		}
	})
	e.waitMapped()
	if n := e.storedEvents(); n != 0 {
		t.Errorf("%d events stored, want 0", n)
	}
	if jobs := e.jobs(); len(jobs) != 0 {
		t.Errorf("jobs made: %v", jobs)
	}
	logs := e.logs.String()
	for _, secret := range [][]byte{ceKey, ceSecret, bambooKey, hibobKey, scimToken} {
		if strings.Contains(logs, string(secret)) {
			t.Errorf("logs hold a secret")
		}
	}
	if got := e.counter("mfa_ingest_requests_total", "source", SourceCloudEvents, "code", "401"); got != 6 {
		t.Errorf("mfa_ingest_requests_total{cloudevents,401} = %v, want 6", got)
	}
}

// TestUnconfiguredSource: a source without a secret answers 404.
func TestUnconfiguredSource(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Secrets = Secrets{CloudEvents: ceKey} })
	l := leavers(t)
	for _, c := range []struct{ path string }{{"/hooks/bamboohr"}, {"/hooks/hibob"}, {"/scim/v2/Users"}} {
		code, _ := e.post(c.path, signHiBob(l[2].body, hibobKey), l[2].body)
		if code != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", c.path, code)
		}
	}
	if code, body := e.post(l[0].path, l[0].header(l[0].body), l[0].body); code != http.StatusOK {
		t.Errorf("configured source: %d %s", code, body)
	}
}

// TestStoreUnavailable: when JetStream cannot store the event the sender
// gets 503 (and retries), and /readyz says why.
func TestStoreUnavailable(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.StoreTimeout = time.Second })
	if code, _ := e.do("GET", "/readyz", nil, nil); code != http.StatusOK {
		t.Fatalf("readyz %d before", code)
	}
	if err := e.js.DeleteStream(context.Background(), StreamEvents); err != nil {
		t.Fatal(err)
	}
	l := leavers(t)[0]
	code, body := e.post(l.path, l.header(l.body), l.body)
	if code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503: %s", code, body)
	}
	code, body = e.do("GET", "/readyz", nil, nil)
	if code != http.StatusServiceUnavailable {
		t.Errorf("readyz %d, want 503", code)
	}
	mustContain(t, string(body), StreamEvents)
	if code, _ := e.do("GET", "/healthz", nil, nil); code != http.StatusOK {
		t.Errorf("healthz %d", code)
	}
}

// joinerRules are two rules for one joiner event, an SMS enrollment and a
// token, as list items of a rules file.
const joinerRules = `
  - name: joiner-sms
    when: event.type == "io.mfaworker.person.joined"
    job:
      type: '"enroll"'
      user: '{"email": event.data.email}'
      params:
        factor_name: '"OneLogin SMS"'
        display_name: '"Work phone"'
        number: event.data.phone
  - name: joiner-token
    when: event.type == "io.mfaworker.person.joined"
    job:
      type: '"generate_token"'
      user: '{"email": event.data.email}'
      params: '{"expires_in": 86400, "recipient_xkey": "XDQHW5RQ5SHE6TKQZQCCFUUBLG2I353MU5GQAT3WC35LMV3XFUHREZIY"}'
`

// TestRuleErrorAndIgnored: a rule that fails on an event copies the event
// to mfa.dlq.ingest with the rule's name, while a sound rule on the same
// event still makes its job; an event no rule matches is counted ignored.
func TestRuleErrorAndIgnored(t *testing.T) {
	set, err := rules.Parse([]byte("\nrules:"+joinerRules), "test")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Rules = set })
	e.runMapper(e.s)
	ce := func(id, typ string, data map[string]any) []byte {
		return jsonBody(t, map[string]any{"specversion": "1.0", "id": id, "source": "hr", "type": typ, "data": data})
	}
	joiner := ce("j1", "io.mfaworker.person.joined", map[string]any{"email": "new@example.com", "otp_token": "123456", "OTP_Token": "654321"})
	other := ce("o1", "io.mfaworker.person.moved", map[string]any{"email": "x@example.com"})
	// The receiver refuses the joiner at the door (422, nothing stored):
	// only a rule changed after storage fails in the mapper, which these
	// direct stores stand for.
	if code, body := e.post("/events", signCE(joiner, randomID(), time.Now(), ceKey), joiner); code != http.StatusUnprocessableEntity ||
		!strings.Contains(string(body), `"rule":"joiner-sms"`) || strings.Contains(string(body), "new@example.com") {
		t.Fatalf("status %d: %s", code, body)
	}
	if e.storedEvents() != 0 {
		t.Fatal("a refused event was stored")
	}
	for _, b := range [][]byte{joiner, other} {
		e.storeDirect(SourceCloudEvents, b)
	}
	e.waitMapped()
	jobs := e.jobs()
	if len(jobs) != 1 || jobs[0]["id"] != "hr:cloudevents:"+rules.CloudEventID("hr", "j1")+":joiner-token" {
		t.Fatalf("jobs %v", jobs)
	}
	dl := e.msgs("TEST_DLQ")
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	d := dl[0]
	if d.Subject != DLQSubject || d.Header.Get("Mfa-Error-Code") != "rule_error" || d.Header.Get("Mfa-Original-Subject") != "hr.events.cloudevents" {
		t.Errorf("dead letter %s %v", d.Subject, d.Header)
	}
	mustContain(t, d.Header.Get("Mfa-Reason"), `rule "joiner-sms"`)
	mustContain(t, d.Header.Get("Mfa-Reason"), "phone")
	// The job model's scrubbing: secret keys in any case.
	if strings.Contains(string(d.Data), "123456") || strings.Contains(string(d.Data), "654321") || !strings.Contains(string(d.Data), "new@example.com") {
		t.Errorf("dead letter body: %s", d.Data)
	}
	if got := e.counter("mfa_hr_events_total", "source", "cloudevents", "result", "rule_error"); got != 1 {
		t.Errorf("rule_error = %v", got)
	}
	if got := e.counter("mfa_hr_events_total", "source", "cloudevents", "result", "ignored"); got != 1 {
		t.Errorf("ignored = %v", got)
	}
	if got := e.counter("mfa_hr_events_total", "source", "cloudevents", "result", "mapped"); got != 0 {
		t.Errorf("mapped = %v", got)
	}
}

// TestJobsWaitForTheJobStream: an event whose jobs cannot be stored (no job
// stream yet) stays in HR_EVENTS and is mapped once the stream exists.
func TestJobsWaitForTheJobStream(t *testing.T) {
	e := newEnv(t)
	if err := e.js.DeleteStream(context.Background(), "TEST_JOBS"); err != nil {
		t.Fatal(err)
	}
	e.runMapper(e.s)
	l := leavers(t)[0]
	if code, body := e.post(l.path, l.header(l.body), l.body); code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	e.waitFor("a failed attempt", func() bool { return strings.Contains(e.logs.String(), "will retry") })
	if _, err := e.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "TEST_JOBS", Subjects: []string{"mfa.jobs.>"}}); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the job", func() bool { return len(e.jobs()) == 1 })
	checkJob(t, e.jobs()[0], l.want)
}

// TestMapperBatchMixedAndRetried: many events waiting at once are mapped
// together; while the job stream is missing every one of them is left to
// retry, and once it exists each is mapped exactly once: leavers to one job
// each, a rule error to its job and one dead letter, an unknown type to
// nothing.
func TestMapperBatchMixedAndRetried(t *testing.T) {
	set, err := rules.Parse(append(rules.BuiltinYAML(), joinerRules...), "test")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Rules = set })
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, "TEST_JOBS"); err != nil {
		t.Fatal(err)
	}
	const n = 150
	want := map[string]bool{}
	for range n {
		l := leavers(t)[0]
		if code, body := e.post(l.path, l.header(l.body), l.body); code != http.StatusOK {
			t.Fatalf("status %d: %s", code, body)
		}
		want[l.want["id"].(string)] = true
	}
	ce := func(id, typ string, data map[string]any) []byte {
		return jsonBody(t, map[string]any{"specversion": "1.0", "id": id, "source": "hr", "type": typ, "data": data})
	}
	joiner := ce("j1", "io.mfaworker.person.joined", map[string]any{"email": "new@example.com"})
	other := ce("o1", "io.mfaworker.person.moved", map[string]any{"email": "x@example.com"})
	for _, b := range [][]byte{joiner, other} {
		e.storeDirect(SourceCloudEvents, b)
	}
	want["hr:cloudevents:"+rules.CloudEventID("hr", "j1")+":joiner-token"] = true

	e.runMapper(e.s)
	e.waitFor("failed attempts", func() bool { return strings.Count(e.logs.String(), "will retry") >= n })
	if n := len(e.msgs("TEST_DLQ")); n != 0 {
		t.Fatalf("%d dead letters before the jobs of their event were stored", n)
	}
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "TEST_JOBS", Subjects: []string{"mfa.jobs.>"}, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	e.waitMapped()
	jobs := e.jobs()
	got := map[string]bool{}
	for _, j := range jobs {
		id, _ := j["id"].(string)
		if got[id] {
			t.Errorf("job %s stored twice", id)
		}
		got[id] = true
		if !want[id] {
			t.Errorf("unexpected job %s", id)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d jobs, want %d", len(got), len(want))
	}
	if n := len(e.msgs("TEST_DLQ")); n != 1 {
		t.Errorf("%d dead letters, want 1", n)
	}
	for result, w := range map[string]float64{"mapped": n, "rule_error": 1, "ignored": 1} {
		if got := e.counter("mfa_hr_events_total", "source", "cloudevents", "result", result); got != w {
			t.Errorf("%s = %v, want %v", result, got, w)
		}
	}
}
