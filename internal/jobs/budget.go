package jobs

import (
	"context"
	"time"
)

// budgets are every time limit of one delivery, composed here from the
// configuration so that the worst case can be read in one place (doc.go
// states it).
type budgets struct {
	// heartbeat: InProgress, lock and lease renewal interval (AckWait/3).
	heartbeat time.Duration
	// lockWait: waiting for another replica's job of the same user
	// (Lease + AckWait); claimWait: waiting out another owner's live
	// ledger claim (Lease + AckWait).
	lockWait, claimWait time.Duration
	// retryWithin: quick retries of transient failures in a delivery
	// stop once the next pause would end after it (RetryWithin).
	retryWithin time.Duration
	// rateLimitPause: the pause after a 429 whose reset has passed.
	rateLimitPause time.Duration
	// cancelledDelay: the nak delay of a job cut short by shutdown.
	cancelledDelay time.Duration
	// publish: retries of one publish (result or DLQ copy).
	publish time.Duration
	// settle: the ledger write, publishes and ack of a settlement, which
	// run even while the worker shuts down.
	settle time.Duration
	// unstored: the nak delay when the result could not be recorded.
	unstored time.Duration
}

func newBudgets(c *Config) budgets {
	return budgets{
		heartbeat:      c.AckWait / 3,
		lockWait:       c.Lease + c.AckWait,
		claimWait:      c.Lease + c.AckWait,
		retryWithin:    c.RetryWithin,
		rateLimitPause: 200 * time.Millisecond,
		cancelledDelay: time.Second,
		publish:        5 * time.Second,
		settle:         10 * time.Second,
		unstored:       time.Second,
	}
}

// newPolicy is the policy of the configuration: the delivery limit and
// the nak delays.
func newPolicy(c *Config) policy {
	b := newBudgets(c)
	return policy{maxDeliver: c.MaxDeliver, nakBase: c.NakBase, nakMax: c.NakMax, stopDelay: b.cancelledDelay, unstored: b.unstored}
}

// worstCase is the longest one delivery can hold its message when its
// last attempt takes lastAttempt, waits for the OneLogin rate-limit window
// aside (doc.go states it with the defaults): the lock and claim waits, the
// quick retries, the settlement and the lock's release.
func (b budgets) worstCase(lastAttempt time.Duration) time.Duration {
	return b.lockWait + b.claimWait + b.retryWithin + lastAttempt + b.settle + b.settle
}

// settleContext is the context of a settlement (and of the lock's
// release), which runs even while the worker shuts down: ctx's values, not
// its cancellation, and the settle budget.
func (x *executor) settleContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), x.budgets.settle)
}
