package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/pause"
)

// ledgerStore is what the executor needs of the job ledger.
type ledgerStore interface {
	Create(ctx context.Context, jobID string, rec ledger.Record) (uint64, error)
	Get(ctx context.Context, jobID string) (*ledger.Entry, error)
	Update(ctx context.Context, jobID string, rec ledger.Record, rev uint64) (uint64, error)
}

// grantStore consumes the one-time replay grants of the ledger.
type grantStore interface {
	UseGrant(ctx context.Context, jobID string, dlqSeq, recordRev uint64) (bool, error)
}

// userLocks is what the executor needs of the per-user locks.
type userLocks interface {
	TryAcquire(ctx context.Context, userID int64, job string) (rev uint64, ok bool, holder ledger.Holder, err error)
	TakeOver(ctx context.Context, userID int64, job string, from uint64) (rev uint64, ok bool, err error)
	Renew(ctx context.Context, userID int64, job string, rev uint64) (uint64, error)
	Release(ctx context.Context, userID int64, rev uint64) error
	Keep(userID int64, rev uint64)
}

// publisher publishes results and DLQ copies.
type publisher interface {
	PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// executor runs one job message at a time to its end: user lock, ledger
// claim, the handler's attempts, decide, settle. It is shared by all of a
// replica's goroutines.
type executor struct {
	cfg     *Config
	budgets budgets
	policy  policy
	log     *slog.Logger
	pub     publisher
	ledger  ledgerStore
	grants  grantStore // nil: no replay is ever granted
	locks   userLocks
	finder  userFinder
	users   *userCache
	parser  *job.Parser
	h       *handlers
	m       *metrics.Metrics
	owner   string
	// people is the resurrection guard's store (MFA_PEOPLE); jobs is the
	// job stream, through which schedules are removed.
	people peopleStore
	jobs   purger
	// jobsFull is set while MFA_JOBS is at the worker's limits
	// (watchPending): jobs whose not_before is ahead are not parked.
	jobsFull atomic.Bool
	// creds hears that OneLogin refused the worker's own credentials.
	creds interface{ refused(err error) }
	// blast is the blast-radius guard and leavers the leaver registry
	// (blast.go); nil: none.
	blast   blastGuard
	leavers leaverNotes
}

// what is how a delivery ended, before the policy chooses its fate.
type what int

const (
	ran       what = iota // the job ran, or failed before running: decide chooses
	duplicate             // the ledger holds the job finished: answered from its record
	reused                // the id belongs to a job with another body
	parked                // the job waits as a JetStream schedule
	stopping              // never started: the worker stops
	gated                 // never started: OneLogin refuses the worker's credentials
	busy                  // never started: the user holds enough of this replica
	withheld              // held by the blast-radius guard: its ledger record is held
)

// ending is what one delivery came to: execute returns it and settle
// carries it out, the delivery's one exit.
type ending struct {
	what what
	// out and err: how the job's last attempt ended (ran).
	out outcome
	err error
	// entry is the ledger's finished record (duplicate).
	entry *ledger.Entry
	// held is how many messages the user holds in this replica (busy).
	held int
	// result and resultID: an invalid job's result, recorded in the
	// ledger by execute unless unrecorded says why not.
	result     *job.Result
	resultID   string
	unrecorded error
}

// process runs one task to its end: settle(execute). The task's heartbeat
// is running; the execution slot and the user's lock that execute took are
// given back after the settlement.
func (x *executor) process(ctx context.Context, t *task, s slot) {
	defer t.stopBeat()
	if t.job != nil {
		defer x.m.JobStarted(string(t.job.Type))()
	}
	defer x.unlockUser(ctx, t)
	defer s.release()
	x.settle(ctx, t, x.execute(ctx, t, &s))
}

// execute takes a delivery as far as it goes and says how it ended. The job
// takes its execution slot only once it can run, after the user's lock:
// waiting for another job of the same user holds no slot.
func (x *executor) execute(ctx context.Context, t *task, s *slot) ending {
	if s.stop != nil && s.stop.Err() != nil {
		return ending{what: stopping}
	}
	if t.rej != nil {
		if err := s.acquire(ctx); err != nil {
			return ending{what: stopping}
		}
		return x.recordRejection(ctx, t)
	}
	j := t.job
	// A job whose not_before is ahead waits as a schedule; parking it
	// calls nobody, so it takes no user lock and no execution slot (and a
	// person named by a selector is looked up only when the job is due).
	if x.notDue(ctx, t) {
		if end, ok := x.park(ctx, t); ok {
			return end
		}
	}
	if j.User != nil && j.UserID == 0 {
		if end, ok := x.answerFromLedger(ctx, t); ok {
			return end
		}
		if err := x.resolveUser(ctx, t); err != nil {
			var pe *PermanentError
			if !errors.As(err, &pe) {
				return ending{err: err}
			}
			// Unresolvable: the job id is claimed first, so that the
			// failure is its one stored result, as for any other job.
			if end, ok := x.claim(ctx, t); !ok {
				return end
			}
			return ending{err: err}
		}
	}
	if end, ok := x.lockAndClaim(ctx, t); !ok {
		return end
	}
	if err := s.acquire(ctx); err != nil {
		return ending{what: stopping}
	}
	if j.Type == job.TypeCancel {
		out, err := x.cancel(ctx, t)
		return ending{out: out, err: err}
	}
	if err := x.guard(ctx, t); err != nil {
		return ending{err: err}
	}
	if !j.NotAfter.IsZero() && time.Now().After(j.NotAfter) {
		return ending{err: &expiredError{notAfter: j.NotAfter}}
	}
	if end, ok := x.admit(ctx, t); !ok {
		return end
	}
	x.noteLeaver(ctx, t, leaver.Running)
	out, err := x.run(ctx, t, t.sentBefore())
	return ending{out: out, err: x.recordOffboard(ctx, t, out, err)}
}

// run makes the handler's attempts within one delivery. Transient failures
// are retried with exponential backoff and jitter until the next pause
// would end after the quick-retry budget; rate-limit answers are waited
// out (the pacer holds the next call until the window resets) and do not
// count as retries. A type whose call cannot be read back is at most once:
// refused when an earlier delivery may have made the call, recorded in the
// ledger before each call, and not retried when the call's fate is unknown.
func (x *executor) run(ctx context.Context, t *task, sentBefore bool) (outcome, error) {
	j := t.job
	ctx = onelogin.WithRequestID(ctx, j.ID)
	if j.Type.Urgent() {
		ctx = onelogin.WithPriority(ctx, onelogin.PriorityUrgent)
	}
	once := j.Type.AtMostOnce()
	if once && sentBefore {
		if !readBack(j) {
			return outcome{}, &AmbiguousError{Op: string(j.Type), Earlier: true}
		}
		// A verify of a device is read back: active means an earlier
		// delivery's verify took effect.
		out, done, err := x.h.verifyReadBack(ctx, j)
		switch {
		case err != nil:
			x.logCallFailed(j, err)
			if k, _ := classify(err, j.Type); k == kindPermanent || k == kindCredentials {
				return outcome{}, err
			}
			return outcome{}, &RetryLaterError{Err: err, maySent: true}
		case done:
			return out, nil
		}
	}
	out, err := x.attempts(ctx, t, once)
	var rl *RetryLaterError
	retryLater := errors.As(err, &rl) && !rl.maySent
	if once && (retryLater || errors.Is(err, onelogin.ErrCredentials) || errors.Is(err, onelogin.ErrVerificationPending)) && !errors.Is(err, context.Canceled) {
		// Every attempt was refused (5xx, 429, no connection, a token
		// that could not be had, a pending answer): nothing happened, so
		// the next delivery may call again. If this write fails the next
		// delivery errs on the side of not calling.
		_ = x.setSent(context.WithoutCancel(ctx), t, false)
	}
	return out, err
}

// logCallFailed logs a failed OneLogin call with the job id and OneLogin's
// own X-Request-Id, for support cases.
func (x *executor) logCallFailed(j *job.Job, err error) {
	rid := onelogin.RequestIDOf(err)
	var pe *PermanentError
	if rid == "" && errors.As(err, &pe) {
		rid = pe.RequestID
	}
	attrs := []any{"job_id", j.ID, "type", j.Type, "err", err.Error()}
	if rid != "" {
		attrs = append(attrs, "onelogin_request_id", rid)
	}
	if s := onelogin.StatusCode(err); s != 0 {
		attrs = append(attrs, "http_status", s)
	}
	x.log.Warn("OneLogin call failed", attrs...)
}

func (x *executor) attempts(ctx context.Context, t *task, once bool) (outcome, error) {
	j := t.job
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(x.cfg.RetryInitial),
		backoff.WithMaxInterval(x.cfg.RetryMax),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0),
	)
	deadline := time.Now().Add(x.budgets.retryWithin)
	var a attempts
	for {
		var out outcome
		var err error
		if once {
			err = x.setSent(ctx, t, true)
		}
		if err == nil {
			out, err = x.h.attempt(ctx, j, &a)
			if err != nil {
				x.logCallFailed(j, err)
			}
			if err != nil && once && onelogin.MayHaveTakenEffect(err) {
				if !readBack(j) {
					err = &AmbiguousError{Op: string(j.Type), Err: err}
				} else {
					out, err = x.readBackAfter(ctx, j, err)
				}
			}
		}
		k, pe := classify(err, j.Type)
		switch k {
		case kindOK:
			return out, nil
		case kindPermanent:
			return out, pe
		case kindCredentials:
			if x.creds != nil {
				x.creds.refused(err)
			}
			return out, err
		case kindRetryLater, kindExpired, kindRejected, kindCancelled, kindPending:
			return out, err
		}
		if ctx.Err() != nil {
			return out, &RetryLaterError{Err: err, Delay: x.budgets.cancelledDelay}
		}
		wait := x.budgets.rateLimitPause
		if k == kindTransient {
			x.m.Retry(string(j.Type))
			wait = b.NextBackOff()
			if time.Now().Add(wait).After(deadline) {
				return out, &RetryLaterError{Err: err}
			}
		}
		if !pause.For(ctx, wait) {
			return out, &RetryLaterError{Err: err, Delay: x.budgets.cancelledDelay}
		}
	}
}

// readBackAfter settles a verify whose reply was lost (lost) by reading the
// device's active flag: active is success; inactive means the verify did
// not take effect, and it is retried in a later delivery (never in this
// one, which would send the OTP again at once); a failed read-back keeps
// the ledger's record that the verify may have been sent, so that the next
// delivery reads back first.
func (x *executor) readBackAfter(ctx context.Context, j *job.Job, lost error) (outcome, error) {
	out, done, err := x.h.verifyReadBack(ctx, j)
	switch {
	case err != nil:
		x.logCallFailed(j, err)
		if k, _ := classify(err, j.Type); k == kindPermanent || k == kindCredentials {
			return outcome{}, err
		}
		return outcome{}, &RetryLaterError{Err: fmt.Errorf("verify's reply lost (%v), and reading the device back failed: %w", lost, err), maySent: true}
	case done:
		return out, nil
	}
	return outcome{}, &RetryLaterError{Err: fmt.Errorf("verify's reply lost (%v); the device is not active, so it did not take effect", lost)}
}

// lockAndClaim takes the user's lock (not for a cancel, which changes
// only the ledger) and claims the job id, both at once: the two writes go
// out together instead of one after the other. The job runs only once it
// holds both; a delivery that must not run it (the claim finds a
// duplicate, a reused id, a cancel's tombstone, or fails) stops waiting
// for the lock, and a lock taken meanwhile is released after the
// settlement like any other. A lock that cannot be had gives the claim
// back with the nak.
func (x *executor) lockAndClaim(ctx context.Context, t *task) (ending, bool) {
	if t.job.Type == job.TypeCancel {
		return x.claim(ctx, t)
	}
	giveUp := make(chan struct{})
	locked := make(chan error, 1)
	go func() { locked <- x.lockUser(ctx, t, giveUp) }()
	end, ok := x.claim(ctx, t)
	if !ok {
		close(giveUp)
		<-locked
		return end, false
	}
	if err := <-locked; err != nil {
		return ending{err: &RetryLaterError{Err: err}}, false
	}
	return ending{}, true
}

// lockUser takes the user's lock, waiting in place (the heartbeat keeps the
// message alive) while another job holds it, unless giveUp is closed
// meanwhile. A lock left by a job that finished (see unlockUser) is taken
// over (lockFree); any other lapses with its lease when its holder dies.
// An attempt under way is never cut short, so that a lock the server
// granted is always known, and released.
func (x *executor) lockUser(ctx context.Context, t *task, giveUp <-chan struct{}) error {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(20*time.Millisecond), backoff.WithMaxInterval(500*time.Millisecond), backoff.WithMaxElapsedTime(0))
	deadline := time.Now().Add(x.budgets.lockWait)
	for {
		rev, ok, h, err := x.locks.TryAcquire(ctx, t.job.UserID, t.job.ID)
		if err == nil && !ok && h.Job != "" && x.lockFree(ctx, t, h.Job) {
			rev, ok, err = x.locks.TakeOver(ctx, t.job.UserID, t.job.ID, h.Rev)
		}
		if err == nil && ok {
			t.mu.Lock()
			t.lockRev = rev
			t.mu.Unlock()
			return nil
		}
		if err == nil {
			err = fmt.Errorf("user %d is locked by another job", t.job.UserID)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		if !pause.Unless(ctx, giveUp, b.NextBackOff()) {
			return err
		}
	}
}

// lockFree reports whether the lock that job holder left is free for t:
// the ledger holds holder finished, or holder is t's own job and t holds
// its claim. The second is a replay of a finished job whose claim (taken
// at the same time as the lock) came first and made the record running
// again; the claim keeps any other delivery of the job out.
func (x *executor) lockFree(ctx context.Context, t *task, holder string) bool {
	if holder == t.job.ID {
		t.mu.Lock()
		claimed := t.claim != nil && t.claim.Record.State == ledger.Running && t.claim.Record.Owner == x.owner
		t.mu.Unlock()
		if claimed {
			return true
		}
	}
	e, err := x.ledger.Get(ctx, holder)
	return err == nil && e.State == ledger.Finished
}

// unlockUser gives the user's lock back after the settlement. A job whose
// ledger record is finished leaves the lock in place, naming it: the next
// job of the user takes it over (lockUser), and on this replica with one
// write. Any other ending deletes it.
func (x *executor) unlockUser(ctx context.Context, t *task) {
	t.mu.Lock()
	rev, done := t.lockRev, t.recorded
	t.lockRev = 0
	t.mu.Unlock()
	if rev == 0 {
		return
	}
	if done {
		x.locks.Keep(t.job.UserID, rev)
		return
	}
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	if err := x.locks.Release(ctx, t.job.UserID, rev); err != nil {
		x.log.Warn("releasing the user lock failed; it lapses with its lease", "job_id", t.job.ID, "err", err)
	}
}
