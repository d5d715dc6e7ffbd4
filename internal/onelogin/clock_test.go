package onelogin_test

import (
	"sort"
	"sync"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// clock is a settable clock shared by a client, its pacer and a simulator.
// Time moves only by Advance, which runs the timers that come due, in
// order, before it returns.
type clock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*clockTimer
}

var _ onelogin.Clock = (*clock)(nil)

func newClock() *clock { return &clock{t: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d and runs every timer due by then.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	var due []*clockTimer
	for _, t := range c.timers {
		if t.active && !t.at.After(c.t) {
			t.active = false
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

// Armed returns how many timers are waiting to fire.
func (c *clock) Armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.active {
			n++
		}
	}
	return n
}

// AfterFunc implements onelogin.Clock; f runs inside the Advance that
// reaches its time.
func (c *clock) AfterFunc(d time.Duration, f func()) onelogin.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &clockTimer{c: c, at: c.t.Add(d), f: f, active: true}
	c.timers = append(c.timers, t)
	return t
}

type clockTimer struct {
	c      *clock
	at     time.Time
	f      func()
	active bool
}

func (t *clockTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.at, t.active = t.c.t.Add(d), true
	return was
}

func (t *clockTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}
