package status_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/status"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Values of the known workload.
const (
	person      = 9876501 // the person looked up
	personEmail = "ada.lovelace@example.com"
	personUser  = "alovelace"
	personExtID = "HR-000417"
	leaverOpen  = 9876503 // a leaver whose offboard failed
	otherPerson = 9876502
	secretState = "STATE-SECRET-e3b0c442"
	phone       = "+15557654321"
)

var fixedNow = time.Date(2026, 11, 26, 14, 30, 0, 0, time.UTC)

// fixture is a real NATS server with MFA_RESULTS, MFA_DLQ and MFA_HISTORY,
// a registry populated by the metrics package through a known workload, and
// the page and /metrics served side by side over HTTP.
type fixture struct {
	js         jetstream.JetStream
	leavers    *leaver.Store
	guard      *guard.Guard
	heldJobID  string // the person's offboard the guard holds
	offboardID string // the person's scheduled offboard
	dueAt      time.Time
	longID     string // an HR job id longer than a table cell
	retryJobID string // a job waiting for a retry
	nextRetry  time.Time
	srv        *httptest.Server
	resultIDs  []string        // in publish order
	results    []history.Entry // the same, as the page reads them
	personJobs []string        // the person's job ids in publish order
	dlqHeld    map[string]int
}

// fixedBudget is the pacer's view of the rate-limit window.
type fixedBudget time.Time

func (b fixedBudget) BudgetResetsAt() time.Time { return time.Time(b) }

func newFixture(t testing.TB, cfg status.Config) *fixture {
	t.Helper()
	ctx := context.Background()
	_, _, js := testenv.JetStream(t)
	for _, sc := range []jetstream.StreamConfig{
		{Name: status.ResultsStream, Subjects: []string{"mfa.results.>"}},
		{Name: status.DLQStream, Subjects: []string{"mfa.dlq.>"}},
	} {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	if err := history.Provision(ctx, js, history.Config{}); err != nil {
		t.Fatal(err)
	}
	store := history.New(js)
	f := &fixture{js: js, dlqHeld: map[string]int{"enroll": 2, "offboard": 1}}

	// Results: 25, the person's among them; each with data holding a
	// state token and a phone number that must never reach the page.
	types := []string{"enroll", "activate", "verify", "offboard", "remove"}
	outcomes := []string{"succeeded", "noop", "failed", "rejected", "expired"}
	f.longID = "bamboohr:" + strings.Repeat("7f3a9c2e-terminated-employee-", 4) + "offboard"
	for i := 0; i < 25; i++ {
		user := int64(otherPerson)
		if i%3 == 0 {
			user = person
		}
		typ, outcome := types[i%len(types)], outcomes[(i/2)%len(outcomes)]
		id := fmt.Sprintf("job-%02d-%s", i, typ)
		if i == 24 {
			id = f.longID
		}
		res := map[string]any{
			"job_id": id, "type": typ, "user_id": user, "outcome": outcome, "attempts": 1 + i%3,
			"started_at": fixedNow.Add(time.Duration(i-30) * time.Minute), "finished_at": fixedNow.Add(time.Duration(i-30)*time.Minute + 1200*time.Millisecond),
			"duration_ms": 1200, "correlation_id": "corr-" + strconv.Itoa(i), "source": "hr.test",
			"data": map[string]any{"device_id": 100 + i, "state_token": secretState, "phone_number": phone},
		}
		if outcome == "failed" || outcome == "rejected" || outcome == "expired" {
			res["error"] = map[string]any{"code": "code_" + outcome, "message": "m", "retryable": false}
		}
		b, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "mfa.results."+typ+"."+outcome, b, jetstream.WithMsgID(id+":result")); err != nil {
			t.Fatal(err)
		}
		e, err := history.EntryFromResult(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Append(ctx, e, id+":result"); err != nil {
			t.Fatal(err)
		}
		f.resultIDs = append(f.resultIDs, id)
		f.results = append(f.results, e)
		if user == person {
			f.personJobs = append(f.personJobs, id)
		}
	}
	for typ, n := range f.dlqHeld {
		for i := 0; i < n; i++ {
			if _, err := js.Publish(ctx, "mfa.dlq."+typ, []byte(`{"id":"x"}`)); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The known workload, recorded through the metrics package.
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.SetPending("mfa-worker-urgent", 7)
	m.SetPending("mfa-worker", 42)
	m.JobStarted("offboard")
	m.JobStarted("offboard")
	m.JobStarted("enroll")
	m.JobStarted("generate_token")
	m.JobStarted("verify")() // started and done
	for i := 0; i < 5; i++ {
		m.JobFinished("enroll", "succeeded", time.Second)
	}
	m.JobFinished("offboard", "noop", time.Second)
	m.JobFinished("remove", "failed", time.Second)
	m.DeadLetter("enroll", "invalid_json")
	m.DeadLetter("enroll", "invalid_json")
	m.DeadLetter("remove", "retries_exhausted")
	m.ObserveRateLimit(onelogin.RateLimit{Limit: 5000, Remaining: 4321, Reset: fixedNow.Add(37 * time.Second)})

	m.SetCredentialsOK(true)
	m.SetScheduled("offboard", 3)
	gatherer := prometheus.Gatherers{reg}

	// OneLogin knows the person by email, username and external id.
	sim := simulator.New(simulator.Config{Directory: []simulator.DirectoryUser{
		{ID: person, Email: personEmail, Username: personUser, ExternalID: personExtID, Firstname: "Ada", Lastname: "Lovelace", Status: 1},
		{ID: otherPerson, Email: "other@example.com", Username: "other", ExternalID: "HR-000418", Status: 1},
		{ID: leaverOpen, Email: "gone@example.com", Username: "gone", ExternalID: "HR-000419", Status: 1},
	}})
	olSrv := httptest.NewServer(sim)
	t.Cleanup(olSrv.Close)
	ol, err := onelogin.NewClient(onelogin.Config{BaseURL: olSrv.URL, ClientID: sim.Config().ClientID, ClientSecret: sim.Config().ClientSecret})
	if err != nil {
		t.Fatal(err)
	}

	// The leaver registry: the person's offboard is scheduled, another
	// leaver's offboard failed (open).
	lkv, err := leaver.ProvisionBucket(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	f.leavers = leaver.NewStore(lkv)
	f.offboardID = "bamboohr:evt-1207:offboard"
	f.dueAt = fixedNow.Add(36 * time.Hour).Truncate(time.Second)
	if err := f.leavers.Scheduled(ctx, leaver.Acceptance{JobID: f.offboardID, UserID: person, Source: "hr.test", HRSource: "bamboohr", EventID: "evt-1207",
		ReceivedAt: fixedNow.Add(-time.Hour), EffectiveAt: f.dueAt, DueAt: f.dueAt}); err != nil {
		t.Fatal(err)
	}
	if err := f.leavers.Accepted(ctx, leaver.Acceptance{JobID: "gone-offboard", UserID: leaverOpen, Source: "hr.test", ReceivedAt: fixedNow.Add(-2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.leavers.ApplyResult(ctx, leaver.Result{Seq: 1, JobID: "gone-offboard", UserID: leaverOpen, Outcome: "failed", ErrorCode: "onelogin_unavailable",
		Source: "hr.test", StartedAt: fixedNow.Add(-90 * time.Minute), FinishedAt: fixedNow.Add(-89 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	view := leaver.NewView(lkv, slog.New(slog.NewTextHandler(io.Discard, nil)))
	vctx, stopView := context.WithCancel(context.Background())
	viewDone := make(chan struct{})
	go func() { defer close(viewDone); _ = view.Run(vctx) }()
	t.Cleanup(func() { stopView(); <-viewDone })
	select {
	case <-view.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("the leaver view did not load")
	}

	// The guard, one offboard per source and hour: the second is held.
	gkv, err := guard.Provision(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	f.guard = guard.New(gkv, js, guard.Config{Limit: 1, Window: time.Hour})
	f.heldJobID = "hr.test:mass-termination-0002"
	for _, id := range []string{"hr.test:mass-termination-0001", f.heldJobID} {
		if _, err := f.guard.Admit(ctx, guard.Job{ID: id, Type: "offboard", Source: "hr.test", UserID: person, Body: []byte(`{}`), Time: fixedNow}, fixedNow); err != nil {
			t.Fatal(err)
		}
	}

	// The ledger: one job waits for its third delivery, one runs its
	// first, one has finished.
	ledgerKV, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: topology.BucketLedger, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	led := ledger.New(ledgerKV)
	f.retryJobID = "hr.test:enroll 'retrying'"
	f.nextRetry = time.Now().Add(90 * time.Second).UTC().Truncate(time.Second)
	for id, rec := range map[string]ledger.Record{
		f.retryJobID:   {State: ledger.Running, Type: "enroll", UserID: otherPerson, Attempts: 2, LastErrorCode: "rate_limited", NextRetryAt: f.nextRetry},
		"running-once": {State: ledger.Running, Type: "enroll", UserID: otherPerson},
		"done-after-2": {State: ledger.Finished, Type: "enroll", UserID: otherPerson, Attempts: 2, LastErrorCode: "rate_limited", NextRetryAt: f.nextRetry},
	} {
		if _, err := led.Create(ctx, id, rec); err != nil {
			t.Fatal(err)
		}
	}

	streams := status.NewStreams(js)
	h, err := status.New(cfg, status.Deps{
		Gatherer: gatherer, Results: streams, DeadLetters: streams, History: store,
		People: ops.NewResolver(ol), Leavers: status.Leavers{Store: f.leavers, View: view}, Held: f.guard, Retries: streams,
		Budget: fixedBudget(fixedNow.Add(37 * time.Second)), Now: func() time.Time { return fixedNow },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/status", h)
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func has(t testing.TB, g prometheus.Gatherer, name string) bool {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(fams, func(f *dto.MetricFamily) bool { return f.GetName() == name })
}

// scrape reads /metrics over HTTP, as Prometheus would.
func (f *fixture) scrape(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(f.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// expected computes, from a scrape of /metrics and from the streams, what
// every data-k cell of the page must show.
func (f *fixture) expected(t testing.TB) map[string]string {
	t.Helper()
	want := testenv.StatusCells(f.scrape(t))
	want["resets-in"] = "37s"

	st, err := f.js.Stream(context.Background(), status.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter("mfa.dlq.>"))
	if err != nil {
		t.Fatal(err)
	}
	for subj, n := range info.State.Subjects {
		want["dlq-held/"+strings.TrimPrefix(subj, "mfa.dlq.")] = testenv.Num(float64(n))
	}
	return want
}

// checkNumbers compares what the page shows with what /metrics and the
// streams say, and with the known workload, so that an empty or zeroed page
// cannot pass.
func (f *fixture) checkNumbers(t testing.TB, shown map[string]string) {
	t.Helper()
	want := f.expected(t)
	for k, w := range want {
		if got, ok := shown[k]; !ok {
			t.Errorf("the page does not show %s (/metrics: %s)", k, w)
		} else if got != w {
			t.Errorf("the page shows %s = %q, /metrics and the streams say %q", k, got, w)
		}
	}
	for k, got := range shown {
		if _, ok := want[k]; !ok && !strings.HasPrefix(k, "lookup-") {
			t.Errorf("the page shows %s = %q, which /metrics does not have", k, got)
		}
	}
	known := map[string]string{
		"pending/mfa-worker-urgent": "7", "pending/mfa-worker": "42",
		"lane-inflight/urgent": "2", "lane-inflight/normal": "2", "inflight/offboard": "2", "inflight/verify": "0",
		"remaining": "4321", "resets-in": "37s", "finished/succeeded": "5", "finished/failed": "1", "finished/noop": "1",
		"dl/enroll/invalid_json": "2", "dl/remove/retries_exhausted": "1", "dl-total": "3",
		"dlq-held/enroll": "2", "dlq-held/offboard": "1",
		"credentials": "ok", "scheduled/offboard": "3", "scheduled-total": "3",
	}
	for k, w := range known {
		if shown[k] != w {
			t.Errorf("after the known workload the page shows %s = %q, want %q", k, shown[k], w)
		}
	}
}

// newestFirst returns ids reversed, cut to n.
func newestFirst(ids []string, n int) []string {
	r := slices.Clone(ids)
	slices.Reverse(r)
	return r[:min(n, len(r))]
}

// rows returns what the page's tables show for entries, newest first, cut to
// n; withContext adds the correlation id and source of history rows.
func rows(es []history.Entry, n int, withContext bool) [][]string {
	var out [][]string
	for i := len(es) - 1; i >= 0 && len(out) < n; i-- {
		e := es[i]
		code := history.EscapeControls(e.DisplayCode())
		if code == "" {
			code = "–"
		}
		r := []string{e.FinishedAt.UTC().Format("2006-01-02 15:04:05Z"), e.Type, e.Outcome, code}
		if !withContext {
			r = append(r, strconv.FormatInt(e.UserID, 10))
		}
		r = append(r, shortened(e.JobID), strconv.Itoa(e.Attempts), (time.Duration(e.DurationMS) * time.Millisecond).String())
		if withContext {
			r = append(r, e.CorrelationID, e.Source)
		}
		out = append(out, r)
	}
	return out
}

// shortened is how a table cell shows a long id: its first 18 characters
// and an ellipsis (the full id is in the cell's title).
func shortened(id string) string {
	if len(id) <= 20 {
		return id
	}
	return id[:18] + "…"
}

// scheduleRuns applies the person's offboard result to the registry, as
// the indexer does when the scheduled offboard has run.
func (f *fixture) scheduleRuns(t testing.TB) {
	t.Helper()
	_, _, err := f.leavers.ApplyResult(context.Background(), leaver.Result{Seq: 2, JobID: f.offboardID, UserID: person, Outcome: "succeeded",
		Source: "hr.test", StartedAt: f.dueAt, FinishedAt: f.dueAt.Add(2 * time.Second), Removed: 2, RemovedTypes: []string{"Google Authenticator", "SMS"}})
	if err != nil {
		t.Fatal(err)
	}
}
