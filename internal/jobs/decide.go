package jobs

import (
	"errors"
	"fmt"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// kind is what an attempt's error means.
type kind int

const (
	kindOK          kind = iota
	kindPermanent        // the job fails now
	kindTransient        // worth another attempt: quickly in this delivery, then by a nak
	kindRateLimited      // the OneLogin window is spent: wait for it, not a failed attempt
	kindRetryLater       // give the message back now (shutdown, a handler's request)
	kindExpired          // not_after passed before the job ran
	kindRejected         // the job is invalid
	kindCancelled        // a cancel job or the resurrection guard ended the job
	kindCredentials      // OneLogin refused the worker's own credentials: not the job's failure
	kindPending          // a verify answered pending: poll again in a later delivery, never at once
)

// classify is the one reading of an attempt's error, used by the quick
// retries of the executor and by decide. A permanent error comes back as
// the PermanentError to report.
func classify(err error, t job.Type) (kind, *PermanentError) {
	var (
		pe *PermanentError
		ae *AmbiguousError
		rl *RetryLaterError
		ee *expiredError
		rj *job.Rejection
		ce *CancelledError
	)
	switch {
	case err == nil:
		return kindOK, nil
	case errors.As(err, &ce):
		return kindCancelled, nil
	case errors.Is(err, onelogin.ErrCredentials):
		return kindCredentials, nil
	case errors.Is(err, onelogin.ErrVerificationPending):
		return kindPending, nil
	case errors.As(err, &rj):
		return kindRejected, nil
	case errors.As(err, &ee):
		return kindExpired, nil
	case errors.As(err, &pe):
		return kindPermanent, pe
	case errors.As(err, &ae):
		if t.AtMostOnce() {
			return kindPermanent, &PermanentError{Code: job.CodeAmbiguousEffect, Message: ae.Error(), HTTPStatus: onelogin.StatusCode(ae.Err)}
		}
		// A type that reads before it writes finds out on its next
		// attempt whether the call took effect.
		return kindTransient, nil
	case errors.As(err, &rl):
		return kindRetryLater, nil
	}
	switch onelogin.Classify(err) {
	case onelogin.Permanent:
		return kindPermanent, failure(t, string(t), err)
	case onelogin.RateLimited:
		return kindRateLimited, nil
	}
	return kindTransient, nil
}

// action is what happens to a job message.
type action int

const (
	actAck  action = iota // done: the result is published
	actNak                // deliver again after the verdict's delay
	actTerm               // done and dead-lettered: never deliver again
	// actLeave: the message is left alone and comes back after its ack
	// wait (another replica took the job over and owns its outcome).
	actLeave
)

func (a action) String() string {
	return [...]string{"ack", "nak", "term", "leave"}[a]
}

// verdict is a policy's answer: the job's outcome and error object (none
// when the message is nak'ed) and the message's fate. A terminated message
// gets a DLQ copy first.
type verdict struct {
	outcome job.Outcome
	info    *job.ErrorInfo
	action  action
	delay   time.Duration // actNak only
	// noResult: the message's fate is carried out without (re)publishing
	// a result (an id reused for another body, a fired schedule of a job
	// that ended meanwhile).
	noResult bool
}

// code is the verdict's error code, if any.
func (v verdict) code() string {
	if v.info == nil {
		return ""
	}
	return v.info.Code
}

// policy chooses every fate of a job message; settle.go carries them out.
// Its methods are pure: no I/O, no clock.
type policy struct {
	maxDeliver      int
	nakBase, nakMax time.Duration
	// stopDelay: the nak delay of a job the worker's shutdown cut short
	// or kept from starting; unstored: the nak delay when the result
	// could not be recorded.
	stopDelay, unstored time.Duration
}

// nakDelay is the redelivery delay after the given delivery: doubling from
// nakBase, capped at nakMax.
func (p policy) nakDelay(delivery int) time.Duration {
	d := p.nakBase
	for i := 1; i < delivery && d < p.nakMax; i++ {
		d *= 2
	}
	return min(d, p.nakMax)
}

// notStarted is the fate of a message whose job never started: the worker
// stops, OneLogin refuses the worker's credentials, or the job's user holds
// held messages of this replica already (the delay grows with them). It is
// given back, never failed.
func (p policy) notStarted(why what, held int) verdict {
	switch why {
	case gated:
		return verdict{action: actNak, delay: p.nakBase}
	case busy:
		return verdict{action: actNak, delay: min(p.nakMax, max(p.nakBase, time.Duration(held)*time.Second))}
	}
	return verdict{action: actNak, delay: p.stopDelay}
}

// parked is the fate of a job that now waits as a JetStream schedule: its
// message is acked without a result (a lost ack only schedules it again,
// idempotently).
func (p policy) parked() verdict { return verdict{action: actAck, noResult: true} }

// held is the fate of a job the blast-radius guard holds: its ledger
// record is held, so its message is acked without a result (the
// operator's release or discard publishes it again; a lost ack brings it
// back, and the guard holds it again).
func (p policy) held() verdict { return verdict{action: actAck, noResult: true} }

// reused is the fate of a message whose id the ledger holds for a job with
// another body: the id has its result already, so this message gets none,
// only a DLQ copy with id_reused.
func (p policy) reused() verdict {
	return verdict{outcome: job.Rejected, action: actTerm, noResult: true, info: &job.ErrorInfo{
		Code: job.CodeIDReused, Message: "this id was already used for a job with a different body"}}
}

// finished is the fate of a message whose job the ledger holds as finished
// (outcome o, error info). The same message again (a lost ack, a crash
// after the ledger write) is settled as the first time; another message
// with the same id is a duplicate, acked with the stored result whatever
// the original's fate; a schedule that fired for a job that ended
// meanwhile (a cancel, or its original message came back when due) is
// acked without one, the result being out.
func (p policy) finished(o job.Outcome, info *job.ErrorInfo, sameMessage, fired bool) verdict {
	switch {
	case !sameMessage && fired:
		return verdict{outcome: o, info: info, action: actAck, noResult: true}
	case !sameMessage:
		return verdict{outcome: job.Succeeded, info: info, action: actAck}
	case o.DeadLetters():
		return verdict{outcome: o, info: info, action: actTerm}
	}
	return verdict{outcome: o, info: info, action: actAck}
}

// Settlement failures. Each takes the verdict being carried out and
// returns the fate instead, which may be the verdict itself: on the last
// deliveries a job is settled without the missing piece rather than left
// in MFA_JOBS.

// unrecorded: the final result could not be written to the ledger. The
// message comes back, unless this delivery is past the last one.
func (p policy) unrecorded(v verdict, attempts int) verdict {
	if attempts >= p.maxDeliver+1 {
		return v
	}
	return verdict{action: actNak, delay: p.unstored}
}

// rejectionUnrecorded: an invalid job's rejection could not be written to
// the ledger. The message comes back, unless this is the last delivery;
// then the result goes out unrecorded.
func (p policy) rejectionUnrecorded(v verdict, attempts int) verdict {
	if attempts >= p.maxDeliver {
		return v
	}
	return verdict{action: actNak, delay: p.nakDelay(attempts)}
}

// deadLetterFailed: the DLQ copy could not be written. The message comes
// back, unless this is the last delivery: no job message stays in MFA_JOBS
// for lack of a DLQ copy.
func (p policy) deadLetterFailed(v verdict, attempts int) verdict {
	if attempts >= p.maxDeliver {
		return v
	}
	return verdict{action: actNak, delay: p.nakDelay(1)}
}

// publishFailed: the result could not be published. The ledger holds it;
// the message comes back and the redelivery publishes it again.
func (p policy) publishFailed() verdict { return verdict{action: actNak, delay: p.nakDelay(1)} }

// takenOver: the claim was lost to another replica (our lease lapsed),
// which owns the outcome now; the message is left to its ack wait.
func (p policy) takenOver() verdict { return verdict{action: actLeave} }

// decide chooses a job's outcome and its message's fate from how its last
// attempt ended: done is the handler's outcome when err is nil; attempts is
// the delivery count (1 on the first delivery).
func (p policy) decide(done job.Outcome, err error, attempts int, t job.Type) verdict {
	k, pe := classify(err, t)
	switch k {
	case kindOK:
		if done.DeadLetters() {
			return verdict{outcome: done, action: actTerm}
		}
		return verdict{outcome: done, action: actAck}
	case kindRejected:
		var rj *job.Rejection
		errors.As(err, &rj)
		return verdict{outcome: job.Rejected, info: &job.ErrorInfo{Code: rj.Code, Message: rj.Message}, action: actTerm}
	case kindCancelled:
		var ce *CancelledError
		errors.As(err, &ce)
		return verdict{outcome: job.Cancelled, info: &job.ErrorInfo{Code: ce.Code, Message: ce.Message}, action: actAck}
	case kindExpired:
		var ee *expiredError
		errors.As(err, &ee)
		return verdict{outcome: job.Expired, info: &job.ErrorInfo{Code: job.CodeExpired, Message: ee.Error()}, action: actTerm}
	case kindPermanent:
		return verdict{outcome: job.Failed, info: &job.ErrorInfo{Code: pe.Code, Message: pe.Message, HTTPStatus: pe.HTTPStatus}, action: actTerm}
	case kindCredentials:
		// Never a failure, whatever the delivery count: the worker stops
		// fetching until a token is obtained, then the job runs.
		return verdict{action: actNak, delay: p.nakBase}
	case kindPending:
		// Not verified. A quick retry would send the OTP again at once;
		// a later delivery polls again after the growing nak delay, and
		// the last allowed delivery fails the job, never active.
		if attempts >= p.maxDeliver {
			return verdict{outcome: job.Failed, action: actTerm, info: &job.ErrorInfo{
				Code: job.CodeVerificationPending, Retryable: true, HTTPStatus: onelogin.StatusCode(err),
				Message: fmt.Sprintf("OneLogin still answered pending after %d deliveries: not verified", attempts),
			}}
		}
		return verdict{action: actNak, delay: p.nakDelay(attempts)}
	}
	if attempts >= p.maxDeliver {
		cause := err
		var rl *RetryLaterError
		if errors.As(err, &rl) {
			cause = rl.Err
		}
		return verdict{outcome: job.Failed, action: actTerm, info: &job.ErrorInfo{
			Code: job.CodeRetriesExhausted, Retryable: true, HTTPStatus: onelogin.StatusCode(cause),
			Message: fmt.Sprintf("gave up after %d deliveries; last error: %v", attempts, cause),
		}}
	}
	delay := time.Duration(0)
	var rl *RetryLaterError
	if errors.As(err, &rl) {
		delay = rl.Delay
	}
	if delay == 0 {
		delay = p.nakDelay(attempts)
	}
	return verdict{action: actNak, delay: delay}
}
