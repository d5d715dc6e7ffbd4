package status_test

import (
	"context"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/audit"
	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/status"
)

var (
	openRe       = regexp.MustCompile(`data-open="([^"]+)"`)
	heldRe       = regexp.MustCompile(`data-held="([^"]+)"`)
	personHeldRe = regexp.MustCompile(`data-person-held="([^"]+)"`)
	retryRe      = regexp.MustCompile(`data-retry="([^"]+)"`)
)

// TestPersonSearch finds the person by email, username and external id
// (resolved by OneLogin as jobs are), shows their scheduled offboard and
// held job with the command that releases it, and, once the offboard has
// run, the devices it removed.
func TestPersonSearch(t *testing.T) {
	f := newFixture(t, status.Config{})
	for _, q := range []string{
		"by=email&user=" + url.QueryEscape(personEmail),
		"user=" + url.QueryEscape(personEmail), // guessed: an email
		"by=username&user=" + personUser,
		"user=" + personUser, // guessed: a username
		"by=external_id&user=" + personExtID,
		"by=user_id&user=" + strconv.Itoa(person),
	} {
		code, _, page := get(t, f.srv.URL+"/status?"+q)
		c := cells(page)
		if code != 200 || c["lookup-user"] != strconv.Itoa(person) {
			t.Errorf("%s: status %d, user %q, error %q", q, code, c["lookup-user"], c["lookup-error"])
			continue
		}
		if got, want := matches(historyRe, page), newestFirst(f.personJobs, 50); !slices.Equal(got, want) {
			t.Errorf("%s: history %v, want %v", q, got, want)
		}
		if c["lookup-leaver-state"] != "scheduled" || c["lookup-offboard-job"] != shortened(f.offboardID) ||
			c["lookup-offboard-due"] != f.dueAt.Format("2006-01-02 15:04:05Z") {
			t.Errorf("%s: scheduled offboard: state %q job %q due %q", q, c["lookup-leaver-state"], c["lookup-offboard-job"], c["lookup-offboard-due"])
		}
		if !strings.Contains(page, `title="`+f.offboardID+`"`) {
			t.Errorf("%s: the offboard's full id is not in a title", q)
		}
		if got := matches(personHeldRe, page); !slices.Equal(got, []string{f.heldJobID}) {
			t.Errorf("%s: held jobs %v, want %s", q, got, f.heldJobID)
		}
		if !strings.Contains(page, "worker hold release --job "+f.heldJobID+"<") {
			t.Errorf("%s: no release command for the held job", q)
		}
		if _, ok := c["lookup-removed"]; ok {
			t.Errorf("%s: removed devices shown before the offboard ran", q)
		}
	}

	f.scheduleRuns(t)
	code, _, page := get(t, f.srv.URL+"/status?by=email&user="+url.QueryEscape(personEmail))
	c := cells(page)
	if code != 200 || c["lookup-leaver-state"] != "offboarded" || c["lookup-removed"] != "2" ||
		c["lookup-removed-types"] != "Google Authenticator, SMS" {
		t.Errorf("after the offboard: status %d, state %q, removed %q (%q)", code, c["lookup-leaver-state"], c["lookup-removed"], c["lookup-removed-types"])
	}
	if _, ok := c["lookup-offboard-due"]; ok {
		t.Error("an offboard that ran is still shown as scheduled")
	}

	// Someone who is no leaver.
	code, _, page = get(t, f.srv.URL+"/status?by=email&user=other%40example.com")
	if c := cells(page); code != 200 || c["lookup-user"] != strconv.Itoa(otherPerson) || c["lookup-leaver-state"] != "not a leaver" {
		t.Errorf("a non-leaver: status %d, %v", code, c)
	}
}

// TestPersonSearchBusy: while OneLogin's budget is kept for jobs the
// search answers busy at once instead of spending it.
func TestPersonSearchBusy(t *testing.T) {
	f := newFixture(t, status.Config{})
	sim := simulator.New(simulator.Config{Directory: []simulator.DirectoryUser{{ID: person, Email: personEmail, Username: personUser, Status: 1}}})
	olSrv := httptest.NewServer(sim)
	defer olSrv.Close()
	// Jobs have spent OneLogin's budget down to 100 of 5,000: below the
	// reserve of a tenth kept from queries.
	pacer := onelogin.NewPacer(0)
	if err := pacer.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	pacer.Observe(onelogin.RateLimit{Limit: 5000, Remaining: 100, Reset: time.Now().Add(time.Hour)}, true)
	ol, err := onelogin.NewClient(onelogin.Config{BaseURL: olSrv.URL, ClientID: sim.Config().ClientID, ClientSecret: sim.Config().ClientSecret,
		Pacer: pacer, QueryReserve: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	h, err := status.New(status.Config{}, status.Deps{
		Gatherer: prometheus.NewRegistry(), History: history.New(f.js), People: ops.NewResolver(ol),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	calls := sim.ResourceCalls()
	code, _, page := get(t, srv.URL+"/?by=email&user="+url.QueryEscape(personEmail))
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(cells(page)["lookup-error"], "busy") {
		t.Errorf("search below the reserve: status %d, error %q", code, cells(page)["lookup-error"])
	}
	if n := sim.ResourceCalls(); n != calls {
		t.Errorf("a busy search called OneLogin %d times", n-calls)
	}
}

// TestWorkInProgress shows open leavers first, with the command that
// closes each, then the held jobs with the command that releases each.
func TestWorkInProgress(t *testing.T) {
	f := newFixture(t, status.Config{})
	_, _, page := get(t, f.srv.URL+"/status")
	if got := matches(openRe, page); !slices.Equal(got, []string{"user." + strconv.Itoa(leaverOpen)}) {
		t.Errorf("open leavers %v", got)
	}
	if !strings.Contains(page, "worker leavers close --id user."+strconv.Itoa(leaverOpen)+" --reason &#39;...&#39;") {
		t.Error("no close command for the open leaver")
	}
	if got := matches(heldRe, page); !slices.Equal(got, []string{f.heldJobID}) {
		t.Errorf("held jobs %v, want %s", got, f.heldJobID)
	}
	if !strings.Contains(page, "worker hold release --job "+f.heldJobID+"<") {
		t.Error("no release command for the held job")
	}
	if got := matches(retryRe, page); !slices.Equal(got, []string{html.EscapeString(f.retryJobID)}) {
		t.Errorf("jobs waiting for a retry %v, want %s", got, f.retryJobID)
	}
	row := regexp.MustCompile(`<tr data-retry=.*</tr>`).FindString(page)
	quoted := `'hr.test:enroll '\''retrying'\''` + `'` // as a shell takes it
	for _, want := range []string{">" + f.nextRetry.Format("2006-01-02 15:04:05Z") + "<", ">enroll<", ">2<", ">rate_limited<",
		">" + strconv.Itoa(otherPerson) + "<", "worker job " + html.EscapeString(quoted) + "<"} {
		if !strings.Contains(row, want) {
			t.Errorf("the retrying job's row %q lacks %q", row, want)
		}
	}
	i, j, k := strings.Index(page, "data-open="), strings.Index(page, "data-retry="), strings.Index(page, "data-held=")
	if i < 0 || j < i || k < j {
		t.Error("open leavers do not come first, then retries, then held jobs")
	}
	if c := cells(page); c["lookup-wip-open"] != "1" || c["lookup-wip-held"] != "1" || c["lookup-wip-retry"] != "1" {
		t.Errorf("counts: open %q retry %q held %q", c["lookup-wip-open"], c["lookup-wip-retry"], c["lookup-wip-held"])
	}
	// Released, it leaves the page (the release re-publishes the job).
	if _, err := f.js.CreateOrUpdateStream(context.Background(), jetstream.StreamConfig{Name: "JOBS_TEST", Subjects: []string{job.TypeOffboard.Subject()}}); err != nil {
		t.Fatal(err)
	}
	if err := audit.Provision(context.Background(), f.js, audit.Config{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.guard.Release(context.Background(), guardFilter(f.heldJobID), guardOp(), time.Now()); err != nil {
		t.Fatal(err)
	}
	_, _, page = get(t, f.srv.URL+"/status")
	if got := matches(heldRe, page); len(got) != 0 {
		t.Errorf("a released job is still listed as held: %v", got)
	}
}

// TestRecentFilters filters the recent results by type and outcome on the
// server, looking past the 20 newest.
func TestRecentFilters(t *testing.T) {
	f := newFixture(t, status.Config{RecentLimit: 5})
	for _, tc := range []struct{ typ, outcome string }{{"offboard", ""}, {"", "failed"}, {"enroll", "succeeded"}, {"remove", "noop"}} {
		code, _, page := get(t, f.srv.URL+"/status?type="+tc.typ+"&outcome="+tc.outcome)
		var want []string
		for i := len(f.results) - 1; i >= 0 && len(want) < 5; i-- {
			e := f.results[i]
			if (tc.typ == "" || e.Type == tc.typ) && (tc.outcome == "" || e.Outcome == tc.outcome) {
				want = append(want, e.JobID)
			}
		}
		if got := matches(recentRe, page); code != 200 || len(want) == 0 && tc.typ != "remove" || !slices.Equal(got, want) {
			t.Errorf("type %q outcome %q: status %d, %v, want %v", tc.typ, tc.outcome, code, got, want)
		}
		if tc.typ != "" && !strings.Contains(page, "<option selected>"+tc.typ+"</option>") {
			t.Errorf("the type filter %q is not kept in the form", tc.typ)
		}
	}
	code, _, page := get(t, f.srv.URL+"/status?type=%3Cb%3E")
	if code != 400 || strings.Contains(page, "<b>") || len(matches(recentRe, page)) != 5 {
		t.Errorf("an unknown type: status %d", code)
	}
}

func guardFilter(jobID string) guard.Filter { return guard.Filter{JobID: jobID} }

func guardOp() guard.Operator { return guard.Operator{By: "oncall", Reason: "checked with HR"} }
