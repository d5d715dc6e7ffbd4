package testenv

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// StatusCells is what the status page's data-k cells must show for a
// scrape of /metrics (fams): pending per consumer, in flight per type and
// per lane, the rate-limit budget, the credentials, finished jobs per
// outcome, dead letters per type and reason, and scheduled jobs. Cells
// that come from elsewhere (the streams, the pacer) are the caller's.
func StatusCells(fams map[string]*dto.MetricFamily) map[string]string {
	want := map[string]string{}
	for _, m := range fams["mfa_consumer_pending_messages"].GetMetric() {
		want["pending/"+metricLabel(m, "consumer")] = Num(metricValue(m))
	}
	lanes := map[string]float64{"urgent": 0, "normal": 0}
	for _, m := range fams["mfa_jobs_in_flight"].GetMetric() {
		typ := metricLabel(m, "type")
		want["inflight/"+typ] = Num(metricValue(m))
		if typ == "offboard" || typ == "remove" || typ == "cancel" {
			lanes["urgent"] += metricValue(m)
		} else {
			lanes["normal"] += metricValue(m)
		}
	}
	for l, x := range lanes {
		want["lane-inflight/"+l] = Num(x)
	}
	for _, m := range fams["mfa_onelogin_rate_limit_remaining"].GetMetric() {
		want["remaining"] = Num(metricValue(m))
	}
	for _, m := range fams["mfa_onelogin_credentials_ok"].GetMetric() {
		want["credentials"] = map[bool]string{true: "ok", false: "failing"}[metricValue(m) == 1]
	}
	finished := map[string]float64{}
	for _, m := range fams["mfa_jobs_total"].GetMetric() {
		finished[metricLabel(m, "outcome")] += metricValue(m)
	}
	for o, x := range finished {
		want["finished/"+o] = Num(x)
	}
	var dl float64
	for _, m := range fams["mfa_dead_letters_total"].GetMetric() {
		if metricValue(m) != 0 {
			want["dl/"+metricLabel(m, "type")+"/"+metricLabel(m, "reason")] = Num(metricValue(m))
			dl += metricValue(m)
		}
	}
	want["dl-total"] = Num(dl)
	var sched float64
	for _, m := range fams["mfa_jobs_scheduled"].GetMetric() {
		want["scheduled/"+metricLabel(m, "type")] = Num(metricValue(m))
		sched += metricValue(m)
	}
	want["scheduled-total"] = Num(sched)
	return want
}

// Num is how the status page writes a number.
func Num(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return m.GetUntyped().GetValue()
}

func metricLabel(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Counter reads one counter series of g: the first series of name whose
// labels include the given name, value pairs. A series that is not there
// is an error.
func Counter(g prometheus.Gatherer, name string, labels ...string) (float64, error) {
	fams, err := g.Gather()
	if err != nil {
		return 0, err
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if metricLabel(m, labels[i]) != labels[i+1] {
					continue series
				}
			}
			return m.GetCounter().GetValue(), nil
		}
	}
	return 0, fmt.Errorf("no series %s%v", name, labels)
}
