package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// AuthListeners are the listeners that count failed authentication: the
// ingest receiver and the status page.
var AuthListeners = []string{"ingest", "status"}

// AuthFailures counts failed authentication per listener.
type AuthFailures struct {
	c *prometheus.CounterVec
}

// NewAuthFailures registers mfa_auth_failures_total on reg, every listener
// at 0. A second call on the same registry (`worker dev` runs the worker and
// the receiver in one process) returns the counter already registered.
func NewAuthFailures(reg prometheus.Registerer) *AuthFailures {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mfa_auth_failures_total",
		Help: "Requests refused for missing or wrong credentials (signature, token, basic auth) or throttled after them, by listener.",
	}, []string{"listener"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err)
		}
		c = are.ExistingCollector.(*prometheus.CounterVec)
	}
	for _, l := range AuthListeners {
		c.WithLabelValues(l)
	}
	return &AuthFailures{c: c}
}

// Inc counts one failure on listener (one of AuthListeners).
func (m *AuthFailures) Inc(listener string) {
	if m == nil {
		return
	}
	ok := false
	for _, l := range AuthListeners {
		ok = ok || l == listener
	}
	if ok {
		m.c.WithLabelValues(listener).Inc()
	}
}
