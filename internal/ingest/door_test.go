package ingest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// leaverCE is a signed person.left CloudEvent with data.
func leaverCE(t *testing.T, attrs, data map[string]any) ([]byte, http.Header) {
	t.Helper()
	ev := map[string]any{"specversion": "1.0", "id": "evt-" + randomID(), "source": "https://hr.example.com",
		"type": "io.mfaworker.person.left", "data": data}
	for k, v := range attrs {
		ev[k] = v
	}
	b := jsonBody(t, ev)
	return b, signCE(b, "msg_"+randomID(), time.Now(), ceKey)
}

// TestDoorRefuses: an event whose job could not run, or that is out of
// bounds, is answered 422 problem+json naming rule and field, never a
// value, and nothing is stored.
func TestDoorRefuses(t *testing.T) {
	e := newEnv(t)
	far := time.Now().AddDate(2, 0, 0).UTC().Format(time.RFC3339)
	cases := []struct {
		name        string
		attrs, data map[string]any
		rule, field string
		secret      string // a value that must not be echoed
	}{
		{"not_before past 366 days", nil, map[string]any{"email": "gone@example.com", "effective_at": far}, "person-left", "job.not_before", "gone@example.com"},
		{"a string user_id", nil, map[string]any{"user_id": "4242"}, "person-left", "job.user_id", "4242"},
		{"a wildcard email", nil, map[string]any{"email": "*@example.com"}, "person-left", "job.user.email", "*@example.com"},
		{"a 300 KB field", nil, map[string]any{"email": "a@example.com", "notes": strings.Repeat("5", 300<<10)}, "", "event.data.notes", "55555"},
		{"event time in the future", map[string]any{"time": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)},
			map[string]any{"email": "a@example.com"}, "", "event.time", "a@example.com"},
		{"an unreadable effective_at", nil, map[string]any{"email": "a@example.com", "effective_at": "next friday"}, "person-left", "job.not_before", "next friday"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, h := leaverCE(t, c.attrs, c.data)
			code, body := e.post("/events", h, b)
			if code != http.StatusUnprocessableEntity {
				t.Fatalf("status %d: %s", code, body)
			}
			var p map[string]any
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("answer not JSON: %s", body)
			}
			if p["status"] != float64(422) || p["title"] == "" || p["type"] == "" {
				t.Errorf("problem %v", p)
			}
			if r, _ := p["rule"].(string); r != c.rule {
				t.Errorf("rule %q, want %q (%v)", r, c.rule, p)
			}
			if f, _ := p["field"].(string); f != c.field {
				t.Errorf("field %q, want %q (%v)", f, c.field, p)
			}
			if strings.Contains(string(body), c.secret) {
				t.Errorf("the answer echoes a value: %s", body)
			}
		})
	}
	if n := e.storedEvents(); n != 0 {
		t.Fatalf("%d events stored", n)
	}
	if strings.Contains(e.logs.String(), "gone@example.com") || strings.Contains(e.logs.String(), "55555") {
		t.Error("a value reached the log")
	}
	// The answer's media type.
	b, h := leaverCE(t, nil, map[string]any{"user_id": "1"})
	req, _ := http.NewRequest(http.MethodPost, e.http.URL+"/events", strings.NewReader(string(b)))
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q", ct)
	}
}

// TestDateOnlyLeaver: effective_at as a date alone is stored and becomes
// an offboard at the end of that day in INGEST_TIMEZONE.
func TestDateOnlyLeaver(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Times = rules.Times{Zone: berlin} })
	e.runMapper(e.s)
	day := time.Now().AddDate(0, 0, 2).In(berlin).Format("2006-01-02")
	b, h := leaverCE(t, map[string]any{"time": time.Now().UTC().Format("2006-01-02T15:04:05+0000")},
		map[string]any{"external_id": "E-7", "effective_at": day})
	if code, body := e.post("/events", h, b); code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	e.waitMapped()
	jobs := e.jobs()
	d, _ := time.ParseInLocation("2006-01-02", day, berlin)
	if len(jobs) != 1 || jobs[0]["not_before"] != d.AddDate(0, 0, 1).UTC().Format(time.RFC3339) {
		t.Fatalf("jobs %v", jobs)
	}
}

// TestCloudEventsBinaryMode: attributes in ce-* headers and the data as
// the body make the same offboard as the structured form; a batch is 415.
func TestCloudEventsBinaryMode(t *testing.T) {
	e := newEnv(t)
	e.runMapper(e.s)
	data := []byte(`{"external_id":"E-42"}`)
	h := signCE(data, "msg_"+randomID(), time.Now(), ceKey)
	h.Set("Content-Type", "application/json")
	h.Set("Ce-Specversion", "1.0")
	h.Set("Ce-Id", "bin-1")
	h.Set("Ce-Source", "https://hr.example.com/a%20b")
	h.Set("Ce-Type", "io.mfaworker.person.left")
	if code, body := e.post("/events", h, data); code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	e.waitMapped()
	jobs := e.jobs()
	want := "hr:cloudevents:" + rules.CloudEventID("https://hr.example.com/a b", "bin-1") + ":person-left"
	if len(jobs) != 1 || jobs[0]["id"] != want || jobs[0]["user"].(map[string]any)["external_id"] != "E-42" {
		t.Fatalf("jobs %v, want id %s", jobs, want)
	}
	batch := []byte(`[]`)
	h = signCE(batch, "msg_"+randomID(), time.Now(), ceKey)
	h.Set("Content-Type", "application/cloudevents-batch+json")
	if code, body := e.post("/events", h, batch); code != http.StatusUnsupportedMediaType {
		t.Fatalf("batch: status %d: %s", code, body)
	}
}

// TestAbuseProtection: the CloudEvents webhook validation handshake.
func TestAbuseProtection(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AllowedOrigins = []string{"hr.example.com"} })
	req, _ := http.NewRequest(http.MethodOptions, e.http.URL+"/events", nil)
	req.Header.Set("WebHook-Request-Origin", "hr.example.com")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("WebHook-Allowed-Origin") != "hr.example.com" {
		t.Fatalf("allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
	req.Header.Set("WebHook-Request-Origin", "evil.example.net")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("WebHook-Allowed-Origin") != "" {
		t.Fatalf("other origin: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestHiBobPingAndAge: the ping, signed or not, is 200 and stores nothing;
// an unsigned body that is no ping is 401; a triggeredAt older than 24 h is
// 422.
func TestHiBobPingAndAge(t *testing.T) {
	e := newEnv(t)
	for _, ping := range []string{`"Ping test"`, `{"text":"Ping test"}`} {
		if code, body := e.post("/hooks/hibob", http.Header{"Content-Type": {"application/json"}}, []byte(ping)); code != 200 {
			t.Errorf("unsigned %s: %d %s", ping, code, body)
		}
		if code, body := e.post("/hooks/hibob", signHiBob([]byte(ping), hibobKey), []byte(ping)); code != 200 {
			t.Errorf("signed %s: %d %s", ping, code, body)
		}
	}
	if code, _ := e.post("/hooks/hibob", http.Header{"Content-Type": {"application/json"}}, []byte(`{"text":"Pong"}`)); code != 401 {
		t.Errorf("unsigned non-ping: %d", code)
	}
	old := jsonBody(t, map[string]any{"companyId": 1, "type": "employee.left", "triggeredAt": time.Now().Add(-25 * time.Hour).UTC().Format(time.RFC3339),
		"data": map[string]any{"employeeId": "9"}})
	code, body := e.post("/hooks/hibob", signHiBob(old, hibobKey), old)
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "triggeredAt") {
		t.Errorf("old event: %d %s", code, body)
	}
	if n := e.storedEvents(); n != 0 {
		t.Fatalf("%d events stored", n)
	}
}

// countingBody records whether anything read it.
type countingBody struct {
	n atomic.Int64
	r io.Reader
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingBody) Close() error { return nil }

// TestHeadersBeforeBody: without signature headers, with a stale
// timestamp, or with a wrong SCIM token, nothing of the body is read (from
// HiBob without a signature, at most what tells its ping).
func TestHeadersBeforeBody(t *testing.T) {
	e := newEnv(t)
	stale := signCE([]byte("{}"), "m", time.Now().Add(-time.Hour), ceKey)
	cases := []struct {
		path string
		h    http.Header
	}{
		{"/events", http.Header{"Content-Type": {"application/cloudevents+json"}}},
		{"/events", stale},
		{"/hooks/bamboohr", http.Header{"Content-Type": {"application/json"}}},
		{"/hooks/hibob", http.Header{"Content-Type": {"application/json"}}},
		{"/scim/v2/Users", http.Header{"Authorization": {"Bearer wrong"}, "Content-Type": {"application/scim+json"}}},
	}
	for _, c := range cases {
		body := &countingBody{r: strings.NewReader(strings.Repeat("x", 1<<20))}
		req := httptest.NewRequest(http.MethodPost, c.path, body)
		req.Header = c.h
		req.RemoteAddr = "192.0.2.1:1000"
		w := httptest.NewRecorder()
		e.s.Handler().ServeHTTP(w, req)
		allowed := int64(0)
		if c.path == "/hooks/hibob" {
			allowed = maxPing + 1 // enough to tell HiBob's unsigned ping
		}
		if w.Code != http.StatusUnauthorized || body.n.Load() > allowed {
			t.Errorf("%s: status %d, %d bytes read", c.path, w.Code, body.n.Load())
		}
	}
}

// TestAuthThrottle: 3,000 wrong SCIM tokens from one address are throttled
// (429 past the budget) and counted; a right token from another address is
// not, nor a right token sent over and over.
func TestAuthThrottle(t *testing.T) {
	e := newEnv(t)
	send := func(addr, token string) int {
		req := httptest.NewRequest(http.MethodGet, "/scim/v2/Users?filter="+`userName%20eq%20%22a%40example.com%22`, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.RemoteAddr = addr
		w := httptest.NewRecorder()
		e.s.Handler().ServeHTTP(w, req)
		return w.Code
	}
	codes := map[int]int{}
	for range 3000 {
		codes[send("198.51.100.7:4000", "guess-"+randomID())]++
	}
	if codes[http.StatusUnauthorized] != 20 {
		t.Errorf("401s: %v", codes)
	}
	if codes[http.StatusTooManyRequests] != 3000-codes[http.StatusUnauthorized] {
		t.Errorf("codes %v", codes)
	}
	for range 50 {
		if code := send("198.51.100.8:4000", string(scimToken)); code != http.StatusOK {
			t.Fatalf("right token from another address: %d", code)
		}
	}
	if code := send("198.51.100.7:4001", string(scimToken)); code != http.StatusTooManyRequests {
		t.Errorf("the throttled address, right token: %d (it stays throttled for the minute)", code)
	}
	if got := e.counter("mfa_auth_failures_total", "listener", "ingest"); got < 3000 {
		t.Errorf("mfa_auth_failures_total{listener=ingest} = %v", got)
	}
	if got := e.counter("mfa_auth_failures_total", "listener", "status"); got != 0 {
		t.Errorf("status listener = %v", got)
	}
}

// TestSCIMDoor: a SCIM deactivation the rules cannot make a valid job of
// is answered 400 invalidValue and changes nothing.
func TestSCIMDoor(t *testing.T) {
	set, err := rules.Parse([]byte(`
rules:
  - name: scim-by-email
    when: event.source == "scim"
    job:
      type: '"offboard"'
      user: '{"email": event.data.userName}'
`), "test")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Rules = set })
	id := e.scimCreate("*wild", "")
	code, m := e.scim("DELETE", "/scim/v2/Users/"+id, "")
	if code != http.StatusBadRequest || m["scimType"] != "invalidValue" || !strings.Contains(m["detail"].(string), "scim-by-email") {
		t.Fatalf("DELETE: %d %v", code, m)
	}
	if strings.Contains(m["detail"].(string), "*wild") {
		t.Errorf("detail echoes the value: %v", m)
	}
	if code, _ := e.scim("GET", "/scim/v2/Users/"+id, ""); code != http.StatusOK {
		t.Errorf("the user is gone after a refused delete: %d", code)
	}
	if n := e.storedEvents(); n != 0 {
		t.Fatalf("%d events stored", n)
	}
}

// TestByteBudget: a request waits for its share and gives up when its
// context ends; a request larger than the budget runs alone.
func TestByteBudget(t *testing.T) {
	b := newByteBudget(10)
	ctx := t.Context()
	if !b.acquire(ctx, 6) {
		t.Fatal("first")
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if b.acquire(short, 6) {
		t.Fatal("over the budget granted")
	}
	got := make(chan bool)
	go func() { got <- b.acquire(ctx, 6) }()
	b.release(6)
	if !<-got {
		t.Fatal("waiter not granted after the release")
	}
	b.release(6)
	if !b.acquire(ctx, 100) {
		t.Fatal("a large request alone refused")
	}
}

// TestEventThatKillsTheMapper: an event whose mapping dies on every
// delivery is dead-lettered (code mapper_died) after two observed deaths
// and never delivered again; another event is mapped meanwhile.
func TestEventThatKillsTheMapper(t *testing.T) {
	e := newEnv(t)
	b, h := leaverCE(t, nil, map[string]any{"external_id": "E-POISON"})
	if code, body := e.post("/events", h, b); code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	var deaths atomic.Int32
	killer := func(ev rules.Event) bool {
		d, _ := ev.Data.(map[string]any)
		if d["external_id"] == "E-POISON" {
			deaths.Add(1)
			return true
		}
		return false
	}
	// The first delivery dies unrecorded (before any attempt record) as
	// a killed process would: no ack, no nak.
	first := e.newServer()
	first.beforeAck = func(ev rules.Event) bool { return false }
	stop := e.runMapper(first)
	e.waitFor("the first delivery", func() bool {
		info, err := first.objs.Consumer.Info(context.Background())
		return err == nil && info.Delivered.Consumer >= 1
	})
	stop()
	s := e.newServer()
	s.crash = killer
	e.runMapper(s)
	e.waitFor("the dead letter", func() bool { return len(e.msgs("TEST_DLQ")) == 1 })
	d := e.msgs("TEST_DLQ")[0]
	if d.Header.Get("Mfa-Error-Code") != "mapper_died" {
		t.Fatalf("dead letter %v", d.Header)
	}
	n := deaths.Load()
	if n != maxDeaths {
		t.Errorf("%d deaths before the dead letter, want %d", n, maxDeaths)
	}
	// Terminated: never delivered again; a sound event still maps.
	b2, h2 := leaverCE(t, nil, map[string]any{"external_id": "E-FINE"})
	if code, body := e.post("/events", h2, b2); code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	e.waitFor("the sound event's job", func() bool {
		for _, j := range e.jobs() {
			if j["user"].(map[string]any)["external_id"] == "E-FINE" {
				return true
			}
		}
		return false
	})
	info, err := s.objs.Consumer.Info(context.Background())
	if err != nil || info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer %+v %v", info, err)
	}
	if deaths.Load() != n {
		t.Errorf("the poison event was mapped again after its dead letter")
	}
	if _, err := s.attempts.Get(context.Background(), "seq.1"); err == nil {
		t.Error("the attempt record outlived the dead letter")
	}
}

// TestIdleConnectionsClosed: a kept-alive connection idle past
// INGEST_IDLE_TIMEOUT is closed by the receiver, and past the connection
// cap new connections wait until one closes.
func TestIdleConnectionsClosed(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.IdleTimeout = 500 * time.Millisecond; c.MaxConnections = 2 })
	ln := e.serve()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("read after idle: %v, want EOF (closed by the receiver)", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v", d)
	}
	// Two connections fill the cap; a third is served once one closes.
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	third := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
		if err != nil {
			third <- -1
			return
		}
		resp.Body.Close()
		third <- resp.StatusCode
	}()
	select {
	case code := <-third:
		t.Fatalf("a third connection was served past the cap: %d", code)
	case <-time.After(300 * time.Millisecond):
	}
	a.Close()
	b.Close()
	if code := <-third; code != 200 {
		t.Fatalf("third connection: %d", code)
	}
}
