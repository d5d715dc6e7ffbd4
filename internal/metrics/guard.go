package metrics

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// The source label of the guard's metrics holds a job's source, a string
// publishers choose (hr.scim, hris.workday). It is bounded: the HR sources
// of `worker ingest` and OtherSource exist from the start; other sources
// get their own series as they are seen, up to MaxSourceLabels per metric,
// and every later one is counted under OtherSource. A job without source is
// NoSource. Values are cut to 64 bytes.
const (
	MaxSourceLabels = 20
	OtherSource     = "other"
	NoSource        = "none"
)

// GuardSources are the source label values that exist from the start: the
// HR sources, jobs without a source (an operator's or a script's), and
// OtherSource, so that increase() sees their first count.
var GuardSources = func() []string {
	var out []string
	for _, s := range HRSources {
		out = append(out, "hr."+s)
	}
	return append(out, NoSource, OtherSource)
}()

// CancelCodes are the error codes of cancelled jobs.
var CancelCodes = job.CodesOf(job.Cancelled)

// sourceLabels hands out bounded label values for one metric.
type sourceLabels struct {
	mu   sync.Mutex
	seen map[string]bool
}

func newSourceLabels() *sourceLabels {
	s := &sourceLabels{seen: map[string]bool{}}
	for _, v := range GuardSources {
		s.seen[v] = true
	}
	return s
}

func (s *sourceLabels) label(source string) string {
	v := source
	if v == "" {
		v = NoSource
	}
	if len(v) > 64 {
		v = strings.ToValidUTF8(v[:64], "")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[v] {
		return v
	}
	if len(s.seen) >= MaxSourceLabels+len(GuardSources) {
		return OtherSource
	}
	s.seen[v] = true
	return v
}

func (s *sourceLabels) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.seen))
	for v := range s.seen {
		out = append(out, v)
	}
	return out
}

// guardSeries are the blast-radius guard's series and the cancellations.
type guardSeries struct {
	held          *prometheus.GaugeVec
	heldLabels    *sourceLabels
	offCancelled  *prometheus.CounterVec
	offLabels     *sourceLabels
	jobsCancelled *prometheus.CounterVec
}

func newGuardSeries(f promauto.Factory) *guardSeries {
	g := &guardSeries{
		held: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mfa_jobs_held", Help: "Offboards and removes held by the blast-radius guard, waiting for an operator (worker hold list), by source.",
		}, []string{"source"}),
		heldLabels: newSourceLabels(),
		offCancelled: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mfa_offboards_cancelled_total", Help: "Offboards ended by a cancel job (rescinded terminations), by the offboard's source.",
		}, []string{"source"}),
		offLabels: newSourceLabels(),
		jobsCancelled: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mfa_jobs_cancelled_total", Help: "Jobs that ended cancelled, by type and code (cancelled, superseded_by_offboard, discarded).",
		}, []string{"type", "code"}),
	}
	for _, s := range GuardSources {
		g.held.WithLabelValues(s)
		g.offCancelled.WithLabelValues(s)
	}
	for _, t := range JobTypes {
		for _, c := range CancelCodes {
			g.jobsCancelled.WithLabelValues(t, c)
		}
	}
	return g
}

// SetHeld sets mfa_jobs_held from the number of held jobs per source (as
// guard.WatchHeld reports them); sources not in held are set to 0.
func (m *Metrics) SetHeld(held map[string]int) {
	sum := map[string]int{}
	for s, n := range held {
		sum[m.guard.heldLabels.label(s)] += n
	}
	for _, v := range m.guard.heldLabels.all() {
		m.guard.held.WithLabelValues(v).Set(float64(sum[v]))
	}
}

// JobCancelled counts a job that ended cancelled with code, and an offboard
// that a cancel job ended (code cancelled) also by its source.
func (m *Metrics) JobCancelled(typ, code, source string) {
	m.guard.jobsCancelled.WithLabelValues(typ, code).Inc()
	if typ == string(job.TypeOffboard) && code == job.CodeCancelled {
		m.guard.offCancelled.WithLabelValues(m.guard.offLabels.label(source)).Inc()
	}
}

// HeldGauge returns the held-jobs gauge of a source label, for tests.
func (m *Metrics) HeldGauge(label string) prometheus.Gauge {
	return m.guard.held.WithLabelValues(label)
}

// OffboardsCancelled returns the cancelled-offboards counter of a source
// label, for tests.
func (m *Metrics) OffboardsCancelled(label string) prometheus.Counter {
	return m.guard.offCancelled.WithLabelValues(label)
}
