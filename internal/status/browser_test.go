//go:build browser

package status_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/status"
)

// Screenshots of the page, for the README and docs/status-page.md.
var (
	screenshot       = filepath.Join("..", "..", "docs", "status.png")
	screenshotPerson = filepath.Join("..", "..", "docs", "status-person.png")
)

// browser starts headless Chromium (Debian's chromium package) at the
// width the page must fit.
func browser(t *testing.T) context.Context {
	t.Helper()
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed (apt-get install -y chromium): ", err)
	}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // the CI runs as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(cancelCtx)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestStatusPageInChromium loads the page in headless Chromium, checks
// each section after a known workload (numbers equal to /metrics and the
// streams; work in progress; recent results with their person, filtered
// through the form; no horizontal overflow at 1,280 px with a long HR job
// id), and saves a screenshot.
func TestStatusPageInChromium(t *testing.T) {
	f := newFixture(t, status.Config{Refresh: 5 * time.Minute, Version: "dev"})
	ctx := browser(t)

	if err := chromedp.Do(ctx,
		chromedp.Navigate(f.srv.URL+"/status"),
		chromedp.WaitVisible(chromedp.CSS(`[data-k="remaining"]`)),
	); err != nil {
		t.Fatal(err)
	}
	if title := run(t, ctx, chromedp.Title()); title != "mfa-worker status" {
		t.Errorf("title %q", title)
	}
	f.checkNumbers(t, run(t, ctx, chromedp.Evaluate[map[string]string](cellsJS)))

	// Recent results: each with its person, long ids cut with the full id
	// on hover, and the page no wider than the window.
	recent := run(t, ctx, chromedp.Evaluate[[][]string](rowsJS("data-recent")))
	if want := rows(f.results, 20, false); !slices.EqualFunc(recent, want, slices.Equal) {
		t.Errorf("recent results in the browser\n%q\nwant (from MFA_RESULTS)\n%q", recent, want)
	}
	titles := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('[data-recent]')].map(r => r.cells[5].title)`))
	if want := newestFirst(f.resultIDs, 20); !slices.Equal(titles, want) || titles[0] != f.longID {
		t.Errorf("the job ids on hover %q, want %q", titles, want)
	}
	if w := run(t, ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 1280 {
		t.Errorf("the page is %d px wide in a 1,280 px window", w)
	}
	text := run(t, ctx, chromedp.Text(chromedp.CSS("body")))
	for _, s := range []string{secretState, phone, f.longID} {
		if strings.Contains(text, s) {
			t.Errorf("the page shows %q", s)
		}
	}

	// Work in progress: the open leaver first, then the held job, each
	// with the command that acts on it.
	open := run(t, ctx, chromedp.Evaluate[[][]string](rowsJS("data-open")))
	if len(open) != 1 || open[0][1] != "failed" || open[0][2] != strconv.Itoa(leaverOpen) ||
		open[0][5] != "worker leavers close --id user."+strconv.Itoa(leaverOpen)+" --reason '...'" {
		t.Errorf("open leavers %q", open)
	}
	held := run(t, ctx, chromedp.Evaluate[[][]string](rowsJS("data-held")))
	if len(held) != 1 || held[0][3] != strconv.Itoa(person) || held[0][5] != "worker hold release --job "+f.heldJobID {
		t.Errorf("held jobs %q", held)
	}
	retry := run(t, ctx, chromedp.Evaluate[[][]string](rowsJS("data-retry")))
	if want := []string{f.nextRetry.Format("2006-01-02 15:04:05Z"), "enroll", "2", "rate_limited", strconv.Itoa(otherPerson), shortened(f.retryJobID),
		"worker job 'hr.test:enroll '\\''retrying'\\'''"}; len(retry) != 1 || !slices.Equal(retry[0], want) {
		t.Errorf("jobs waiting for a retry %q, want %q", retry, want)
	}
	png := run(t, ctx, chromedp.FullScreenshot(100))

	// The filter form: offboards only, on the server.
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`select[name="type"]`), "offboard"),
		chromedp.Click(chromedp.CSS(`form#filters button`)),
		chromedp.WaitVisible(chromedp.CSS(`a[href="?"]`)),
	); err != nil {
		t.Fatal(err)
	}
	var offboards []history.Entry
	for _, e := range f.results {
		if e.Type == "offboard" {
			offboards = append(offboards, e)
		}
	}
	if got, want := run(t, ctx, chromedp.Evaluate[[][]string](rowsJS("data-recent"))), rows(offboards, 20, false); len(want) == 0 || !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("offboards in the browser\n%q\nwant\n%q", got, want)
	}

	if len(png) < 10_000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	if !t.Failed() { // keep the last good picture
		save(t, screenshot, png)
	}
}

// TestPersonSearchInChromium searches a person by email through the form:
// it finds the person, their scheduled offboard and the job the guard
// holds, and, after the offboard has run, the devices it removed.
func TestPersonSearchInChromium(t *testing.T) {
	f := newFixture(t, status.Config{Refresh: 5 * time.Minute, Version: "dev"})
	ctx := browser(t)
	search := func() {
		t.Helper()
		if err := chromedp.Do(ctx,
			chromedp.Navigate(f.srv.URL+"/status"),
			chromedp.WaitVisible(chromedp.CSS(`form#person`)),
			chromedp.SendKeys(chromedp.CSS(`input[name="user"]`), personEmail),
			chromedp.SetValue(chromedp.CSS(`select[name="by"]`), "email"),
			chromedp.Click(chromedp.CSS(`form#person button`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-history]`)),
		); err != nil {
			t.Fatal(err)
		}
	}
	search()
	c := run(t, ctx, chromedp.Evaluate[map[string]string](cellsJS))
	if c["lookup-user"] != strconv.Itoa(person) || c["lookup-leaver-state"] != "scheduled" ||
		c["lookup-offboard-job"] != shortened(f.offboardID) || c["lookup-offboard-due"] != f.dueAt.Format("2006-01-02 15:04:05Z") {
		t.Errorf("the search by email shows %v", c)
	}
	if _, ok := c["lookup-removed"]; ok {
		t.Error("removed devices shown before the offboard ran")
	}
	held := run(t, ctx, chromedp.Evaluate[[][]string](rowsJS("data-person-held")))
	if len(held) != 1 || held[0][4] != "worker hold release --job "+f.heldJobID {
		t.Errorf("the person's held jobs %q", held)
	}
	hist := run(t, ctx, chromedp.Evaluate[[][]string](rowsJS("data-history")))
	var mine []history.Entry
	for _, e := range f.results {
		if slices.Contains(f.personJobs, e.JobID) {
			mine = append(mine, e)
		}
	}
	if want := rows(mine, 50, true); len(want) == 0 || !slices.EqualFunc(hist, want, slices.Equal) {
		t.Errorf("history in the browser\n%q\nwant\n%q", hist, want)
	}
	if c["lookup-count"] != strconv.Itoa(len(f.personJobs)) {
		t.Errorf("lookup shows %q results", c["lookup-count"])
	}
	f.checkNumbers(t, c)

	// The offboard runs; the same search shows what it removed.
	f.scheduleRuns(t)
	search()
	c = run(t, ctx, chromedp.Evaluate[map[string]string](cellsJS))
	if c["lookup-leaver-state"] != "offboarded" || c["lookup-removed"] != "2" || c["lookup-removed-types"] != "Google Authenticator, SMS" {
		t.Errorf("after the offboard the search shows %v", c)
	}
	if w := run(t, ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 1280 {
		t.Errorf("the page is %d px wide in a 1,280 px window", w)
	}
	png := run(t, ctx, chromedp.FullScreenshot(100))
	if len(png) < 10_000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	if !t.Failed() {
		save(t, screenshotPerson, png)
	}
}

func save(t *testing.T, path string, png []byte) {
	t.Helper()
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot saved to %s (%d bytes)", path, len(png))
}

// cellsJS reads every cell the page marks with data-k, as the browser shows
// it.
const cellsJS = `Object.fromEntries([...document.querySelectorAll('[data-k]')].map(e => [e.dataset.k, e.innerText.trim()]))`

// rowsJS reads the cells of the table rows marked with attr.
func rowsJS(attr string) string {
	return `[...document.querySelectorAll('[` + attr + `]')].map(r => [...r.cells].map(c => c.innerText.trim()))`
}

// run runs one browser action and fails the test on error.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
