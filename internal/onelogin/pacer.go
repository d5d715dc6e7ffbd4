package onelogin

import (
	"context"
	"errors"
	"sync"
	"time"
)

// resetMargin is added to every reset: OneLogin reports whole seconds and
// the reset is counted from when the request was sent, so the window may
// roll a moment after the computed instant.
const resetMargin = 250 * time.Millisecond

// Priority orders callers waiting for the OneLogin budget.
type Priority int

const (
	// PriorityBackground is for work nobody waits for (re-verifying
	// leavers): served after every job and query, and refused like a
	// query while the budget is below the query reserve.
	PriorityBackground Priority = iota
	// PriorityQuery is for read-only questions (mfa.query.*): served after
	// every job, and refused at once (ErrBusy) while the budget is below
	// the query reserve, so that queries never spend what jobs need.
	PriorityQuery
	// PriorityNormal is for onboarding and other routine work.
	PriorityNormal
	// PriorityUrgent is for removals: a leaver's factors go first.
	PriorityUrgent
	numPriorities
)

// ErrBusy is what a query-priority caller gets instead of a grant while
// OneLogin's remaining budget is below the query reserve (SetQueryReserve).
var ErrBusy = errors.New("OneLogin budget is reserved for jobs")

type priorityKey struct{}

// WithPriority returns a context whose OneLogin calls queue for the budget
// at priority p.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

func priorityFrom(ctx context.Context) Priority {
	if p, ok := ctx.Value(priorityKey{}).(Priority); ok && p >= 0 && p < numPriorities {
		return p
	}
	return PriorityNormal
}

// Pacer spends OneLogin's account-wide request budget. Every request waits
// for a grant and reports the rate-limit headers of its answer. The budget is
// account-wide, so the headers also carry what other replicas spent.
//
// Policy:
//   - Until the first answer, and again after a window has passed, one probe
//     request at a time learns the budget.
//   - Requests go at once while the budget lasts, less the requests still in
//     flight (they may not be counted in the last header yet).
//   - With a reserve set (other replicas share the account), bursts stop at
//     a low-water mark; below it one request is in flight at a time, grants
//     are spread evenly over what is left of the window, and the reserve is
//     never spent, so that replicas converge instead of overshooting
//     together.
//   - With nothing left, everyone waits for the reset. Urgent waiters are
//     granted before normal ones.
//
// The zero value is not usable; call NewPacer.
type Pacer struct {
	mu       sync.Mutex
	clock    Clock
	lowWater float64
	reserve  int
	// queryReserve is the share of the limit that query-priority callers
	// may not spend.
	queryReserve float64

	rate     RateLimit // Remaining is the lowest seen in the current window
	unpaced  bool      // answers carry no rate-limit headers: nothing to pace by
	inflight int       // granted and not yet reported
	nextAt   time.Time // earliest next grant while spacing

	queues [numPriorities][]*waiter
	timer  Timer
	timeAt time.Time
}

type waiter struct {
	ch      chan struct{}
	granted bool
	busy    bool // refused: the budget fell below the query reserve
}

// NewPacer returns a pacer on the system clock. lowWater is the fraction of
// the limit below which grants are spaced evenly (0.05 when zero or out of
// range).
func NewPacer(lowWater float64) *Pacer {
	return NewPacerWithClock(lowWater, nil)
}

// NewPacerWithClock is NewPacer on clock c (nil: the system clock). Rate
// limits reported to the pacer must be in c's time.
func NewPacerWithClock(lowWater float64, c Clock) *Pacer {
	if lowWater <= 0 || lowWater >= 1 {
		lowWater = 0.05
	}
	if c == nil {
		c = SystemClock
	}
	return &Pacer{clock: c, lowWater: lowWater}
}

// now is the time on the pacer's clock.
func (p *Pacer) now() time.Time { return p.clock.Now() }

// SetReserve leaves n calls of every window unspent. Replicas sharing an
// account pace on their own; at the end of a window two of them may both
// spend the last call. With N replicas, a reserve of N-1 prevents that.
func (p *Pacer) SetReserve(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reserve = max(0, n)
}

// SetQueryReserve makes query-priority callers fail with ErrBusy, at once
// and without waiting, while OneLogin's remaining budget (less the calls in
// flight) is below share of the limit. 0 turns the reserve off.
func (p *Pacer) SetQueryReserve(share float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queryReserve = min(max(0, share), 1)
}

// belowQueryReserve reports whether a query may not be granted now.
func (p *Pacer) belowQueryReserve(now time.Time) bool {
	if p.queryReserve <= 0 || !p.rate.known() || !now.Before(p.rate.Reset.Add(resetMargin)) {
		return false
	}
	return float64(p.rate.Remaining-p.inflight) <= p.queryReserve*float64(p.rate.Limit)
}

// Wait blocks until a request may be sent or ctx ends. Every nil return must
// be followed by exactly one call to Observe. A PriorityQuery caller gets
// ErrBusy instead of waiting while the budget is down to the query reserve.
func (p *Pacer) Wait(ctx context.Context, prio Priority) error {
	if prio < 0 || prio >= numPriorities {
		prio = PriorityNormal
	}
	p.mu.Lock()
	now := p.now()
	if prio <= PriorityQuery && p.belowQueryReserve(now) {
		p.mu.Unlock()
		return ErrBusy
	}
	if !p.queuedAtOrAbove(prio) {
		if ok, _ := p.canGrant(now); ok {
			p.grant(now)
			p.mu.Unlock()
			return nil
		}
	}
	w := &waiter{ch: make(chan struct{})}
	p.queues[prio] = append(p.queues[prio], w)
	p.dispatch(now)
	p.mu.Unlock()

	select {
	case <-w.ch:
		if w.busy {
			return ErrBusy
		}
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		if w.busy {
			return ErrBusy
		}
		if w.granted {
			// Granted while we gave up: hand the grant back.
			p.inflight--
		} else {
			q := p.queues[prio]
			for i, x := range q {
				if x == w {
					p.queues[prio] = append(q[:i:i], q[i+1:]...)
					break
				}
			}
		}
		p.dispatch(p.now())
		return ctx.Err()
	}
}

// Observe reports the answer to a granted request: its rate-limit headers
// when it had them (ok), or nothing when the request failed without an
// answer. A 429 is reported with Remaining 0.
func (p *Pacer) Observe(r RateLimit, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.inflight > 0 {
		p.inflight--
	}
	switch {
	case ok && r.known():
		p.unpaced = false
		// An answer whose reset differs from ours by more than the
		// one-second rounding describes another window as the server sees
		// it now: a new window (later), or a limit that clears sooner than
		// we thought (earlier, e.g. a 429 with a short reset). Take it
		// whole. Within the same window the lowest remaining is the
		// freshest, since answers can arrive out of order.
		drift := r.Reset.Sub(p.rate.Reset)
		if !p.rate.known() || !now.Before(p.rate.Reset.Add(resetMargin)) || drift > 1500*time.Millisecond || drift < -1500*time.Millisecond {
			p.rate = r
		} else {
			p.rate.Limit = r.Limit
			if r.Remaining < p.rate.Remaining {
				p.rate.Remaining = r.Remaining
			}
		}
	case ok:
		// An answer without headers: whatever sits between us and OneLogin
		// strips them, so there is nothing to pace by.
		if !p.rate.known() {
			p.unpaced = true
		}
	}
	p.dispatch(now)
}

// Waiting returns how many callers are queued.
func (p *Pacer) Waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, q := range p.queues {
		n += len(q)
	}
	return n
}

func (p *Pacer) queuedAtOrAbove(prio Priority) bool {
	for q := numPriorities - 1; q >= prio; q-- {
		if len(p.queues[q]) > 0 {
			return true
		}
	}
	return false
}

// canGrant says whether a request may go now, and if not, when to look again
// (zero: when an answer arrives).
func (p *Pacer) canGrant(now time.Time) (bool, time.Time) {
	resetAt := p.rate.Reset.Add(resetMargin)
	if !p.rate.known() || !now.Before(resetAt) {
		if p.unpaced || p.inflight == 0 {
			return true, time.Time{}
		}
		return false, time.Time{}
	}
	spendable := p.rate.Remaining - p.reserve
	left := spendable - p.inflight
	if left <= 0 {
		if spendable <= 0 {
			return false, resetAt
		}
		return false, time.Time{}
	}
	low := p.lowWaterCount()
	if left > low {
		return true, time.Time{}
	}
	if p.inflight > 0 {
		return false, time.Time{}
	}
	if now.Before(p.nextAt) {
		return false, p.nextAt
	}
	return true, time.Time{}
}

// lowWaterCount is the remaining budget below which grants are spaced and
// one at a time. Alone on the account (no reserve) the pacer knows every call
// in flight and spends to the last one. Sharing it, a replica cannot see the
// others' calls in flight: it stops bursting well before the end, at least
// two replicas' worth of concurrency before it.
func (p *Pacer) lowWaterCount() int {
	if p.reserve == 0 {
		return 0
	}
	return max(int(p.lowWater*float64(p.rate.Limit)), 32)
}

func (p *Pacer) grant(now time.Time) {
	p.inflight++
	if left := p.rate.Remaining - p.reserve; p.rate.known() && now.Before(p.rate.Reset) && left <= p.lowWaterCount() {
		p.nextAt = now.Add(p.rate.Reset.Sub(now) / time.Duration(max(left, 1)))
	}
}

// dispatch grants queued waiters in priority order while the budget allows,
// then arms the timer for the next moment something can change.
func (p *Pacer) dispatch(now time.Time) {
	for {
		var w *waiter
		var prio Priority
		for q := numPriorities - 1; q >= 0; q-- {
			if len(p.queues[q]) > 0 {
				w, prio = p.queues[q][0], q
				break
			}
		}
		if w == nil {
			return
		}
		if prio <= PriorityQuery && p.belowQueryReserve(now) {
			// Every queued query and background call is refused: the
			// budget left is the jobs'.
			for q := PriorityBackground; q <= PriorityQuery; q++ {
				for _, w := range p.queues[q] {
					w.busy = true
					close(w.ch)
				}
				p.queues[q] = nil
			}
			continue
		}
		ok, at := p.canGrant(now)
		if !ok {
			if !at.IsZero() {
				p.wakeAt(now, at)
			}
			return
		}
		p.queues[prio][0] = nil
		p.queues[prio] = p.queues[prio][1:]
		p.grant(now)
		w.granted = true
		close(w.ch)
	}
}

func (p *Pacer) wakeAt(now, at time.Time) {
	if p.timer != nil && p.timeAt.Equal(at) {
		return
	}
	d := at.Sub(now)
	if d < time.Millisecond {
		d = time.Millisecond
	}
	p.timeAt = at
	if p.timer == nil {
		p.timer = p.clock.AfterFunc(d, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.timeAt = time.Time{}
			p.dispatch(p.now())
		})
		return
	}
	p.timer.Reset(d)
}

// BudgetResetsAt returns when OneLogin's current rate-limit window ends, as
// its last answer told; the zero time until an answer carried the
// rate-limit headers.
func (p *Pacer) BudgetResetsAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.rate.known() {
		return time.Time{}
	}
	return p.rate.Reset
}
