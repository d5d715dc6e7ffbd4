package bench

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// busyUser holds the one-busy-user measurement for the report.
var busyUser struct {
	sync.Mutex
	r *BusyUserResult
}

// The case: 40 jobs for one user, then 10 jobs for other users,
// OneLogin at 300 ms; target: the others finish within 1.5x the time they
// take alone.
func BenchmarkOneBusyUser(b *testing.B) {
	for i := 0; i < b.N; i++ {
		r, err := OneBusyUser(40, 10, 300*time.Millisecond, 16)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.Alone.Seconds(), "alone_s")
		b.ReportMetric(r.WithBusy.Seconds(), "with_busy_s")
		b.ReportMetric(r.Ratio, "ratio")
		b.ReportMetric(float64(r.BusyDone), "busy_done")
		busyUser.Lock()
		busyUser.r = &r
		busyUser.Unlock()
	}
}

// renderBusyUser is the report's section on one busy user.
func renderBusyUser() string {
	busyUser.Lock()
	defer busyUser.Unlock()
	r := busyUser.r
	if r == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## One busy user does not hold everyone's slots\n\n%d remove jobs for one user are published ahead of %d remove jobs for %d other users; OneLogin answers every call after %v; concurrency %d, at most %d messages per user held (WORKER_MAX_PER_USER). Jobs waiting for their user's turn hold no execution slot. Times run from the worker's start to the last of the other users' results, each on a fresh bed.\n\n", r.BusyJobs, r.OtherJobs, r.OtherJobs, r.Latency, r.Concurrency, r.MaxPerUser)
	b.WriteString("| others alone | others behind the busy user | ratio | target 1.5x | busy user's jobs done by then |\n|---|---|---|---|---|\n")
	verdict := "met"
	if r.Ratio > 1.5 {
		verdict = "**not met**"
	}
	fmt.Fprintf(&b, "| %v | %v | **%.2f** | %s | %d of %d |\n\n", r.Alone.Round(time.Millisecond), r.WithBusy.Round(time.Millisecond), r.Ratio, verdict, r.BusyDone, r.BusyJobs)
	return b.String()
}
