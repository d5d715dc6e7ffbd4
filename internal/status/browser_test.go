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

// screenshot is where the picture of the page is saved, for the README.
var screenshot = filepath.Join("..", "..", "docs", "status.png")

// TestStatusPageInChromium loads the page in headless Chromium (Debian's
// chromium package), checks that every number it shows equals /metrics and
// the streams after a known workload, looks a person up through the form,
// and saves a screenshot.
func TestStatusPageInChromium(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed (apt-get install -y chromium): ", err)
	}
	f := newFixture(t, status.Config{Refresh: 5 * time.Minute, Version: "dev"})

	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // the CI runs as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

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
	recent := run(t, ctx, chromedp.Evaluate[[][]string](rowsJS("data-recent")))
	if want := rows(f.results, 20, false); !slices.EqualFunc(recent, want, slices.Equal) {
		t.Errorf("recent results in the browser\n%q\nwant (from MFA_RESULTS)\n%q", recent, want)
	}
	text := run(t, ctx, chromedp.Text(chromedp.CSS("body")))
	for _, s := range []string{secretState, phone, strconv.Itoa(person), strconv.Itoa(otherPerson)} {
		if strings.Contains(text, s) {
			t.Errorf("the page shows %q", s)
		}
	}

	// A person lookup through the form, as an operator would.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name="user"]`), strconv.Itoa(person)),
		chromedp.Click(chromedp.CSS(`form button`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-history]`)),
	); err != nil {
		t.Fatal(err)
	}
	hist := run(t, ctx, chromedp.Evaluate[[][]string](rowsJS("data-history")))
	after := run(t, ctx, chromedp.Evaluate[map[string]string](cellsJS))
	png := run(t, ctx, chromedp.FullScreenshot(100))
	var mine []history.Entry
	for _, e := range f.results {
		if slices.Contains(f.personJobs, e.JobID) {
			mine = append(mine, e)
		}
	}
	if want := rows(mine, 50, true); len(want) == 0 || !slices.EqualFunc(hist, want, slices.Equal) {
		t.Errorf("history in the browser\n%q\nwant\n%q", hist, want)
	}
	if after["lookup-user"] != strconv.Itoa(person) || after["lookup-count"] != strconv.Itoa(len(f.personJobs)) {
		t.Errorf("lookup shows user %q with %q results", after["lookup-user"], after["lookup-count"])
	}
	f.checkNumbers(t, after)
	if len(png) < 10_000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	if t.Failed() {
		return // keep the last good picture
	}
	if err := os.WriteFile(screenshot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot saved to %s (%d bytes)", screenshot, len(png))
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
