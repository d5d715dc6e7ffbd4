package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// LeaverNames are the metrics of the leaver registry and re-verification.
var LeaverNames = []string{
	"mfa_leavers",
	"mfa_leavers_oldest_open_seconds",
	"mfa_leaver_slo_seconds",
	"mfa_offboard_lag_seconds",
	"mfa_assurance_drift_total",
	"mfa_assurance_checks_total",
}

// LeaverStates are the values of mfa_leavers' state label.
var LeaverStates = []string{"scheduled", "held", "running", "offboarded", "verified", "open", "closed"}

// AssuranceResults are the values of mfa_assurance_checks_total's result
// label: no factor found (clean), factors found (drift), the check could not
// be made (error), or it waited for budget (deferred).
var AssuranceResults = []string{"clean", "drift", "error", "deferred"}

// LeaverCounter reports the registry's records per state and since when
// the oldest open record is open (zero when none is).
type LeaverCounter interface {
	StateCounts() (map[string]int, time.Time)
}

// Leavers holds the collectors of the leaver registry.
type Leavers struct {
	lag    prometheus.Histogram
	drift  prometheus.Counter
	checks *prometheus.CounterVec
}

// NewLeavers registers the leaver metrics on reg: the gauges read counter
// at every scrape; slo is WORKER_LEAVER_SLO, exported so that the alert on
// open leavers follows the setting.
func NewLeavers(reg prometheus.Registerer, counter LeaverCounter, slo time.Duration) *Leavers {
	f := promauto.With(reg)
	m := &Leavers{
		lag: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "mfa_offboard_lag_seconds",
			Help:    "Time from a leaver's effective time (termination) to the end of the offboard that removed their factors.",
			Buckets: []float64{60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 24 * 3600, 72 * 3600},
		}),
		drift: f.NewCounter(prometheus.CounterOpts{
			Name: "mfa_assurance_drift_total", Help: "Re-verifications that found a factor again after a leaver's offboard.",
		}),
		checks: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mfa_assurance_checks_total", Help: "Re-verifications of offboarded leavers, by result (clean, drift, error, deferred).",
		}, []string{"result"}),
	}
	for _, r := range AssuranceResults {
		m.checks.WithLabelValues(r)
	}
	for _, s := range LeaverStates {
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mfa_leavers", Help: "Leavers in the registry (MFA_LEAVERS), by state.", ConstLabels: prometheus.Labels{"state": s},
		}, func() float64 {
			c, _ := counter.StateCounts()
			return float64(c[s])
		})
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mfa_leavers_oldest_open_seconds", Help: "How long the oldest open leaver record has been open (0 when none is).",
	}, func() float64 {
		_, oldest := counter.StateCounts()
		if oldest.IsZero() {
			return 0
		}
		return max(0, time.Since(oldest).Seconds())
	})
	f.NewGauge(prometheus.GaugeOpts{
		Name: "mfa_leaver_slo_seconds", Help: "WORKER_LEAVER_SLO: how long a leaver may stay open before the alert.",
	}).Set(slo.Seconds())
	return m
}

// OffboardFinished observes the lag of one finished offboard.
func (m *Leavers) OffboardFinished(lag time.Duration) {
	if m == nil {
		return
	}
	m.lag.Observe(max(0, lag.Seconds()))
}

// Drift counts one drift found.
func (m *Leavers) Drift() {
	if m == nil {
		return
	}
	m.drift.Inc()
}

// Check counts one re-verification by result (one of AssuranceResults).
func (m *Leavers) Check(result string) {
	if m == nil {
		return
	}
	m.checks.WithLabelValues(result).Inc()
}
