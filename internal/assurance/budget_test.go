package assurance

import (
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

func TestBudgetShareOfEachWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	b := budget{share: 0.05}
	// Unknown limit: one probe a second.
	if !b.take(t0) || b.take(t0.Add(500*time.Millisecond)) || !b.take(t0.Add(time.Second)) {
		t.Fatal("probes while the limit is unknown must be one a second")
	}
	// Limit 200 in a window ending at t0+60s: 10 calls (5%), the two probes
	// included.
	b.observe(onelogin.RateLimit{Limit: 200, Remaining: 150, Reset: t0.Add(60 * time.Second)})
	n := 2
	for b.take(t0.Add(2 * time.Second)) {
		n++
	}
	if n != 10 {
		t.Fatalf("%d calls in the window, want 10", n)
	}
	// A refund gives one back.
	b.refund()
	if !b.take(t0.Add(3*time.Second)) || b.take(t0.Add(3*time.Second)) {
		t.Fatal("a refunded call is spendable once")
	}
	// The next window: a fresh share.
	if !b.take(t0.Add(61 * time.Second)) {
		t.Fatal("no call in the next window")
	}
	b.observe(onelogin.RateLimit{Limit: 200, Remaining: 199, Reset: t0.Add(121 * time.Second)})
	// Paused (OneLogin is down to the jobs' reserve) until that reset.
	b.pause(t0.Add(70 * time.Second))
	if b.take(t0.Add(100 * time.Second)) {
		t.Fatal("a paused budget granted a call")
	}
	if !b.take(t0.Add(122 * time.Second)) {
		t.Fatal("no call after the pause")
	}
	// A tiny limit still allows one call a window.
	small := budget{share: 0.05}
	small.observe(onelogin.RateLimit{Limit: 10, Reset: t0.Add(time.Minute)})
	if !small.take(t0) || small.take(t0) {
		t.Fatal("a limit of 10 allows exactly one call per window")
	}
}
