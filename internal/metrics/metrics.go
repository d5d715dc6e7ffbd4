// Package metrics defines the worker's Prometheus metrics, exactly those of
// the wire contract, on a registry the caller provides.
//
// Labels are bounded: job types, outcomes, error codes, endpoint names,
// HTTP status codes and consumer names. No label ever holds a user id, a
// device id, a job id or anything a publisher controls.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Names of every metric the worker registers besides the Go and process
// collectors; dashboards and alert rules may use only these.
var Names = []string{
	"mfa_jobs_total",
	"mfa_job_duration_seconds",
	"mfa_jobs_in_flight",
	"mfa_job_retries_total",
	"mfa_dead_letters_total",
	"mfa_duplicate_jobs_total",
	"mfa_onelogin_requests_total",
	"mfa_onelogin_request_duration_seconds",
	"mfa_onelogin_rate_limit_remaining",
	"mfa_consumer_pending_messages",
	"mfa_jobs_scheduled",
	"mfa_onelogin_credentials_ok",
	"mfa_dlq_usage_ratio",
	"mfa_jobs_stream_usage_ratio",
	"mfa_jobs_held",
	"mfa_offboards_cancelled_total",
	"mfa_jobs_cancelled_total",
}

// Label values known up front, so that every series a dashboard or an
// alert uses exists from the start (increase() then sees the first
// increment). Types, outcomes and error codes come from the job model.
var (
	JobTypes  = strs(job.Types)
	Outcomes  = strs(job.Outcomes)
	Endpoints = []string{onelogin.EndpointToken, onelogin.EndpointAvailableFactors, onelogin.EndpointEnroll, onelogin.EndpointEnrolledFactors,
		onelogin.EndpointActivate, onelogin.EndpointVerify, onelogin.EndpointRemove, onelogin.EndpointMFAToken, onelogin.EndpointUsers}
	Consumers = []string{topology.ConsumerUrgent, topology.ConsumerNormal}
	// DeadLetterReasons are the error codes a DLQ copy can carry.
	DeadLetterReasons = deadLetterReasons()
	// CommonCodes are the request outcomes pre-created per endpoint: the
	// HTTP status codes OneLogin commonly answers, and "error" (no answer).
	CommonCodes = []string{"200", "201", "204", "400", "401", "403", "404", "429", "500", "502", "503", "504", "error"}
)

func strs[T ~string](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	return out
}

func deadLetterReasons() []string {
	var out []string
	for _, o := range job.Outcomes {
		if o.DeadLetters() {
			out = append(out, job.CodesOf(o)...)
		}
	}
	return out
}

// Metrics holds the worker's collectors.
type Metrics struct {
	jobs          *prometheus.CounterVec
	jobDuration   *prometheus.HistogramVec
	inFlight      *prometheus.GaugeVec
	retries       *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	duplicates    *prometheus.CounterVec
	requests      *prometheus.CounterVec
	reqDuration   *prometheus.HistogramVec
	rateRemaining prometheus.Gauge
	pending       *prometheus.GaugeVec
	scheduled     *prometheus.GaugeVec
	credentialsOK prometheus.Gauge
	dlqUsage      prometheus.Gauge
	jobsUsage     prometheus.Gauge
	guard         *guardSeries // guard.go
}

// New registers the metrics, plus the Go and process collectors, on reg.
func New(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		jobs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mfa_jobs_total", Help: "Jobs finished, by type and outcome.",
		}, []string{"type", "outcome"}),
		jobDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mfa_job_duration_seconds", Help: "Time from the start of a job's delivery to its result, by type and outcome.",
			// OneLogin calls take milliseconds to seconds; a job that waits
			// for the rate-limit window can take up to an hour.
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{"type", "outcome"}),
		inFlight: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mfa_jobs_in_flight", Help: "Jobs being executed now, by type.",
		}, []string{"type"}),
		retries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mfa_job_retries_total", Help: "Retries of OneLogin work after a transient failure, in a delivery or by redelivery, by job type.",
		}, []string{"type"}),
		deadLetters: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mfa_dead_letters_total", Help: "Jobs copied to MFA_DLQ, by type and reason (error code).",
		}, []string{"type", "reason"}),
		duplicates: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mfa_duplicate_jobs_total", Help: "Jobs whose id the ledger already held as finished; their stored result was published again.",
		}, []string{"type"}),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mfa_onelogin_requests_total", Help: "HTTP exchanges with OneLogin, by endpoint and status code (or error).",
		}, []string{"endpoint", "code"}),
		reqDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mfa_onelogin_request_duration_seconds", Help: "Duration of HTTP exchanges with OneLogin, by endpoint.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"endpoint"}),
		rateRemaining: f.NewGauge(prometheus.GaugeOpts{
			Name: "mfa_onelogin_rate_limit_remaining", Help: "OneLogin API calls left in the account's current rate-limit window, as last reported.",
		}),
		pending: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mfa_consumer_pending_messages", Help: "Job messages not yet delivered, by consumer (lane).",
		}, []string{"consumer"}),
		scheduled: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mfa_jobs_scheduled", Help: "Jobs accepted whose not_before is still ahead, by type.",
		}, []string{"type"}),
		credentialsOK: f.NewGauge(prometheus.GaugeOpts{
			Name: "mfa_onelogin_credentials_ok", Help: "1 while the worker holds a valid OneLogin access token, else 0.",
		}),
		dlqUsage: f.NewGauge(prometheus.GaugeOpts{
			Name: "mfa_dlq_usage_ratio", Help: "How full MFA_DLQ is: the larger of bytes/max bytes and messages/max messages (1: the oldest dead letters are being dropped).",
		}),
		jobsUsage: f.NewGauge(prometheus.GaugeOpts{
			Name: "mfa_jobs_stream_usage_ratio", Help: "How full MFA_JOBS is against WORKER_JOBS_MAX_BYTES and WORKER_JOBS_MAX_MSGS: the larger of the two ratios (1: jobs with a not_before ahead fail jobs_stream_full instead of being parked).",
		}),
	}
	m.guard = newGuardSeries(f)
	for _, t := range JobTypes {
		m.inFlight.WithLabelValues(t)
		m.retries.WithLabelValues(t)
		m.duplicates.WithLabelValues(t)
		m.scheduled.WithLabelValues(t)
		for _, o := range Outcomes {
			m.jobs.WithLabelValues(t, o)
			m.jobDuration.WithLabelValues(t, o)
		}
		for _, r := range DeadLetterReasons {
			m.deadLetters.WithLabelValues(t, r)
		}
	}
	for _, e := range Endpoints {
		m.reqDuration.WithLabelValues(e)
		for _, c := range CommonCodes {
			m.requests.WithLabelValues(e, c)
		}
	}
	for _, c := range Consumers {
		m.pending.WithLabelValues(c)
	}
	return m
}

// JobStarted counts a job as in flight until the returned func is called.
func (m *Metrics) JobStarted(typ string) (done func()) {
	g := m.inFlight.WithLabelValues(typ)
	g.Inc()
	return g.Dec
}

// JobFinished records a job's outcome and duration.
func (m *Metrics) JobFinished(typ, outcome string, d time.Duration) {
	m.jobs.WithLabelValues(typ, outcome).Inc()
	m.jobDuration.WithLabelValues(typ, outcome).Observe(d.Seconds())
}

// Retry counts one retry of a job's OneLogin work.
func (m *Metrics) Retry(typ string) { m.retries.WithLabelValues(typ).Inc() }

// DeadLetter counts one copy to the dead-letter stream.
func (m *Metrics) DeadLetter(typ, reason string) { m.deadLetters.WithLabelValues(typ, reason).Inc() }

// Duplicate counts one job answered from the ledger.
func (m *Metrics) Duplicate(typ string) { m.duplicates.WithLabelValues(typ).Inc() }

// DuplicateCounter returns the duplicate counter of a type, for tests.
func (m *Metrics) DuplicateCounter(typ string) prometheus.Counter {
	return m.duplicates.WithLabelValues(typ)
}

// RetryCounter returns the retry counter of a type, for tests.
func (m *Metrics) RetryCounter(typ string) prometheus.Counter {
	return m.retries.WithLabelValues(typ)
}

// SetPending sets a consumer's backlog.
func (m *Metrics) SetPending(consumer string, n uint64) {
	m.pending.WithLabelValues(consumer).Set(float64(n))
}

// SetDLQUsage sets how full MFA_DLQ is, 0..1.
func (m *Metrics) SetDLQUsage(ratio float64) { m.dlqUsage.Set(ratio) }

// JobsStreamUsage returns the MFA_JOBS usage gauge, for tests.
func (m *Metrics) JobsStreamUsage() prometheus.Gauge { return m.jobsUsage }

// SetJobsStreamUsage sets how full MFA_JOBS is against the worker's
// limits, 0..1.
func (m *Metrics) SetJobsStreamUsage(ratio float64) { m.jobsUsage.Set(ratio) }

// SetCredentialsOK reports whether the worker holds a valid OneLogin
// access token.
func (m *Metrics) SetCredentialsOK(ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.credentialsOK.Set(v)
}

// SetScheduled sets the number of jobs of a type waiting for not_before.
func (m *Metrics) SetScheduled(typ string, n int) {
	m.scheduled.WithLabelValues(typ).Set(float64(n))
}

// ObserveRequest implements onelogin.Observer.
func (m *Metrics) ObserveRequest(endpoint, code string, d time.Duration) {
	if endpoint == onelogin.EndpointRateLimit {
		return // not one of the contract's endpoints; it is bookkeeping
	}
	m.requests.WithLabelValues(endpoint, code).Inc()
	m.reqDuration.WithLabelValues(endpoint).Observe(d.Seconds())
}

// ObserveRateLimit implements onelogin.Observer.
func (m *Metrics) ObserveRateLimit(r onelogin.RateLimit) {
	m.rateRemaining.Set(float64(r.Remaining))
}

// ScheduledGauge returns the scheduled-jobs gauge of a type, for tests.
func (m *Metrics) ScheduledGauge(typ string) prometheus.Gauge {
	return m.scheduled.WithLabelValues(typ)
}
