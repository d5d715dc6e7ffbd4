package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mfa-worker/mfa-worker/internal/metrics"
)

type fakeLeavers struct {
	counts map[string]int
	oldest time.Time
}

func (f fakeLeavers) StateCounts() (map[string]int, time.Time) { return f.counts, f.oldest }

func TestLeaverMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := fakeLeavers{counts: map[string]int{"open": 3, "verified": 40}, oldest: time.Now().Add(-2 * time.Hour)}
	m := metrics.NewLeavers(reg, f, time.Hour)
	m.OffboardFinished(90 * time.Minute)
	m.OffboardFinished(-time.Second) // a clock ahead: counted as 0
	m.Drift()
	m.Check("clean")
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP mfa_leavers Leavers in the registry (MFA_LEAVERS), by state.
# TYPE mfa_leavers gauge
mfa_leavers{state="closed"} 0
mfa_leavers{state="held"} 0
mfa_leavers{state="offboarded"} 0
mfa_leavers{state="open"} 3
mfa_leavers{state="running"} 0
mfa_leavers{state="scheduled"} 0
mfa_leavers{state="verified"} 40
# HELP mfa_leaver_slo_seconds WORKER_LEAVER_SLO: how long a leaver may stay open before the alert.
# TYPE mfa_leaver_slo_seconds gauge
mfa_leaver_slo_seconds 3600
# HELP mfa_assurance_drift_total Re-verifications that found a factor again after a leaver's offboard.
# TYPE mfa_assurance_drift_total counter
mfa_assurance_drift_total 1
# HELP mfa_assurance_checks_total Re-verifications of offboarded leavers, by result (clean, drift, error, deferred).
# TYPE mfa_assurance_checks_total counter
mfa_assurance_checks_total{result="clean"} 1
mfa_assurance_checks_total{result="deferred"} 0
mfa_assurance_checks_total{result="drift"} 0
mfa_assurance_checks_total{result="error"} 0
`), "mfa_leavers", "mfa_leaver_slo_seconds", "mfa_assurance_drift_total", "mfa_assurance_checks_total"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(gaugeOf(t, reg, "mfa_leavers_oldest_open_seconds")); got < 7190 || got > 7300 {
		t.Errorf("oldest open %v s, want about 7200", got)
	}
	if n, err := testutil.GatherAndCount(reg, "mfa_offboard_lag_seconds"); err != nil || n != 1 {
		t.Fatalf("lag histogram: %d, %v", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP mfa_offboard_lag_seconds Time from a leaver's effective time (termination) to the end of the offboard that removed their factors.
# TYPE mfa_offboard_lag_seconds histogram
mfa_offboard_lag_seconds_bucket{le="60"} 1
mfa_offboard_lag_seconds_bucket{le="300"} 1
mfa_offboard_lag_seconds_bucket{le="900"} 1
mfa_offboard_lag_seconds_bucket{le="1800"} 1
mfa_offboard_lag_seconds_bucket{le="3600"} 1
mfa_offboard_lag_seconds_bucket{le="7200"} 2
mfa_offboard_lag_seconds_bucket{le="14400"} 2
mfa_offboard_lag_seconds_bucket{le="28800"} 2
mfa_offboard_lag_seconds_bucket{le="86400"} 2
mfa_offboard_lag_seconds_bucket{le="259200"} 2
mfa_offboard_lag_seconds_bucket{le="+Inf"} 2
mfa_offboard_lag_seconds_sum 5400
mfa_offboard_lag_seconds_count 2
`), "mfa_offboard_lag_seconds"); err != nil {
		t.Fatal(err)
	}
}

// gaugeOf returns a collector that yields the one sample of name.
func gaugeOf(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.Metric) == 1 {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "copy"})
			g.Set(f.Metric[0].GetGauge().GetValue())
			return g
		}
	}
	t.Fatalf("no %s", name)
	return nil
}
