package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// IngestNames are the metrics `worker ingest` registers.
var IngestNames = []string{"mfa_hr_events_total", "mfa_ingest_requests_total"}

// Label values of the ingest metrics known up front, so that every series
// exists from the start. A request that names no known source (an unknown
// path) is counted under "unknown".
var (
	HRSources      = []string{"cloudevents", "bamboohr", "hibob", "scim"}
	HREventResults = []string{"mapped", "ignored", "rule_error"}
	IngestCodes    = []int{200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 503}
)

// Ingest holds the collectors of `worker ingest`: the HTTP receiver's
// answers and the mapper's verdicts.
type Ingest struct {
	events   *prometheus.CounterVec
	requests *prometheus.CounterVec
}

// NewIngest registers the ingest metrics on reg, every series at 0. It does
// not register the Go and process collectors: New does that, and a process
// running both the worker and the receiver calls both constructors.
func NewIngest(reg prometheus.Registerer) *Ingest {
	f := promauto.With(reg)
	m := &Ingest{
		events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mfa_hr_events_total", Help: "Stored HR events handled by the rule mapper, by source and result (mapped, ignored, rule_error).",
		}, []string{"source", "result"}),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mfa_ingest_requests_total", Help: "HTTP requests to the ingest receiver, by source and answered status code.",
		}, []string{"source", "code"}),
	}
	for _, s := range HRSources {
		for _, r := range HREventResults {
			m.events.WithLabelValues(s, r)
		}
	}
	for _, s := range append(append([]string(nil), HRSources...), "unknown") {
		for _, c := range IngestCodes {
			m.requests.WithLabelValues(s, strconv.Itoa(c))
		}
	}
	return m
}

// Request counts one answered HTTP request. A source outside HRSources is
// counted as "unknown", so that a caller cannot grow the label set.
func (m *Ingest) Request(source string, code int) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(boundedSource(source), strconv.Itoa(code)).Inc()
}

// Event counts one HR event the mapper finished with; result is one of
// HREventResults.
func (m *Ingest) Event(source, result string) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(boundedSource(source), result).Inc()
}

func boundedSource(s string) string {
	for _, k := range HRSources {
		if s == k {
			return s
		}
	}
	return "unknown"
}
