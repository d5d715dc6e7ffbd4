//go:build browser

package app

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"

	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// TestStatusPageOfTheRealWorker runs a known workload through the real
// worker (production wiring, status page on), then loads /status in
// headless Chromium and checks every number the page shows against a
// scrape of the same worker's /metrics, the known workload, and a person
// lookup against the jobs that person had.
func TestStatusPageOfTheRealWorker(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed (apt-get install -y chromium): ", err)
	}
	bed := newBed(t, simulator.Config{})
	w := serve(t, Config{
		NATSURL: bed.NATSURL(), OneLoginBaseURL: bed.SimURL, OneLoginClientID: bed.Sim.Config().ClientID,
		OneLoginClientSecret: bed.Sim.Config().ClientSecret, HTTPAddr: "127.0.0.1:0", Version: "1.2.3", StatusPage: true,
	})

	// The workload: user 42 enrolls and is offboarded (by id and by
	// email), two other users are offboarded with nothing to remove, a
	// remove for a user OneLogin does not know fails, a body that is not
	// JSON is rejected.
	const person = 42
	if _, err := testenv.RoundTrip(bed.NATSURL(), "enroll", testenv.Body("b-enroll", "enroll", person, map[string]any{"factor_name": "OneLogin SMS", "display_name": "Phone", "number": "+15551234567"}), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	jobs := []struct{ typ, body string }{
		{"offboard", testenv.Body("b-off-1", "offboard", person, nil)},
		{"offboard", `{"id":"b-off-2","type":"offboard","user":{"email":"user42@example.com"}}`},
		{"offboard", testenv.Body("b-off-3", "offboard", 7, nil)},
		{"offboard", testenv.Body("b-off-4", "offboard", 8, nil)},
		{"remove", testenv.Body("b-rm", "remove", 99999999999, map[string]any{"device_id": 1})},
		{"enroll", `{"id":"b-bad",`},
	}
	for _, j := range jobs {
		if err := testenv.PublishOne(context.Background(), bed.JS, j.typ, j.body, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until every job has its result, the history index has the
	// person's four, and the backlog gauges read 0.
	metrics := func() map[string]*dto.MetricFamily { return scrape(t, w.HTTPAddr) }
	testenv.Eventually(t, 30*time.Second, func() bool {
		fams := metrics()
		var pending float64
		for _, m := range fams["mfa_consumer_pending_messages"].GetMetric() {
			pending += m.GetGauge().GetValue()
		}
		return bed.Count(topology.StreamResults) == 6 && len(fams["mfa_consumer_pending_messages"].GetMetric()) == 2 && pending == 0
	}, func() string { return fmt.Sprintf("%d results", bed.Count(topology.StreamResults)) })

	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	bctx, cancelT := context.WithTimeout(bctx, 90*time.Second)
	defer cancelT()
	page := "http://" + w.HTTPAddr + "/status"

	if err := chromedp.Do(bctx,
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.CSS(`[data-k="remaining"]`)),
	); err != nil {
		t.Fatal(err)
	}
	shown, err := chromedp.Run(bctx, chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll('[data-k]')].map(e => [e.dataset.k, e.innerText.trim()]))`))
	if err != nil {
		t.Fatal(err)
	}
	want := testenv.StatusCells(metrics())
	for k, v := range want {
		if shown[k] != v {
			t.Errorf("the page shows %s = %q; /metrics says %q", k, shown[k], v)
		}
	}
	for k, v := range shown {
		if _, ok := want[k]; !ok && k != "resets-in" && !strings.HasPrefix(k, "dlq-held/") && !strings.HasPrefix(k, "lookup-") {
			t.Errorf("the page shows %s = %q, which /metrics does not have", k, v)
		}
	}
	known := map[string]string{
		"finished/succeeded": "2", "finished/noop": "3", "finished/failed": "1", "finished/rejected": "1",
		"dl/remove/user_not_found": "1", "dl/enroll/invalid_json": "1", "dl-total": "2",
		"dlq-held/remove": "1", "dlq-held/enroll": "1", "credentials": "ok",
		"pending/mfa-worker": "0", "pending/mfa-worker-urgent": "0",
	}
	for k, v := range known {
		if shown[k] != v {
			t.Errorf("after the known workload the page shows %s = %q, want %q", k, shown[k], v)
		}
	}
	if r := shown["resets-in"]; r == "" || r == "unknown" {
		t.Errorf("resets in %q: the pacer's window is known after the workload", r)
	}

	// A person lookup through the form shows that person's four jobs.
	if err := chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.CSS(`input[name="user"]`), strconv.Itoa(person)),
		chromedp.Click(chromedp.CSS(`form#person button`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-history]`)),
	); err != nil {
		t.Fatal(err)
	}
	hist, err := chromedp.Run(bctx, chromedp.Evaluate[[][]string](`[...document.querySelectorAll('[data-history]')].map(r => [...r.cells].map(c => c.innerText.trim()))`))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range hist {
		if len(r) > 4 {
			ids = append(ids, r[4])
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"b-enroll", "b-off-1", "b-off-2"}) {
		t.Errorf("the lookup of user %d shows jobs %q", person, ids)
	}
}
