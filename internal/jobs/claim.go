package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/pause"
)

// The ledger's side of a delivery: what the record of a job id says to a
// message (read), taking the id (claim, and for an invalid job its
// rejection), and changing the claim afterwards (updateClaim). None of it
// settles a message: each returns what it found, as an ending when the
// delivery ends there.

// answer is what the ledger's record of a job id says to a message of that
// job.
type answer int

const (
	ansTombstone answer = iota // a cancel waits for the job: it ends cancelled
	ansReused                  // the id belongs to a job with another body
	ansScheduled               // the job waits as a schedule, or its schedule fired
	ansFinished                // the job finished: answered from the record
	ansReplay                  // finished and dead-lettered, and the message is its granted replay
	ansLapsed                  // running, and the owner's lease lapsed
	ansRunning                 // running under a live lease
	ansHeld                    // held by the blast-radius guard: released or discarded, or its message back
)

// read is the one reading of e, the ledger's record of t's job id, for a
// message whose body hashes to hash. With useGrant the replay grant the
// message names is consumed (see granted); without it, ansReplay means the
// message may be a granted replay, which its claim finds out.
func (x *executor) read(ctx context.Context, t *task, e *ledger.Entry, hash string, useGrant bool) answer {
	switch {
	case e.State == ledger.Tombstone:
		return ansTombstone
	case e.Hash != hash:
		return ansReused
	case e.State == ledger.Scheduled:
		return ansScheduled
	case e.State == ledger.Held:
		return ansHeld
	case e.State == ledger.Finished:
		if mayReplay(t, e) && (!useGrant || x.granted(ctx, t, e)) {
			return ansReplay
		}
		return ansFinished
	case !time.Now().Before(e.LeaseUntil):
		return ansLapsed
	}
	return ansRunning
}

// claim takes ownership of the job id in the ledger. ok reports that this
// delivery runs the job; otherwise the ending says why not: the ledger was
// out of reach, the job finished already (a duplicate), the id belongs to
// another body, or a cancel waited for the job. It runs under the user's
// lock, so a live running record belongs to a replica that lost that lock
// (stalled past its lease); it is waited out, then taken over.
func (x *executor) claim(ctx context.Context, t *task) (end ending, ok bool) {
	j := t.job
	fresh := func() ledger.Record {
		return ledger.Record{State: ledger.Running, Hash: j.Hash, Owner: x.owner, LeaseUntil: time.Now().Add(x.cfg.Lease), UpdatedAt: time.Now(), JobTime: t.jobTime}
	}
	retry := func(err error) (ending, bool) { return ending{err: &RetryLaterError{Err: err}}, false }
	deadline := time.Now().Add(x.budgets.claimWait)
	for {
		rec := fresh()
		err := x.take(ctx, t, rec, nil)
		if err == nil {
			return ending{}, true
		}
		if !errors.Is(err, ledger.ErrExists) {
			return retry(err)
		}
		e, err := x.ledger.Get(ctx, j.ID)
		if errors.Is(err, ledger.ErrNotFound) {
			continue // expired between the two calls
		}
		if err != nil {
			return retry(err)
		}
		a := x.read(ctx, t, e, j.Hash, true)
		if a != ansTombstone && a != ansReused && !e.JobTime.IsZero() && !t.timeFromHeader && j.NotBefore.IsZero() && j.RequestedAt.IsZero() {
			// The first message's time, kept by the ledger (a replay
			// whose dead letter lost the header).
			t.jobTime, rec.JobTime = e.JobTime, e.JobTime
		}
		switch a {
		case ansTombstone:
			c, binds := e.Binding(j.Source)
			if !binds {
				// Only cancels of other scopes came first: they have no
				// hold on this job, which runs.
				if err = x.take(ctx, t, rec, e); err == nil {
					return ending{}, true
				}
				break
			}
			// A cancel that may end this job came first: claim the id to
			// end the job cancelled.
			rec.CancelledBy, rec.CancelScope = c.By, c.Scope
			err = x.take(ctx, t, rec, e)
			if err == nil {
				return ending{out: outcome{Data: job.CancelledData{CancelledBy: c.By, CancelScope: c.Scope}}, err: &CancelledError{
					Code: job.CodeCancelled, Message: "cancelled by job " + c.By + " before it arrived", CancelledBy: c.By}}, false
			}
		case ansReused:
			return ending{what: reused}, false
		case ansFinished:
			return answered(e), false
		case ansScheduled, ansHeld, ansReplay, ansLapsed:
			// A fired schedule (or its message back when due), a held job
			// released or discarded (or its message back: the guard
			// decides again), a dead letter re-driven with its grant
			// consumed, or a job whose owner died or gave it back: run it. The replay tag is the
			// record's, never the message's header, except for the replay
			// just granted; a takeover keeps the record of calls that may
			// have been made.
			switch a {
			case ansScheduled, ansHeld:
				rec.Replay = e.Replay
			case ansReplay:
				rec.Replay = job.ReplayTag(t.replay)
			case ansLapsed:
				rec.Sent, rec.Replay = e.Sent, e.Replay
			}
			if err = x.take(ctx, t, rec, e); err == nil {
				return ending{}, true
			}
		case ansRunning:
			if time.Now().After(deadline) {
				return retry(fmt.Errorf("job is running elsewhere (lease until %s)", e.LeaseUntil.UTC().Format(time.RFC3339)))
			}
			if !pause.For(ctx, min(time.Until(e.LeaseUntil)+10*time.Millisecond, time.Second)) {
				return retry(ctx.Err())
			}
			continue
		}
		if !errors.Is(err, ledger.ErrConflict) {
			return retry(err)
		}
	}
}

// answerFromLedger answers a job named by a selector from the ledger when
// its id has finished already, before any OneLogin call: a duplicate costs
// no lookup, and a person deleted since cannot turn a stored success into a
// user_not_found. ok reports that the delivery ends with the ending.
func (x *executor) answerFromLedger(ctx context.Context, t *task) (end ending, ok bool) {
	e, err := x.ledger.Get(ctx, t.job.ID)
	if err != nil {
		return ending{}, false // not found, or unreadable: the claim decides later
	}
	switch x.read(ctx, t, e, t.job.Hash, false) {
	case ansReused:
		return ending{what: reused}, true
	case ansFinished:
		return answered(e), true
	}
	// Running, scheduled, a cancel's tombstone, or perhaps a dead letter
	// re-driven with a grant: the claim decides (and consumes the grant)
	// after the lookup.
	return ending{}, false
}

// recordRejection records an invalid job's rejection as its id's final
// outcome (the rejection's claim): the id then has exactly one result, and
// a corrected job must use a new id. A rejection whose id cannot be read is
// not recorded. When the ledger holds the id already, the ending answers
// from its record (the same body again) or is reused (another body),
// unless the message is a granted replay of this rejection. A failed write
// is kept in the ending for settle.
func (x *executor) recordRejection(ctx context.Context, t *task) ending {
	end := ending{err: t.rej}
	res, ok := t.rej.Result(t.attempts, t.received, time.Now())
	if !ok {
		return end
	}
	id := t.rej.JobID
	rec := ledger.Record{
		State: ledger.Finished, Hash: job.RejectionHash(t.msg.Data()), Outcome: string(job.Rejected),
		DeadLettered: true, Seq: t.seq, UpdatedAt: time.Now(),
	}
	written := func(err error) ending {
		end.result, end.resultID = res, rec.ResultMsgID
		end.unrecorded = err
		return end
	}
	for {
		rec.Replay = ""
		rec.ResultMsgID = job.ResultMsgID(id, 0)
		rec.Result = res.Marshal()
		if _, err := x.ledger.Create(ctx, id, rec); err == nil || !errors.Is(err, ledger.ErrExists) {
			return written(err)
		}
		e, err := x.ledger.Get(ctx, id)
		if errors.Is(err, ledger.ErrNotFound) {
			continue
		}
		if err != nil {
			return written(err)
		}
		switch x.read(ctx, t, e, rec.Hash, true) {
		case ansTombstone:
			// A cancel waited for this id; the job is invalid, so its one
			// result is the rejection, which replaces the tombstone.
		case ansReused:
			return ending{what: reused}
		case ansReplay:
			rec.Replay = job.ReplayTag(t.replay)
			rec.ResultMsgID = job.ResultMsgID(id, t.replay)
		default:
			return answered(e)
		}
		if _, err := x.ledger.Update(ctx, id, rec, e.Revision); !errors.Is(err, ledger.ErrConflict) {
			return written(err)
		}
	}
}

// answered is the ending of a message whose job the ledger holds as
// finished in e: answered from the stored result, or retried when that is
// unreadable.
func answered(e *ledger.Entry) ending {
	var res job.Result
	if err := json.Unmarshal(e.Result, &res); err != nil {
		return ending{err: &RetryLaterError{Err: fmt.Errorf("stored result unreadable: %w", err)}}
	}
	return ending{what: duplicate, entry: e, result: &res, resultID: e.ResultMsgID}
}

// mayReplay reports whether a message may run the job that e records as
// finished again, if the ledger holds its grant: it carries Mfa-Replay of a
// dead letter (the job's outcome dead-lettered) that this record is not
// already the replay of.
func mayReplay(t *task, e *ledger.Entry) bool {
	if t.replay == 0 || !job.Outcome(e.Outcome).DeadLetters() {
		return false
	}
	prev, ok := job.ParseReplay(e.Replay)
	return !ok || prev != t.replay
}

// granted consumes the grant for (job id, the message's DLQ sequence) that
// lets a message run the job that e records as finished again (see
// mayReplay). A header without a grant changes nothing.
func (x *executor) granted(ctx context.Context, t *task, e *ledger.Entry) bool {
	if x.grants == nil {
		return false
	}
	ok, err := x.grants.UseGrant(ctx, t.jobID(), t.replay, e.Revision)
	if err != nil {
		x.log.Warn("reading the replay grant failed; handled as a duplicate", "job_id", t.jobID(), "replay", t.replay, "err", err)
		return false
	}
	if !ok {
		x.log.Warn("Mfa-Replay without a grant; handled as a duplicate", "job_id", t.jobID(), "replay", t.replay)
	}
	return ok
}

// replayOf is the DLQ sequence of the replay a record belongs to (0: none).
func replayOf(rec *ledger.Record) uint64 {
	if rec == nil {
		return 0
	}
	n, _ := job.ParseReplay(rec.Replay)
	return n
}

// take writes rec as the record of t's job id, creating it (from nil:
// ledger.ErrExists when there is one) or replacing from (ledger.ErrConflict
// when it changed since), and holds it as the task's claim.
func (x *executor) take(ctx context.Context, t *task, rec ledger.Record, from *ledger.Entry) error {
	var rev uint64
	var err error
	if from == nil {
		rev, err = x.ledger.Create(ctx, t.job.ID, rec)
	} else {
		rev, err = x.ledger.Update(ctx, t.job.ID, rec, from.Revision)
	}
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.claim, t.firstClaim = &ledger.Entry{Record: rec, Revision: rev}, from == nil
	return nil
}

// updateClaim changes the task's claim by compare-and-set: change edits a
// copy of the record and reports whether there is anything to write. It
// runs under the task's lock, as the heartbeat's renewal does, so the two
// never write from the same revision. Without a claim it does nothing.
func (x *executor) updateClaim(ctx context.Context, t *task, change func(*ledger.Record) bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.claim == nil {
		return nil
	}
	rec := t.claim.Record
	if !change(&rec) {
		return nil
	}
	rev, err := x.ledger.Update(ctx, t.job.ID, rec, t.claim.Revision)
	if err != nil {
		return err
	}
	t.claim = &ledger.Entry{Record: rec, Revision: rev}
	return nil
}

// setSent records, before a call that cannot be read back, that it may
// have been made (sent true), or that none was after all (false).
func (x *executor) setSent(ctx context.Context, t *task, sent bool) error {
	err := x.updateClaim(ctx, t, func(rec *ledger.Record) bool {
		if rec.Sent == sent {
			return false
		}
		rec.Sent, rec.UpdatedAt = sent, time.Now()
		return true
	})
	if err != nil {
		return fmt.Errorf("record call intent: %w", err)
	}
	return nil
}

// releaseForRetry is release, noting in the record the deliveries so far,
// the error code that made the job retry and when it comes back, for the
// job query (worker job, submit --wait).
func (x *executor) releaseForRetry(ctx context.Context, t *task, code string, next time.Time) {
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	_ = x.updateClaim(ctx, t, func(rec *ledger.Record) bool {
		if rec.State != ledger.Running {
			return false
		}
		now := time.Now()
		rec.LeaseUntil, rec.UpdatedAt = now, now
		rec.Attempts, rec.LastErrorCode, rec.NextRetryAt = t.attempts, code, next.UTC()
		return true
	})
}

// retryCode is the error code of a delivery given back for a retry, as the
// contract names the retryable ones.
func retryCode(err error) string {
	var ae *AmbiguousError
	switch {
	case errors.Is(err, onelogin.ErrCredentials):
		return job.CodeCredentials
	case errors.Is(err, onelogin.ErrVerificationPending):
		return job.CodeVerificationPending
	case onelogin.StatusCode(err) == http.StatusTooManyRequests:
		return job.CodeRateLimited
	case errors.Is(err, ledger.ErrConflict), errors.Is(err, ledger.ErrNotFound):
		return job.CodeLedgerUnavailable
	case errors.As(err, &ae):
		return job.CodeAmbiguousEffect
	}
	return job.CodeOneLoginUnavailable
}

// release gives a running claim back before a nak, so that the next
// delivery takes the job over at once instead of waiting for the lease.
func (x *executor) release(ctx context.Context, t *task) {
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	_ = x.updateClaim(ctx, t, func(rec *ledger.Record) bool {
		if rec.State != ledger.Running {
			return false
		}
		rec.LeaseUntil, rec.UpdatedAt = time.Now(), time.Now()
		return true
	})
}
