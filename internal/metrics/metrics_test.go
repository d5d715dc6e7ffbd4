package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
)

// Every series a dashboard or alert may use exists before its first
// increment, for every label value the job model knows.
func TestSeriesArePrecreated(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string]bool{}
	for _, mf := range mfs {
		set := map[string]bool{}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + ","
			}
			set[key] = true
		}
		series[mf.GetName()] = set
	}
	has := func(name, key string) {
		t.Helper()
		if !series[name][key] {
			t.Errorf("%s{%s} not pre-created", name, key)
		}
	}
	for _, typ := range job.Types {
		for _, o := range job.Outcomes {
			has("mfa_jobs_total", "outcome="+string(o)+",type="+string(typ)+",")
		}
		for _, o := range []job.Outcome{job.Failed, job.Rejected, job.Expired} {
			for _, c := range job.CodesOf(o) {
				has("mfa_dead_letters_total", "reason="+c+",type="+string(typ)+",")
			}
		}
		has("mfa_jobs_scheduled", "type="+string(typ)+",")
	}
	for _, e := range metrics.Endpoints {
		for _, c := range []string{"200", "401", "429", "500", "error"} {
			has("mfa_onelogin_requests_total", "code="+c+",endpoint="+e+",")
		}
	}
	has("mfa_onelogin_credentials_ok", "")
	for _, n := range metrics.Names {
		if _, ok := series[n]; !ok {
			t.Errorf("%s listed but not gathered", n)
		}
	}
	if len(metrics.JobTypes) != len(job.Types) || len(metrics.Outcomes) != len(job.Outcomes) {
		t.Errorf("label lists differ from the model: %v %v", metrics.JobTypes, metrics.Outcomes)
	}
}
