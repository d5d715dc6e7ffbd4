package onelogin

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// roundTripFunc is a RoundTripper that answers from a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestObservedTransportLeavesTheCallersRequestAlone(t *testing.T) {
	var sentUA string
	var observed []string
	tr := &observedTransport{
		base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			sentUA = r.Header.Get("User-Agent")
			return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader("{}")), Header: http.Header{}, Request: r}, nil
		}),
		userAgent: "mfa-worker-test",
		observe: func(endpoint, code string, _ time.Duration) {
			observed = append(observed, endpoint+" "+code)
		},
	}
	req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1/auth/oauth2/v2/token", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", "caller")
	req.Header.Set("X-Caller", "kept")
	before := req.Header.Clone()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if sentUA != "mfa-worker-test" {
		t.Errorf("sent User-Agent %q, want %q", sentUA, "mfa-worker-test")
	}
	if got := req.Header.Get("User-Agent"); got != "caller" {
		t.Errorf("the caller's request was modified: User-Agent now %q", got)
	}
	if len(req.Header) != len(before) || req.Header.Get("X-Caller") != "kept" {
		t.Errorf("the caller's headers changed: %v, were %v", req.Header, before)
	}
	if len(observed) != 1 || observed[0] != EndpointToken+" 200" {
		t.Errorf("observed %v, want one %s 200", observed, EndpointToken)
	}
}
