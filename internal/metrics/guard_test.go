package metrics_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
)

func TestGuardSeriesExistFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	want := map[string]int{
		// HR sources, "none" and "other".
		"mfa_jobs_held":                 6,
		"mfa_offboards_cancelled_total": 6,
		// Every type by every cancel code.
		"mfa_jobs_cancelled_total": len(job.Types) * len(job.CodesOf(job.Cancelled)),
	}
	for name, n := range want {
		if got := testutil.CollectAndCount(reg, name); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
	}
	if !strings.Contains(strings.Join(job.CodesOf(job.Cancelled), ","), job.CodeDiscarded) {
		t.Error("discarded is not a cancel code")
	}
}

func TestHeldBySourceIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	// A job without source is "none", a label of its own from the start.
	m.SetHeld(map[string]int{"hr.scim": 300, "": 2})
	held := map[string]int{"hr.scim": 300, "": 2}
	for i := range metrics.MaxSourceLabels + 10 {
		held[fmt.Sprintf("src-%02d", i)] = 1
	}
	m.SetHeld(held)
	series := testutil.CollectAndCount(reg, "mfa_jobs_held")
	if series != len(metrics.GuardSources)+metrics.MaxSourceLabels {
		t.Fatalf("%d series, want %d", series, len(metrics.GuardSources)+metrics.MaxSourceLabels)
	}
	if got := testutil.ToFloat64(m.HeldGauge("hr.scim")); got != 300 {
		t.Fatalf("hr.scim: %v", got)
	}
	if got := testutil.ToFloat64(m.HeldGauge("none")); got != 2 {
		t.Fatalf("none: %v", got)
	}
	// 20 new sources got their own label, the other 10 are "other".
	if got := testutil.ToFloat64(m.HeldGauge(metrics.OtherSource)); got != 10 {
		t.Fatalf("other: %v, want 10", got)
	}
	// Every held job is counted once, under its own label or "other".
	var sum float64
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "mfa_jobs_held" {
			for _, s := range mf.GetMetric() {
				sum += s.GetGauge().GetValue()
			}
		}
	}
	if sum != float64(302+metrics.MaxSourceLabels+10) {
		t.Fatalf("held jobs summed over the series: %v", sum)
	}
	// A source whose holds were all decided drops to 0; no series goes.
	m.SetHeld(map[string]int{"": 1})
	if got := testutil.ToFloat64(m.HeldGauge("hr.scim")); got != 0 {
		t.Fatalf("hr.scim after release: %v", got)
	}
	if testutil.CollectAndCount(reg, "mfa_jobs_held") != series {
		t.Fatal("the series set changed")
	}
}

func TestCancelledOffboardsBySource(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.JobCancelled("offboard", job.CodeCancelled, "hr.cloudevents")
	m.JobCancelled("offboard", job.CodeDiscarded, "hr.cloudevents")
	m.JobCancelled("enroll", job.CodeSupersededByOffboard, "hr.cloudevents")
	m.JobCancelled("offboard", job.CodeCancelled, "hris.workday")
	if got := testutil.ToFloat64(m.OffboardsCancelled("hr.cloudevents")); got != 1 {
		t.Fatalf("hr.cloudevents: %v, want 1 (a discard is no rescinded termination)", got)
	}
	if got := testutil.ToFloat64(m.OffboardsCancelled("hris.workday")); got != 1 {
		t.Fatalf("hris.workday: %v", got)
	}
	exp := `
# HELP mfa_jobs_cancelled_total Jobs that ended cancelled, by type and code (cancelled, superseded_by_offboard, discarded).
# TYPE mfa_jobs_cancelled_total counter
`
	var lines []string
	for _, typ := range job.Types {
		for _, c := range job.CodesOf(job.Cancelled) {
			v := 0
			switch {
			case typ == "offboard" && c == job.CodeCancelled:
				v = 2
			case typ == "offboard" && c == job.CodeDiscarded, typ == "enroll" && c == job.CodeSupersededByOffboard:
				v = 1
			}
			lines = append(lines, fmt.Sprintf("mfa_jobs_cancelled_total{code=%q,type=%q} %d", c, typ, v))
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp+strings.Join(lines, "\n")+"\n"), "mfa_jobs_cancelled_total"); err != nil {
		t.Fatal(err)
	}
}
