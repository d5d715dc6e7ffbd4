package status_test

import (
	"cmp"
	"context"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/authlimit"
	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/status"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

var (
	cellRe    = regexp.MustCompile(`data-k="([^"]+)"[^>]*>([^<]*)<`)
	recentRe  = regexp.MustCompile(`data-recent="([^"]+)"`)
	historyRe = regexp.MustCompile(`data-history="([^"]+)"`)
)

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func cells(page string) map[string]string {
	out := map[string]string{}
	for _, m := range cellRe.FindAllStringSubmatch(page, -1) {
		out[html.UnescapeString(m[1])] = strings.TrimSpace(html.UnescapeString(m[2]))
	}
	return out
}

func matches(re *regexp.Regexp, page string) []string {
	var out []string
	for _, m := range re.FindAllStringSubmatch(page, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestPageShowsWhatMetricsAndStreamsSay(t *testing.T) {
	f := newFixture(t, status.Config{Refresh: 7 * time.Second, Version: "1.2.3"})
	code, h, page := get(t, f.srv.URL+"/status")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, content type %q", code, h.Get("Content-Type"))
	}
	f.checkNumbers(t, cells(page))
	if got, want := matches(recentRe, page), newestFirst(f.resultIDs, 20); !slices.Equal(got, want) {
		t.Errorf("recent results %v, want %v", got, want)
	}
	if !strings.Contains(page, `<meta http-equiv="refresh" content="7">`) {
		t.Error("the page does not reload itself")
	}
	if strings.Contains(page, "<script") {
		t.Error("the page carries a script")
	}
	for _, secret := range []string{secretState, phone} {
		if strings.Contains(page, secret) {
			t.Errorf("the page shows %q", secret)
		}
	}
	// Each recent result names its person, with a link to their page,
	// and its job id in full in the cell's title.
	for _, e := range f.results[len(f.results)-20:] {
		link := `<a href="?user=` + strconv.FormatInt(e.UserID, 10) + `&amp;by=user_id">`
		row := regexp.MustCompile(`<tr data-recent="` + regexp.QuoteMeta(html.EscapeString(e.JobID)) + `">.*</tr>`).FindString(page)
		if !strings.Contains(row, link) || !strings.Contains(row, `title="`+html.EscapeString(e.JobID)+`"`) {
			t.Errorf("recent result %s: the row %q has no person link %q or no full id in a title", e.JobID, row, link)
		}
	}
	if strings.Contains(page, ">"+f.longID+"<") {
		t.Errorf("the long job id is shown in full in a cell")
	}
	for _, hdr := range []string{"Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy"} {
		if h.Get(hdr) == "" {
			t.Errorf("header %s is missing", hdr)
		}
	}
}

func TestPersonLookup(t *testing.T) {
	f := newFixture(t, status.Config{})
	code, _, page := get(t, f.srv.URL+"/status?user="+strconv.Itoa(person))
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	if got, want := matches(historyRe, page), newestFirst(f.personJobs, 50); len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}
	c := cells(page)
	if c["lookup-user"] != strconv.Itoa(person) || c["lookup-count"] != strconv.Itoa(len(f.personJobs)) {
		t.Errorf("lookup cells %v", c)
	}
	f.checkNumbers(t, c)
	for _, secret := range []string{secretState, phone} {
		if strings.Contains(page, secret) {
			t.Errorf("the page shows %q", secret)
		}
	}

	code, _, page = get(t, f.srv.URL+"/status?user=12x&by=user_id")
	if code != 400 || cells(page)["lookup-error"] == "" || len(matches(historyRe, page)) != 0 {
		t.Errorf("a bad user id: status %d", code)
	}
	code, _, page = get(t, f.srv.URL+"/status?user=12x")
	if code != 404 || !strings.Contains(cells(page)["lookup-error"], "no single OneLogin user") || len(matches(historyRe, page)) != 0 {
		t.Errorf("an unknown username: status %d, %q", code, cells(page)["lookup-error"])
	}
	code, _, page = get(t, f.srv.URL+"/status?user=a*&by=email")
	if code != 400 || cells(page)["lookup-error"] == "" {
		t.Errorf("a wildcard: status %d", code)
	}
	code, _, page = get(t, f.srv.URL+"/status?user=x&by=phone")
	if code != 400 || cells(page)["lookup-error"] == "" {
		t.Errorf("an unknown kind of search: status %d", code)
	}
	for _, by := range []string{"user_id", "auto", "username"} {
		code, _, page = get(t, f.srv.URL+"/status?by="+by+"&user=%3Cscript%3Ealert(1)%3C/script%3E")
		if code/100 != 4 || strings.Contains(page, "<script>") {
			t.Errorf("by %s: markup in the user field was not escaped (status %d)", by, code)
		}
	}
	code, _, page = get(t, f.srv.URL+"/status?user=5")
	if code != 200 || cells(page)["lookup-count"] != "0" {
		t.Errorf("a person without results: status %d, %v", code, cells(page)["lookup-count"])
	}
}

func TestReadOnlyAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "auth")
	if err := os.WriteFile(file, []byte("oncall:s3cr:et\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := status.LoadCredentials(file)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, status.Config{Auth: creds})
	req := func(method, user, pass string) int {
		r, err := http.NewRequest(method, f.srv.URL+"/status", nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			r.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
		return resp.StatusCode
	}
	for _, c := range []struct {
		method, user, pass string
		want               int
	}{
		{"GET", "", "", 401},
		{"GET", "oncall", "s3cr", 401},
		{"GET", "oncall", "s3cr:etX", 401},
		{"GET", "admin", "s3cr:et", 401},
		{"GET", "oncall", "s3cr:et", 200},
		{"HEAD", "oncall", "s3cr:et", 200},
		{"POST", "oncall", "s3cr:et", 405},
		{"POST", "", "", 401},
	} {
		if got := req(c.method, c.user, c.pass); got != c.want {
			t.Errorf("%s as %q/%q: %d, want %d", c.method, c.user, c.pass, got, c.want)
		}
	}
	for _, bad := range []string{"", "nocolon\n", ":pw\n", "user:\n", "a:b\nc:d\n"} {
		if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := status.LoadCredentials(file); err == nil {
			t.Errorf("credentials file %q was accepted", bad)
		} else if strings.Contains(err.Error(), "pw") && bad == ":pw\n" {
			t.Errorf("the error shows the file's content: %v", err)
		}
	}
	if _, err := status.LoadCredentials(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was accepted")
	}
}

func TestNewNeedsGathererAndLogger(t *testing.T) {
	if _, err := status.New(status.Config{}, status.Deps{}); err == nil {
		t.Fatal("New without a gatherer succeeded")
	}
}

func TestPageWithoutStreams(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	streams := status.NewStreams(js)
	h, err := status.New(status.Config{}, status.Deps{
		Gatherer: prometheus.NewRegistry(), Results: streams, DeadLetters: streams,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	page := func() string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
		if rec.Code != 200 {
			t.Fatalf("status %d", rec.Code)
		}
		return rec.Body.String()
	}
	// No streams yet: the page still answers and says what is missing.
	p := page()
	if !strings.Contains(p, "recent results: unavailable") || !strings.Contains(p, "held in MFA_DLQ: unavailable") {
		t.Fatalf("missing streams not reported:\n%s", p)
	}
	if c := cells(p); c["credentials"] != "unknown" || c["remaining"] != "–" || c["dl-total"] != "0" {
		t.Fatalf("cells without metrics: %v", c)
	}
	if strings.Contains(p, "A person&#39;s history") || strings.Contains(p, `name="user"`) {
		t.Fatal("the lookup form is shown without a history reader")
	}
	// Empty streams.
	ctx := context.Background()
	for _, sc := range []jetstream.StreamConfig{
		{Name: status.ResultsStream, Subjects: []string{"mfa.results.>"}},
		{Name: status.DLQStream, Subjects: []string{"mfa.dlq.>"}},
	} {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	p = page()
	if !strings.Contains(p, "no results yet") || strings.Contains(p, "unavailable") {
		t.Fatalf("empty streams:\n%s", p)
	}
	// A message that is not a result is shown as unreadable, not dropped.
	if _, err := js.Publish(ctx, "mfa.results.enroll.succeeded", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if p = page(); !strings.Contains(p, ">unreadable<") {
		t.Fatalf("an unreadable result is not shown:\n%s", p)
	}
}

// TestWrongPasswordsThrottled: past the budget of wrong credentials an
// address is answered 429 before its credentials are looked at; the right
// password from another address still gets the page; a browser's first
// request without credentials is not counted.
func TestWrongPasswordsThrottled(t *testing.T) {
	creds, err := status.NewCredentials("oncall", "right")
	if err != nil {
		t.Fatal(err)
	}
	failures := 0
	f := newFixture(t, status.Config{Auth: creds, Throttle: authlimit.New(5, func() { failures++ })})
	send := func(addr, pass string) int {
		r := httptest.NewRequest(http.MethodGet, "/status", nil)
		r.RemoteAddr = addr
		if pass != "" {
			r.SetBasicAuth("oncall", pass)
		}
		w := httptest.NewRecorder()
		f.srv.Config.Handler.ServeHTTP(w, r)
		return w.Code
	}
	for range 10 {
		if code := send("192.0.2.9:1", ""); code != http.StatusUnauthorized {
			t.Fatalf("no credentials: %d", code)
		}
	}
	codes := map[int]int{}
	for range 300 {
		codes[send("192.0.2.7:1", "guess")]++
	}
	if codes[http.StatusUnauthorized] != 5 || codes[http.StatusTooManyRequests] != 295 {
		t.Fatalf("codes %v", codes)
	}
	if code := send("192.0.2.8:1", "right"); code != http.StatusOK {
		t.Fatalf("the right password from another address: %d", code)
	}
	if failures != 300 {
		t.Errorf("%d failures reported, want 300 (5 wrong, 295 throttled)", failures)
	}
}

// A cancelled job says who cancelled it and with what scope, as `worker
// history` does, in the recent results and in the person's history; a
// value holding control characters is shown escaped.
func TestCancelledJobsSayWhoCancelled(t *testing.T) {
	f := newFixture(t, status.Config{})
	ctx := context.Background()
	store := history.New(f.js)
	cases := []struct {
		id, by, scope, want, source, corr string
	}{
		{"hr:cloudevents:evt-9:person-left", "hr:cloudevents:evt-10:termination-moved-cancel", "hr.cloudevents",
			"cancelled by hr:cloudevents:evt-10:termination-moved-cancel (scope hr.cloudevents)", "", ""},
		{"ops-offboard-7", "ops-cancel-7", "", "cancelled by ops-cancel-7", "", ""},
		{"forged-offboard-8", "c-8\x1b[2J", "hr.x\u202eevil\r\nline", `cancelled by c-8\x1b[2J (scope hr.x\u202eevil\x0d\x0aline)`, "hr.x\x1b[2J", "corr\u202e-9\r\n"},
	}
	for i, c := range cases {
		data := map[string]any{"cancelled_by": c.by}
		if c.scope != "" {
			data["cancel_scope"] = c.scope
		}
		b, err := json.Marshal(map[string]any{
			"job_id": c.id, "type": "offboard", "user_id": person, "outcome": "cancelled", "attempts": 1,
			"started_at": fixedNow.Add(time.Duration(i) * time.Minute), "finished_at": fixedNow.Add(time.Duration(i) * time.Minute),
			"source": cmp.Or(c.source, "hr.cloudevents"), "correlation_id": c.corr, "error": map[string]any{"code": "cancelled", "message": "m"}, "data": data,
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.js.Publish(ctx, "mfa.results.offboard.cancelled", b, jetstream.WithMsgID(c.id+":result")); err != nil {
			t.Fatal(err)
		}
		e, err := history.EntryFromResult(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Append(ctx, e, c.id+":result"); err != nil {
			t.Fatal(err)
		}
	}
	_, _, page := get(t, f.srv.URL+"/status?user="+strconv.Itoa(person)+"&by=user_id")
	for _, c := range cases {
		for _, table := range []string{"data-recent", "data-history"} {
			row := regexp.MustCompile(`<tr ` + table + `="` + regexp.QuoteMeta(html.EscapeString(c.id)) + `">.*</tr>`).FindString(page)
			if row == "" {
				t.Errorf("%s: no %s row", c.id, table)
				continue
			}
			if !strings.Contains(row, `<td class="code">`+html.EscapeString(c.want)+`</td>`) {
				t.Errorf("%s: the %s row does not say %q:\n%s", c.id, table, c.want, row)
			}
		}
	}
	for _, r := range page {
		if r != '\n' && history.IsControl(r) {
			t.Errorf("the page holds U+%04X raw", r)
		}
	}
}
