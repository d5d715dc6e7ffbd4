package assurance

import (
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// unknownGap spaces reads while OneLogin's limit is unknown (before the
// first answer, or behind a proxy that strips the rate-limit headers).
const unknownGap = time.Second

// budget is the checker's share of OneLogin's rate-limit windows: at most
// share of each window's limit, counted per replica.
type budget struct {
	share       float64
	limit       int
	reset       time.Time // end of the window spent is counted in; zero: not known yet
	spent       int
	nextProbe   time.Time
	pausedUntil time.Time
}

func (b *budget) allowance() int {
	if b.limit <= 0 {
		return 0
	}
	return max(1, int(b.share*float64(b.limit)))
}

// take spends one call if the share allows it now.
func (b *budget) take(now time.Time) bool {
	if now.Before(b.pausedUntil) {
		return false
	}
	if !b.reset.IsZero() && !now.Before(b.reset) {
		b.spent, b.reset = 0, time.Time{}
	}
	if b.limit <= 0 {
		if now.Before(b.nextProbe) {
			return false
		}
		b.nextProbe = now.Add(unknownGap)
		b.spent++
		return true
	}
	if b.spent >= b.allowance() {
		return false
	}
	b.spent++
	return true
}

// refund gives back a call that was not made.
func (b *budget) refund() {
	if b.spent > 0 {
		b.spent--
	}
}

// observe learns the limit and the window from an answer's headers.
func (b *budget) observe(r onelogin.RateLimit) {
	if r.Limit <= 0 {
		return
	}
	b.limit = r.Limit
	if b.reset.IsZero() || r.Reset.Sub(b.reset) > 1500*time.Millisecond || b.reset.Sub(r.Reset) > 1500*time.Millisecond {
		b.reset = r.Reset
	}
}

// pause stops reads until the window resets (OneLogin is down to the
// jobs' reserve), or for a few seconds when the window is not known.
func (b *budget) pause(now time.Time) {
	if b.reset.After(now) {
		b.pausedUntil = b.reset
		return
	}
	b.pausedUntil = now.Add(5 * time.Second)
}
