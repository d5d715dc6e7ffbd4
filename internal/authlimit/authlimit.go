// Package authlimit throttles failed authentication per client address:
// past a small budget of failures in a minute, an address is answered 429
// until the minute is over, before its credentials are even looked at.
// Requests that authenticate are never counted, so a sender with the right
// secret from another address is unaffected however hard one address
// guesses.
//
// The client address is the connection's remote address, never a header a
// client could set. Behind a load balancer every client shares its address:
// run the listeners where they see their clients, or size the budget for it.
package authlimit

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// DefaultBudget is the failures an address may have in a minute before it
// is throttled.
const DefaultBudget = 20

// maxAddrs bounds the addresses remembered; past it the oldest window is
// forgotten first (a spray from many addresses cannot grow memory).
const maxAddrs = 65536

// Limiter counts failures per address over fixed one-minute windows. The
// zero value is not usable; New makes one. A nil *Limiter allows all.
type Limiter struct {
	budget int
	window time.Duration
	now    func() time.Time
	// OnFail, if set, runs for every failure counted (the metric).
	onFail func()

	mu    sync.Mutex
	addrs map[string]*entry
}

type entry struct {
	start    time.Time
	failures int
}

// New returns a limiter allowing budget failures per address per minute;
// onFail, if not nil, is called for each failure (and each request
// throttled).
func New(budget int, onFail func()) *Limiter {
	if budget <= 0 {
		budget = DefaultBudget
	}
	return &Limiter{budget: budget, window: time.Minute, now: time.Now, onFail: onFail, addrs: map[string]*entry{}}
}

// Addr is the client address of r: its remote IP without the port.
func Addr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Throttled reports whether r's address is over its budget; if so it writes
// 429 with Retry-After and the caller must stop.
func (l *Limiter) Throttled(w http.ResponseWriter, r *http.Request) bool {
	if l == nil {
		return false
	}
	addr := Addr(r)
	now := l.now()
	l.mu.Lock()
	e := l.addrs[addr]
	blocked := e != nil && now.Sub(e.start) < l.window && e.failures >= l.budget
	var wait time.Duration
	if blocked {
		wait = l.window - now.Sub(e.start)
	}
	l.mu.Unlock()
	if !blocked {
		return false
	}
	if l.onFail != nil {
		l.onFail()
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
	w.Header().Set("Connection", "close") // the body, if any, is never read
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write([]byte("too many failed authentications from this address; retry later\n"))
	return true
}

// Failed counts one failed authentication of r's address.
func (l *Limiter) Failed(r *http.Request) {
	if l == nil {
		return
	}
	if l.onFail != nil {
		l.onFail()
	}
	addr := Addr(r)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.addrs[addr]
	if e == nil || now.Sub(e.start) >= l.window {
		if e == nil && len(l.addrs) >= maxAddrs {
			l.prune(now)
		}
		e = &entry{start: now}
		l.addrs[addr] = e
	}
	e.failures++
}

// prune forgets the windows that are over, or, if none is, an arbitrary
// half of them.
func (l *Limiter) prune(now time.Time) {
	for a, e := range l.addrs {
		if now.Sub(e.start) >= l.window {
			delete(l.addrs, a)
		}
	}
	if len(l.addrs) < maxAddrs {
		return
	}
	n := 0
	for a := range l.addrs {
		delete(l.addrs, a)
		if n++; n >= maxAddrs/2 {
			break
		}
	}
}
