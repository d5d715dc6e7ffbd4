package authlimit

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestBudgetPerAddressAndWindow: an address is throttled past its budget
// until its minute is over; another address is not; every failure and
// every throttled request is reported.
func TestBudgetPerAddressAndWindow(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	failures := 0
	l := New(3, func() { failures++ })
	l.now = func() time.Time { return now }
	req := func(addr string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = addr
		return r
	}
	a, b := req("203.0.113.1:1"), req("203.0.113.2:1")
	for i := range 3 {
		if l.Throttled(httptest.NewRecorder(), a) {
			t.Fatalf("throttled after %d failures", i)
		}
		l.Failed(a)
	}
	w := httptest.NewRecorder()
	if !l.Throttled(w, a) || w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("not throttled past the budget: %d %v", w.Code, w.Header())
	}
	if l.Throttled(httptest.NewRecorder(), b) {
		t.Fatal("another address throttled")
	}
	if failures != 4 {
		t.Errorf("reported %d, want 3 failures and 1 throttled", failures)
	}
	now = now.Add(time.Minute)
	if l.Throttled(httptest.NewRecorder(), a) {
		t.Fatal("still throttled after the minute")
	}
	var nilLimiter *Limiter
	if nilLimiter.Throttled(httptest.NewRecorder(), a) {
		t.Fatal("a nil limiter throttles")
	}
}

// TestManyAddressesBounded: a spray from many addresses keeps at most
// maxAddrs windows.
func TestManyAddressesBounded(t *testing.T) {
	l := New(1, nil)
	for i := range maxAddrs + 10 {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "10." + itoa(i>>16) + "." + itoa(i>>8&255) + "." + itoa(i&255) + ":1"
		l.Failed(r)
	}
	if n := len(l.addrs); n > maxAddrs {
		t.Fatalf("%d addresses kept", n)
	}
}

func itoa(i int) string {
	return string(rune('0'+i/100)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}
