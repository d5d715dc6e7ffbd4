package ingest_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/ingest"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/rules"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// The secrets of the end-to-end receivers, one per source.
var (
	e2eCEKey     = []byte("e2e-cloudevents-key-0123456789ab")
	e2eBambooKey = []byte("e2e-bamboohr-private-key")
	e2eHiBobKey  = []byte("e2e-hibob-signing-secret")
	e2eSCIMToken = []byte("e2e-scim-bearer-token")
)

// e2eLeaver is one source's leaver as a sender delivers it: send delivers
// it once more (delivery n, from 1) to the receiver at base and checks the
// answer.
type e2eLeaver struct {
	eventID string // the Hr-Event-Id it is stored under
	send    func(t *testing.T, base string, n int)
	// notBefore is the job's expected not_before ("" when none).
	notBefore string
}

// e2eCase is one HR source's leaver, end to end.
type e2eCase struct {
	name   string
	source string
	rule   string
	person simulator.DirectoryUser
	// user is the selector the job must carry.
	user job.User
	// leaver prepares the source's leaver (SCIM: creates and finds the
	// user first) against the receiver at base.
	leaver func(t *testing.T, base string, c e2eCase) e2eLeaver
}

// TestE2ELeaverEachSource: for each HR source, a correctly signed leaver
// event, delivered three times to one ingest process that is then killed
// between storing the event and mapping it, once more to a second process
// whose mapper is killed after storing the job and before acknowledging the
// event, and mapped again by a third, makes exactly one job, one offboard
// result for hr:<source>:<event id>:<rule>, outcome succeeded, and the
// person's factors removed, each once; a person whose identifiers share a
// prefix with the leaver's keeps theirs.
func TestE2ELeaverEachSource(t *testing.T) {
	cases := []e2eCase{{
		name: "cloudevents", source: ingest.SourceCloudEvents, rule: "person-left",
		person: simulator.DirectoryUser{ID: 601, Email: "ann@example.com", Username: "ann", ExternalID: "E-601"},
		user:   job.User{ExternalID: "E-601"},
		leaver: ceLeaver,
	}, {
		name: "bamboohr", source: ingest.SourceBambooHR, rule: "bamboohr-terminated",
		person: simulator.DirectoryUser{ID: 602, Email: "ben@example.com", Username: "ben", ExternalID: "1041"},
		user:   job.User{ExternalID: "1041"},
		leaver: bambooLeaver,
	}, {
		name: "hibob", source: ingest.SourceHiBob, rule: "hibob-left",
		person: simulator.DirectoryUser{ID: 603, Email: "cat@example.com", Username: "cat", ExternalID: "3332883884017713238"},
		user:   job.User{ExternalID: "3332883884017713238"},
		leaver: hibobLeaver,
	}, {
		name: "scim", source: ingest.SourceSCIM, rule: "scim-deactivated",
		person: simulator.DirectoryUser{ID: 604, Email: "dana@example.com", Username: "dana@example.com", ExternalID: "E-604"},
		user:   job.User{Email: "dana@example.com", ExternalID: "E-604"},
		leaver: scimLeaver,
	}, {
		// A SCIM user without externalId is offboarded by its userName
		// (an email, since it holds an @).
		name: "scim-username", source: ingest.SourceSCIM, rule: "scim-deactivated",
		person: simulator.DirectoryUser{ID: 605, Email: "eli@example.com", Username: "eli@example.com", ExternalID: "E-605"},
		user:   job.User{Email: "eli@example.com"},
		leaver: scimLeaver,
	}}
	set, err := rules.Load("../rules/testdata/examples.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runE2ELeaver(t, c, set) })
	}
}

func runE2ELeaver(t *testing.T, c e2eCase, set *rules.Set) {
	p := c.person
	// Someone whose identifiers start like the leaver's: a selector that
	// matched loosely would reach them.
	decoy := simulator.DirectoryUser{ID: p.ID + 1000, Email: "x" + p.Email, Username: p.Username + "0", ExternalID: p.ExternalID + "0"}
	p.Status, p.State, decoy.Status, decoy.State = 1, 1, 1, 1
	bed, logs := startE2EBed(t, []simulator.DirectoryUser{p, decoy})
	var devs []int64
	for _, f := range []string{"OneLogin SMS", "Google Authenticator"} {
		d, err := bed.Sim.EnrollDevice(p.ID, f, "Phone", true)
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	decoyDev, err := bed.Sim.EnrollDevice(decoy.ID, "OneLogin SMS", "Phone", true)
	if err != nil {
		t.Fatal(err)
	}

	// Every job publish, including those JetStream drops as duplicates.
	pubs := watchJobPublishes(t, bed.NATSURL())

	cfg := ingest.Config{
		Secrets:  ingest.Secrets{CloudEvents: e2eCEKey, BambooHR: e2eBambooKey, HiBob: e2eHiBobKey, SCIMToken: e2eSCIMToken},
		Rules:    set,
		Topology: ingest.Topology{AckWait: time.Second},
	}
	log := slog.New(slog.NewTextHandler(logs, nil))

	// The first process receives only: it stores the event, the sender
	// delivers it three times, and the process dies before mapping it.
	a := startIngestProc(t, bed, cfg, log, nil)
	l := c.leaver(t, a.url, c)
	for n := 1; n <= 3; n++ {
		l.send(t, a.url, n)
	}
	a.kill()
	if n := bed.Count(ingest.StreamEvents); n != 1 {
		t.Fatalf("after three deliveries: %d events stored, want 1", n)
	}
	if n := pubs.count(""); n != 0 {
		t.Fatalf("%d jobs published before any mapper ran", n)
	}
	if l.eventID == "" {
		// SCIM: the event is the transition, named by the user's id and
		// revision, which only the receiver knows.
		stored, err := testenv.ReadStream(context.Background(), bed.JS, ingest.StreamEvents)
		if err != nil || len(stored) != 1 {
			t.Fatalf("stored events: %v %v", stored, err)
		}
		l.eventID = stored[0].Header.Get(ingest.HeaderEventID)
	}

	// The second process gets the event once more, and its mapper dies
	// after storing the job, before acknowledging the event.
	jobID := "hr:" + c.source + ":" + l.eventID + ":" + c.rule
	reached := make(chan struct{}, 1)
	b := startIngestProc(t, bed, cfg, log, func(ev rules.Event) bool {
		if ev.Source == c.source && ev.ID == l.eventID {
			select {
			case reached <- struct{}{}:
			default:
			}
		}
		return false
	})
	l.send(t, b.url, 4)
	select {
	case <-reached:
	case <-time.After(20 * time.Second):
		t.Fatalf("the second mapper never mapped event %s; logs:\n%s", l.eventID, logs)
	}
	b.kill()
	pubs.await(t, jobID, "the second mapper reached its ack without publishing "+jobID)
	events := consumerState(t, bed.JS)
	if events.AckFloor.Stream != 0 {
		t.Fatalf("the event was acknowledged (ack floor %d) by a mapper that died before its ack", events.AckFloor.Stream)
	}

	// The third process maps it again: the same job id, which JetStream
	// keeps once.
	reg := prometheus.NewRegistry()
	startIngestProc(t, bed, cfg, log, func(rules.Event) bool { return true }, withMetrics(metrics.NewIngest(reg)))
	testenv.Eventually(t, 30*time.Second, func() bool {
		return counterValue(reg, "mfa_hr_events_total", "source", c.source, "result", "mapped") >= 1
	}, func() string { return "the third mapper to map the event" })
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := consumerInfo(bed.JS)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream >= 1
	}, func() string { return "mfa-ingest to acknowledge the event" })
	// The worker has taken and finished the one job message.
	testenv.Eventually(t, 30*time.Second, func() bool {
		return bed.Count(topology.StreamResults) >= 1 && bed.Count(topology.StreamJobs) == 0
	}, func() string {
		return fmt.Sprintf("%d results, %d jobs waiting", bed.Count(topology.StreamResults), bed.Count(topology.StreamJobs))
	})

	// One event, stored as the source sent it.
	stored, err := testenv.ReadStream(context.Background(), bed.JS, ingest.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 1 || stored[0].Subject != ingest.EventSubjectPrefix+c.source || stored[0].Header.Get(ingest.HeaderEventID) != l.eventID {
		t.Errorf("stored events: %d, first %+v", len(stored), stored)
	}

	// One job: published at least twice (the dying mapper's and the
	// third's), stored once.
	if err := testenv.WaitFor(5*time.Second, func() bool { return pubs.count(jobID) >= 2 }, func() string {
		return fmt.Sprintf("job %s published %d times: the event was never mapped again", jobID, pubs.count(jobID))
	}); err != nil {
		t.Error(err)
	}
	if n := pubs.count(""); n != pubs.count(jobID) {
		t.Errorf("publishes of other jobs: %v", pubs.ids())
	}
	if bad := pubs.mismatched(); len(bad) > 0 {
		t.Errorf("jobs published without their id as Nats-Msg-Id: %v", bad)
	}
	if seq := lastSeq(t, bed.JS, topology.StreamJobs); seq != 1 {
		t.Errorf("MFA_JOBS stored %d job messages, want 1", seq)
	}
	wantJob := map[string]any{
		"id": jobID, "type": "offboard", "user": selectorJSON(c.user), "source": "hr." + c.source,
	}
	if l.notBefore != "" {
		wantJob["not_before"] = l.notBefore
	}
	for i, body := range pubs.bodies(jobID) {
		var got map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("job body %s: %v", body, err)
		}
		if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(got["requested_at"])); err != nil {
			t.Errorf("job requested_at %v", got["requested_at"])
		}
		delete(got, "requested_at")
		if !reflect.DeepEqual(got, wantJob) {
			t.Errorf("publish %d of the job:\n got %v\nwant %v", i+1, got, wantJob)
		}
	}

	// One result: offboard, succeeded, the person resolved and their
	// factors removed.
	results, err := bed.Results()
	if err != nil {
		t.Fatal(err)
	}
	var mine []job.Result
	for _, r := range results {
		if r.JobID == jobID {
			mine = append(mine, r)
		}
	}
	if len(mine) != 1 || len(results) != 1 {
		t.Fatalf("%d results for %s (%d in all), want exactly 1: %+v", len(mine), jobID, len(results), results)
	}
	r := mine[0]
	if r.Type != job.TypeOffboard || r.Outcome != job.Succeeded || r.UserID != p.ID || r.Source != "hr."+c.source || r.Error != nil {
		t.Errorf("result %+v", r)
	}
	if r.User == nil || *r.User != c.user {
		t.Errorf("result's user %s, want %+v echoed", jsonOf(t, r.User), c.user)
	}
	var removed []int64
	ids, _ := r.Data["removed_device_ids"].([]any)
	for _, v := range ids {
		f, _ := v.(float64)
		removed = append(removed, int64(f))
	}
	slices.Sort(removed)
	if !slices.Equal(removed, devs) {
		t.Errorf("removed_device_ids %v, want %v", r.Data["removed_device_ids"], devs)
	}
	if d := bed.Sim.Devices(p.ID); len(d) != 0 {
		t.Errorf("the leaver still has %v", d)
	}
	if d := bed.Sim.Devices(decoy.ID); len(d) != 1 || d[0].ID != decoyDev {
		t.Errorf("the other person's factors: %v, want device %d kept", d, decoyDev)
	}
	removals := map[int64]int{}
	for _, e := range bed.Sim.Effects() {
		if e.Kind == simulator.EffectRemove {
			if e.UserID != p.ID {
				t.Errorf("a factor of user %d was removed", e.UserID)
			}
			removals[e.DeviceID]++
		}
	}
	for _, d := range devs {
		if removals[d] != 1 {
			t.Errorf("device %d removed %d times, want once", d, removals[d])
		}
	}
	if n := bed.Count(topology.StreamDLQ); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}

// ceLeaver is a CloudEvent io.mfaworker.person.left naming the person by
// external_id, signed the Standard Webhooks way; every delivery is signed
// anew with the same message id, as a sender retrying does.
func ceLeaver(t *testing.T, _ string, c e2eCase) e2eLeaver {
	ceSource, ceID := "https://hr.example.com/events", "evt-"+e2eRandom()
	body := jsonOf(t, map[string]any{
		"specversion": "1.0", "id": ceID, "source": ceSource, "type": "io.mfaworker.person.left",
		"time": time.Now().UTC().Format(time.RFC3339), "datacontenttype": "application/json",
		"data": map[string]any{"external_id": c.person.ExternalID},
	})
	msgID := "msg_" + e2eRandom()
	eventID := rules.CloudEventID(ceSource, ceID)
	return e2eLeaver{eventID: eventID, send: func(t *testing.T, base string, n int) {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, e2eCEKey)
		fmt.Fprintf(mac, "%s.%s.", msgID, ts)
		mac.Write(body)
		h := http.Header{
			"Content-Type": {"application/cloudevents+json"}, "Webhook-Id": {msgID}, "Webhook-Timestamp": {ts},
			"Webhook-Signature": {"v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))},
		}
		sendWebhook(t, base+"/events", h, body, n, eventID)
	}}
}

// bambooLeaver is a BambooHR "Employment Status" webhook terminating one
// employee as of yesterday, as the documented example rule expects it
// (employeeNumber is OneLogin's external_id).
func bambooLeaver(t *testing.T, _ string, c e2eCase) e2eLeaver {
	day := time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly)
	body := jsonOf(t, map[string]any{"employees": []any{map[string]any{
		"id": "41", "action": "Updated", "changedFields": []string{"employmentHistoryStatus", "terminationDate"},
		"fields": map[string]any{
			"employmentHistoryStatus": map[string]any{"value": "Terminated"},
			"employeeNumber":          map[string]any{"value": c.person.ExternalID},
			"terminationDate":         map[string]any{"value": day},
		},
	}}})
	eventID := hashHex(body)
	return e2eLeaver{eventID: eventID, notBefore: day + "T17:00:00Z", send: func(t *testing.T, base string, n int) {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, e2eBambooKey)
		mac.Write(body)
		mac.Write([]byte(ts))
		h := http.Header{
			"Content-Type": {"application/json"}, "X-Bamboohr-Timestamp": {ts},
			"X-Bamboohr-Signature": {hex.EncodeToString(mac.Sum(nil))},
		}
		sendWebhook(t, base+"/hooks/bamboohr", h, body, n, eventID)
	}}
}

// hibobLeaver is a HiBob v2 employee.left webhook naming the employee by
// data.employeeId.
func hibobLeaver(t *testing.T, _ string, c e2eCase) e2eLeaver {
	body := jsonOf(t, map[string]any{
		"companyId": 640, "type": "employee.left", "triggeredBy": "system",
		"triggeredAt": time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), "version": "v2",
		"data": map[string]any{"employeeId": c.person.ExternalID},
	})
	eventID := hashHex(body)
	return e2eLeaver{eventID: eventID, send: func(t *testing.T, base string, n int) {
		mac := hmac.New(sha512.New, e2eHiBobKey)
		mac.Write(body)
		h := http.Header{"Content-Type": {"application/json"}, "Bob-Signature": {base64.StdEncoding.EncodeToString(mac.Sum(nil))}}
		sendWebhook(t, base+"/hooks/hibob", h, body, n, eventID)
	}}
}

// scimLeaver follows an identity provider: it creates the user (with an
// externalId when the case's selector is one), finds it with a filtered
// GET, and its deliveries PATCH it to active=false.
func scimLeaver(t *testing.T, base string, c e2eCase) e2eLeaver {
	create := map[string]any{
		"schemas":  []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
		"userName": c.person.Username, "active": true, "name": map[string]any{"givenName": "Leaver"},
	}
	filter := `userName eq "` + c.person.Username + `"`
	if c.user.ExternalID != "" {
		create["externalId"] = c.user.ExternalID
		filter = `externalId eq "` + c.user.ExternalID + `"`
	}
	code, u := scimDo(t, http.MethodPost, base+"/scim/v2/Users", jsonOf(t, create))
	id, _ := u["id"].(string)
	if code != http.StatusCreated || id == "" {
		t.Fatalf("SCIM create: %d %v", code, u)
	}
	code, list := scimDo(t, http.MethodGet, base+"/scim/v2/Users?filter="+url.QueryEscape(filter), nil)
	res, _ := list["Resources"].([]any)
	if code != http.StatusOK || list["totalResults"] != float64(1) || len(res) != 1 || res[0].(map[string]any)["id"] != id {
		t.Fatalf("SCIM filter %s: %d %v", filter, code, list)
	}
	patch := []byte(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`)
	return e2eLeaver{send: func(t *testing.T, base string, n int) {
		code, u := scimDo(t, http.MethodPatch, base+"/scim/v2/Users/"+id, patch)
		if code != http.StatusOK || u["active"] != false || u["id"] != id {
			t.Fatalf("SCIM PATCH %d: %d %v", n, code, u)
		}
	}}
}

// sendWebhook posts a signed webhook and checks its answer: stored on the
// first delivery, a duplicate after, under eventID.
func sendWebhook(t *testing.T, url string, h http.Header, body []byte, n int, eventID string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ans struct {
		Status  string `json:"status"`
		EventID string `json:"event_id"`
	}
	_ = json.Unmarshal(b, &ans)
	want := "stored"
	if n > 1 {
		want = "duplicate"
	}
	if resp.StatusCode != http.StatusOK || ans.Status != want || ans.EventID != eventID {
		t.Fatalf("delivery %d: %d %s, want 200 %s with event_id %s", n, resp.StatusCode, b, want, eventID)
	}
}

func scimDo(t *testing.T, method, url string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+string(e2eSCIMToken))
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: answer not JSON: %s", method, url, b)
		}
	}
	return resp.StatusCode, m
}

// ingestProc is one `worker ingest` process: its own NATS connections, a
// receiver on httptest and, if asked, a mapper.
type ingestProc struct {
	url  string
	hs   *httptest.Server
	nc   *nats.Conn
	mc   *nats.Conn
	stop func()
	once sync.Once
}

type procOpt func(*ingest.Deps)

func withMetrics(m *metrics.Ingest) procOpt { return func(d *ingest.Deps) { d.Metrics = m } }

// startE2EBed starts a bed whose OneLogin directory holds dir, with a
// worker running on it, both until the test ends. The returned buffer is
// for the ingest processes' logs: a failed test prints it with the
// worker's.
func startE2EBed(t *testing.T, dir []simulator.DirectoryUser) (*testenv.Bed, *testenv.SyncBuffer) {
	t.Helper()
	bed, err := testenv.NewBed(simulator.Config{Directory: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bed.Close)
	logs := &testenv.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ingest logs:\n%s\nworker logs:\n%s", logs, bed.Logs)
		}
	})
	w, err := bed.StartWorker(jobs.DefaultConfig(), testenv.WorkerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Stop(); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	return bed, logs
}

// startIngestProc starts a process on the bed. mapper nil: the process
// only receives; else its mapper runs with mapper called before each ack
// (a func returning true is an ordinary mapper).
func startIngestProc(t *testing.T, bed *testenv.Bed, cfg ingest.Config, log *slog.Logger, mapper func(rules.Event) bool, opts ...procOpt) *ingestProc {
	t.Helper()
	p := &ingestProc{stop: func() {}}
	var err error
	if p.nc, err = nats.Connect(bed.NATSURL()); err != nil {
		t.Fatal(err)
	}
	if p.mc, err = nats.Connect(bed.NATSURL()); err != nil {
		p.nc.Close()
		t.Fatal(err)
	}
	t.Cleanup(p.kill)
	d := ingest.Deps{Conn: p.nc, MapperConn: p.mc, Log: log}
	for _, o := range opts {
		o(&d)
	}
	s, err := ingest.New(context.Background(), cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	p.hs = httptest.NewServer(s.Handler())
	p.url = p.hs.URL
	if mapper != nil {
		ingest.SetBeforeAck(s, mapper)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.RunMapper(ctx) }()
		p.stop = func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("mapper: %v", err)
			}
		}
	}
	return p
}

// kill ends the process: its mapper stops where it is (an event it did not
// acknowledge stays unacknowledged), its listener and connections close.
func (p *ingestProc) kill() {
	p.once.Do(func() {
		p.stop()
		if p.hs != nil {
			p.hs.CloseClientConnections()
			p.hs.Close()
		}
		p.mc.Close()
		p.nc.Close()
	})
}

// jobPublishes records every message published on mfa.jobs.>, as core
// NATS sees it: JetStream's duplicates too.
type jobPublishes struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func watchJobPublishes(t *testing.T, natsURL string) *jobPublishes {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	jp := &jobPublishes{}
	if _, err := nc.Subscribe(job.SubjectPrefix+">", func(m *nats.Msg) {
		jp.mu.Lock()
		jp.msgs = append(jp.msgs, m)
		jp.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return jp
}

// await waits until the watcher holds a publish of job id; what names the
// failure. The watcher's own connection may see a publish a moment after
// its publisher had the PubAck.
func (jp *jobPublishes) await(t testing.TB, id, what string) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() bool { return jp.count(id) > 0 }, func() string { return what })
}

// jobOf is the id of the last job published for the person of externalID,
// "" while there is none.
func (jp *jobPublishes) jobOf(externalID string) string {
	var id string
	for _, b := range jp.bodies("") {
		var j struct {
			ID   string   `json:"id"`
			User job.User `json:"user"`
		}
		if json.Unmarshal(b, &j) == nil && j.User.ExternalID == externalID {
			id = j.ID
		}
	}
	return id
}

// count is how many publishes carried job id (any job when "").
func (jp *jobPublishes) count(id string) int { return len(jp.bodies(id)) }

// bodies returns the bodies of the publishes of job id (any job when "").
func (jp *jobPublishes) bodies(id string) [][]byte {
	jp.mu.Lock()
	defer jp.mu.Unlock()
	var out [][]byte
	for _, m := range jp.msgs {
		if id == "" || bodyID(m.Data) == id {
			out = append(out, m.Data)
		}
	}
	return out
}

// mismatched lists the publishes whose Nats-Msg-Id is not their job id.
func (jp *jobPublishes) mismatched() []string {
	jp.mu.Lock()
	defer jp.mu.Unlock()
	var out []string
	for _, m := range jp.msgs {
		if h := m.Header.Get(jetstream.MsgIDHeader); h != bodyID(m.Data) {
			out = append(out, fmt.Sprintf("job %q with Nats-Msg-Id %q", bodyID(m.Data), h))
		}
	}
	return out
}

func (jp *jobPublishes) ids() []string {
	jp.mu.Lock()
	defer jp.mu.Unlock()
	var out []string
	for _, m := range jp.msgs {
		out = append(out, bodyID(m.Data))
	}
	return out
}

// bodyID is the id of a job body.
func bodyID(b []byte) string {
	var j struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &j)
	return j.ID
}

func consumerInfo(js jetstream.JetStream) (*jetstream.ConsumerInfo, error) {
	cons, err := js.Consumer(context.Background(), ingest.StreamEvents, ingest.ConsumerIngest)
	if err != nil {
		return nil, err
	}
	return cons.Info(context.Background())
}

func consumerState(t *testing.T, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	info, err := consumerInfo(js)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// lastSeq is the last sequence a stream ever stored: on a work queue, the
// number of messages stored since it was made.
func lastSeq(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// counterValue reads one counter series from reg (0 when absent).
func counterValue(reg *prometheus.Registry, name string, labels ...string) float64 {
	v, _ := testenv.Counter(reg, name, labels...)
	return v
}

// selectorJSON is a job's user selector as it decodes from JSON.
func selectorJSON(u job.User) map[string]any {
	var m map[string]any
	b, _ := json.Marshal(u)
	_ = json.Unmarshal(b, &m)
	return m
}

func jsonOf(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hashHex is the hex SHA-256 of the parts joined by NUL bytes: the event
// id of BambooHR and HiBob bodies and of SCIM requests.
func hashHex(parts ...[]byte) string {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func e2eRandom() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
