package ingest_test

import (
	"bytes"
	"context"
	"crypto/hmac"
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
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/bamboohr"
	"github.com/mfa-worker/mfa-worker/internal/ingest"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/rules"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// vendorFixture is one file of testdata/vendors: a payload or request
// sequence as its vendor documents it (source holds the pages), the OneLogin
// person it names, and what must come of it.
type vendorFixture struct {
	name      string
	Source    []string           `json:"source"`
	About     string             `json:"about"`
	Vendor    string             `json:"vendor"`
	Person    job.User           `json:"person"`
	Lookalike *job.User          `json:"lookalike"`
	BambooAPI *bamboohr.Employee `json:"bamboohr_api"`
	Body      json.RawMessage    `json:"body"`
	// BodyText is a body that is not JSON, sent as it is.
	BodyText string `json:"body_text"`
	// Needs names the receiver feature the fixture exercises beyond the
	// source's own path ("door": decided at the door, HiBob's ping and
	// triggeredAt check).
	Needs string `json:"needs"`
	// Mode "binary" sends a CloudEvent in binary content mode, CE its
	// ce-* headers.
	Mode   string            `json:"mode"`
	CE     map[string]string `json:"ce"`
	Steps  []scimStep        `json:"steps"`
	Expect struct {
		Status    int            `json:"status"`
		Offboards int            `json:"offboards"`
		Stored    *int           `json:"stored"`
		NotBefore string         `json:"not_before"`
		User      map[string]any `json:"user"`
		Outcome   string         `json:"outcome"`
		Code      string         `json:"code"`
		// Scheduled is the due time of an offboard that must wait as a
		// schedule in MFA_JOBS.
		Scheduled string `json:"scheduled"`
	} `json:"expect"`
}

// scimStep is one request of an identity provider's sequence, or a pause
// of the test: wait for n offboards, or enroll a factor meanwhile.
type scimStep struct {
	Method        string          `json:"method"`
	Path          string          `json:"path"`
	Body          json.RawMessage `json:"body"`
	Status        int             `json:"status"`
	Save          string          `json:"save"`
	Total         *int            `json:"total"`
	Has           map[string]any  `json:"has"`
	Absent        []string        `json:"absent"`
	WaitOffboards int             `json:"wait_offboards"`
	Enroll        string          `json:"enroll"`
}

const vendorAPIKey = "e2e-bamboohr-api-key"

func loadVendorFixtures(t *testing.T) []*vendorFixture {
	t.Helper()
	files, err := filepath.Glob("testdata/vendors/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	var out []*vendorFixture
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fx := &vendorFixture{name: strings.TrimSuffix(filepath.Base(f), ".json")}
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		if err := d.Decode(fx); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(fx.Source) == 0 || !strings.HasPrefix(fx.Source[0], "https://") {
			t.Fatalf("%s does not say which vendor page it comes from", f)
		}
		out = append(out, fx)
	}
	return out
}

// fill replaces a fixture's placeholders: times relative to now (DATE is
// yesterday, DATE_END the end of that day in UTC) and saved SCIM ids.
func fillFixture(s string, now time.Time, saved map[string]string) string {
	day := now.UTC().AddDate(0, 0, -1)
	r := []string{
		"{{NOW}}", now.UTC().Format(time.RFC3339),
		"{{NOW_BASIC}}", now.UTC().Format("2006-01-02T15:04:05-0700"),
		"{{NOW_MS}}", now.UTC().Format("2006-01-02T15:04:05.000Z"),
		"{{OLD_MS}}", now.UTC().Add(-25 * time.Hour).Format("2006-01-02T15:04:05.000Z"),
		"{{DATE}}", day.Format(time.DateOnly),
		"{{DATE_END}}", day.AddDate(0, 0, 1).Format(time.DateOnly) + "T00:00:00Z",
		"{{DATE_AHEAD}}", day.AddDate(0, 0, 3).Format(time.DateOnly),
		"{{DATE_AHEAD_END}}", day.AddDate(0, 0, 4).Format(time.DateOnly) + "T00:00:00Z",
	}
	for k, v := range saved {
		r = append(r, "{"+k+"}", v)
	}
	return strings.NewReplacer(r...).Replace(s)
}

// TestVendorFixtures: every payload and request sequence that BambooHR,
// HiBob, CloudEvents senders, Microsoft Entra ID and Okta document, sent to
// one ingest process on a real NATS server, with the worker executing
// against the OneLogin simulator and BambooHR's API simulated, ends as its
// fixture says: the right person offboarded the expected number of times
// (each time their factors removed, at the right not_before), or a 4xx at
// the door with nothing stored, or stored and ignored; never a 2xx followed
// by a dead letter. Look-alikes keep their factors.
func TestVendorFixtures(t *testing.T) {
	fixtures := loadVendorFixtures(t)
	var dir []simulator.DirectoryUser
	persons := map[string]int64{}
	lookalikes := map[string]int64{}
	for i, fx := range fixtures {
		p := fx.Person
		id := int64(800 + 2*i)
		dir = append(dir, simulator.DirectoryUser{ID: id, Email: p.Email, Username: p.Username, ExternalID: p.ExternalID, Status: 1, State: 1})
		persons[fx.name] = id
		if l := fx.Lookalike; l != nil {
			dir = append(dir, simulator.DirectoryUser{ID: id + 1, Email: l.Email, Username: l.Username, ExternalID: l.ExternalID, Status: 1, State: 1})
			lookalikes[fx.name] = id + 1
		}
	}
	bed, logs := startE2EBed(t, dir)
	now := time.Now()
	bsim := bamboohr.NewSimulator(vendorAPIKey)
	for _, fx := range fixtures {
		if e := fx.BambooAPI; e != nil {
			bsim.Put(bamboohr.Employee{ID: e.ID, Status: e.Status, TerminationDate: fillFixture(e.TerminationDate, now, nil)})
		}
	}
	bhs := httptest.NewServer(bsim)
	t.Cleanup(bhs.Close)

	pubs := watchJobPublishes(t, bed.NATSURL())
	cfg := ingest.Config{
		Secrets: ingest.Secrets{CloudEvents: e2eCEKey, BambooHR: e2eBambooKey, HiBob: e2eHiBobKey, SCIMToken: e2eSCIMToken,
			BambooHRAPIKey: []byte(vendorAPIKey)},
		BambooHRBaseURL: bhs.URL,
		PublicURL:       "https://ingest.example.com",
		Topology:        ingest.Topology{AckWait: 5 * time.Second},
	}
	proc := startIngestProc(t, bed, cfg, slog.New(slog.NewTextHandler(logs, nil)), func(rules.Event) bool { return true })

	// scheduled counts the offboards that wait as schedules in MFA_JOBS.
	scheduled := 0
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			runVendorFixture(t, bed, proc.url, pubs, fx, persons[fx.name], lookalikes[fx.name], &scheduled)
		})
	}
	// A leaver the worker refused (identity_ambiguous) is dead-lettered
	// as a job; an event the rules failed on after its 2xx never is.
	dlq, err := testenv.ReadStream(context.Background(), bed.JS, "MFA_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range dlq {
		if m.Subject == ingest.DLQSubject {
			t.Errorf("an event was dead-lettered after its 2xx: %s %s", m.Header.Get("Mfa-Error-Code"), m.Header.Get("Mfa-Reason"))
		}
	}
	if n := bed.Count(ingest.StreamEvents); n == 0 {
		t.Error("no event stored at all")
	}
}

func runVendorFixture(t *testing.T, bed *testenv.Bed, base string, pubs *jobPublishes, fx *vendorFixture, person, lookalike int64, scheduled *int) {
	t.Logf("%s (%s)", fx.About, fx.Source[0])
	now := time.Now()
	var devs []int64
	enroll := func(uid int64, factor string) int64 {
		d, err := bed.Sim.EnrollDevice(uid, factor, "Phone", true)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	devs = append(devs, enroll(person, "OneLogin SMS"), enroll(person, "Google Authenticator"))
	var lookDev int64
	if lookalike != 0 {
		lookDev = enroll(lookalike, "OneLogin SMS")
	}
	resultsBefore := mustResults(t, bed)
	storedBefore := bed.Count(ingest.StreamEvents)
	mine := func() []job.Result {
		var out []job.Result
		for _, r := range mustResults(t, bed)[len(resultsBefore):] {
			if r.Source == "hr."+fx.Vendor {
				out = append(out, r)
			}
		}
		return out
	}
	waitResults := func(n int) []job.Result {
		t.Helper()
		var got []job.Result
		testenv.Eventually(t, 30*time.Second, func() bool { got = mine(); return len(got) >= n }, func() string {
			return fmt.Sprintf("%d results of %s jobs, want %d", len(got), fx.Vendor, n)
		})
		return got
	}
	// removedSoFar: every offboard result must remove exactly the factors
	// the person had when it ran.
	checked := 0
	checkOffboards := func(n int) {
		t.Helper()
		rs := waitResults(n)
		for ; checked < n; checked++ {
			r := rs[checked]
			if r.Type != job.TypeOffboard || r.Outcome != job.Succeeded || r.UserID != person || r.Error != nil {
				t.Fatalf("result %d: %s", checked+1, jsonOf(t, r))
			}
			var removed []int64
			ids, _ := r.Data["removed_device_ids"].([]any)
			for _, v := range ids {
				f, _ := v.(float64)
				removed = append(removed, int64(f))
			}
			slices.Sort(removed)
			if !slices.Equal(removed, devs) {
				t.Errorf("offboard %d removed %v, want %v", checked+1, removed, devs)
			}
			devs = nil
			if fx.Expect.User != nil {
				var got map[string]any
				_ = json.Unmarshal(jsonOf(t, r.User), &got)
				if !reflect.DeepEqual(got, fx.Expect.User) {
					t.Errorf("offboard %d named %v, want %v", checked+1, got, fx.Expect.User)
				}
			}
			if want := fillFixture(fx.Expect.NotBefore, now, nil); want != "" {
				pubs.await(t, r.JobID, "the publish of job "+r.JobID)
				for _, b := range pubs.bodies(r.JobID) {
					var j struct {
						NotBefore string `json:"not_before"`
					}
					_ = json.Unmarshal(b, &j)
					if j.NotBefore != want {
						t.Errorf("job %s not_before %q, want %q", r.JobID, j.NotBefore, want)
					}
				}
			}
		}
		if d := bed.Sim.Devices(person); len(d) != 0 {
			t.Errorf("after %d offboards the person still has %v", n, d)
		}
	}

	if fx.Steps == nil {
		body := fx.BodyText
		if body == "" {
			body = fillFixture(string(fx.Body), now, nil)
		}
		code, answer := sendVendor(t, base, fx, body, now)
		if code != fx.Expect.Status {
			t.Fatalf("answer %d %s, want %d", code, answer, fx.Expect.Status)
		}
	}
	saved := map[string]string{}
	for i, st := range fx.Steps {
		switch {
		case st.WaitOffboards > 0:
			checkOffboards(st.WaitOffboards)
			continue
		case st.Enroll != "":
			devs = append(devs, enroll(person, st.Enroll))
			continue
		}
		var body []byte
		if st.Body != nil {
			body = []byte(fillFixture(string(st.Body), now, saved))
		}
		path := fillFixture(st.Path, now, saved)
		if p, q, ok := strings.Cut(path, "?"); ok {
			v, err := url.ParseQuery(q)
			if err != nil {
				t.Fatal(err)
			}
			path = p + "?" + v.Encode()
		}
		code, ans := scimDo(t, st.Method, base+"/scim/v2"+path, body)
		if code != st.Status {
			t.Fatalf("step %d %s %s: %d %v, want %d", i+1, st.Method, path, code, ans, st.Status)
		}
		if st.Save != "" {
			id, _ := ans["id"].(string)
			if id == "" {
				t.Fatalf("step %d: no id in %v", i+1, ans)
			}
			saved[st.Save] = id
			meta, _ := ans["meta"].(map[string]any)
			loc := "https://ingest.example.com/scim/v2" + strings.Split(st.Path, "?")[0] + "/" + id
			if meta["location"] != loc {
				t.Errorf("step %d: meta.location %v, want %s", i+1, meta["location"], loc)
			}
		}
		if st.Total != nil && ans["totalResults"] != float64(*st.Total) {
			t.Errorf("step %d: totalResults %v, want %d", i+1, ans["totalResults"], *st.Total)
		}
		for k, want := range st.Has {
			var w any
			_ = json.Unmarshal([]byte(fillFixture(string(jsonOf(t, want)), now, saved)), &w)
			if !reflect.DeepEqual(ans[k], w) {
				t.Errorf("step %d: %s is %v, want %v", i+1, k, ans[k], w)
			}
		}
		for _, k := range st.Absent {
			if _, ok := ans[k]; ok {
				t.Errorf("step %d: the answer holds %s", i+1, k)
			}
		}
	}

	switch {
	case fx.Expect.Outcome != "":
		rs := waitResults(1)
		r := rs[0]
		if string(r.Outcome) != fx.Expect.Outcome || r.Error == nil || r.Error.Code != fx.Expect.Code {
			t.Errorf("result %s, want %s %s", jsonOf(t, r), fx.Expect.Outcome, fx.Expect.Code)
		}
	case fx.Expect.Offboards > 0:
		checkOffboards(fx.Expect.Offboards)
	}
	// Nothing more: every stored event mapped, and no other result.
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := consumerInfo(bed.JS)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, func() string { return "mfa-ingest to acknowledge every event" })
	want := fx.Expect.Offboards
	if fx.Expect.Outcome != "" {
		want = 1
	}
	if due := fillFixture(fx.Expect.Scheduled, now, nil); due != "" {
		// The offboard waits as a schedule on mfa.scheduled.offboard.<id>
		// in MFA_JOBS, due at the end of the termination date.
		*scheduled++
		// The watcher sees the publish on its own connection, which may
		// be a moment after ingest acknowledged the event.
		var jobID string
		testenv.Eventually(t, 10*time.Second, func() bool { jobID = pubs.jobOf(fx.Person.ExternalID); return jobID != "" },
			func() string { return "the published offboard of external id " + fx.Person.ExternalID })
		st, err := bed.JS.Stream(context.Background(), "MFA_JOBS")
		if err != nil {
			t.Fatal(err)
		}
		var m *jetstream.RawStreamMsg
		testenv.Eventually(t, 10*time.Second, func() bool {
			m, err = st.GetLastMsgForSubject(context.Background(), job.ScheduledSubject(job.TypeOffboard, jobID))
			return err == nil
		}, func() string { return "the offboard's schedule: " + fmt.Sprint(err) })
		if at, ok := jobs.ScheduleDue(m); !ok || at.Format(time.RFC3339) != due {
			t.Errorf("the offboard's schedule is due at %v, want %s", at, due)
		}
		if d := bed.Sim.Devices(person); len(d) != len(devs) {
			t.Errorf("a scheduled offboard removed factors early: %v left of %v", d, devs)
		}
	}
	if err := testenv.WaitFor(5*time.Second, func() bool { return bed.Count("MFA_JOBS") == *scheduled }, func() string { return "jobs waiting" }); err != nil {
		t.Error(err)
	}
	if got := mine(); len(got) != want {
		t.Errorf("%d results, want %d: %s", len(got), want, jsonOf(t, got))
	}
	if fx.Expect.Stored != nil {
		if n := bed.Count(ingest.StreamEvents) - storedBefore; n != *fx.Expect.Stored {
			t.Errorf("%d events stored, want %d", n, *fx.Expect.Stored)
		}
	}
	if lookalike != 0 {
		if d := bed.Sim.Devices(lookalike); len(d) != 1 || d[0].ID != lookDev {
			t.Errorf("the look-alike's factors: %v, want %d kept", d, lookDev)
		}
	}
	if want == 0 || fx.Expect.Outcome != "" {
		if d := bed.Sim.Devices(person); len(d) != len(devs) {
			t.Errorf("the person's factors: %v, want %v kept", d, devs)
		}
	}
}

func mustResults(t *testing.T, bed *testenv.Bed) []job.Result {
	t.Helper()
	rs, err := bed.Results()
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// sendVendor signs and posts a webhook body as its vendor does.
func sendVendor(t *testing.T, base string, fx *vendorFixture, body string, now time.Time) (int, string) {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	var path string
	switch fx.Vendor {
	case ingest.SourceBambooHR:
		path = "/hooks/bamboohr"
		// BambooHR's timestamp: ISO 8601, in both offset forms.
		ts := now.UTC().Format("2006-01-02T15:04:05+00:00")
		if strings.Contains(body, `"employeeId"`) {
			ts = now.UTC().Format("2006-01-02T15:04:05-0700")
		}
		mac := hmac.New(sha256.New, e2eBambooKey)
		mac.Write([]byte(body))
		mac.Write([]byte(ts))
		h.Set("X-BambooHR-Timestamp", ts)
		h.Set("X-BambooHR-Signature", hex.EncodeToString(mac.Sum(nil)))
	case ingest.SourceHiBob:
		path = "/hooks/hibob"
		mac := hmac.New(sha512.New, e2eHiBobKey)
		mac.Write([]byte(body))
		h.Set("Bob-Signature", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	case ingest.SourceCloudEvents:
		path = "/events"
		msgID, ts := "msg_"+e2eRandom(), strconv.FormatInt(now.Unix(), 10)
		mac := hmac.New(sha256.New, e2eCEKey)
		fmt.Fprintf(mac, "%s.%s.", msgID, ts)
		mac.Write([]byte(body))
		h.Set("Content-Type", "application/cloudevents+json")
		if fx.Mode == "binary" {
			h.Set("Content-Type", "application/json")
			for k, v := range fx.CE {
				h.Set(k, fillFixture(v, now, nil))
			}
		}
		h.Set("Webhook-Id", msgID)
		h.Set("Webhook-Timestamp", ts)
		h.Set("Webhook-Signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	default:
		t.Fatalf("unknown vendor %s", fx.Vendor)
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+path, strings.NewReader(body))
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
	return resp.StatusCode, string(b)
}
