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
)

func (a action) String() string {
	return [...]string{"ack", "nak", "term"}[a]
}

// verdict is decide's answer: the job's outcome and error object (none
// when the message is nak'ed) and the message's fate.
type verdict struct {
	outcome job.Outcome
	info    *job.ErrorInfo
	action  action
	delay   time.Duration // actNak only
}

// code is the verdict's error code, if any.
func (v verdict) code() string {
	if v.info == nil {
		return ""
	}
	return v.info.Code
}

// decideFinished is the fate of a message whose job the ledger holds as
// finished (outcome o, error info). The same message again (a lost ack, a
// crash after the ledger write) is settled as the first time; another
// message with the same id is a duplicate, acked whatever the original's
// fate.
func decideFinished(o job.Outcome, info *job.ErrorInfo, sameMessage bool) verdict {
	if !sameMessage {
		return verdict{outcome: job.Succeeded, info: info, action: actAck}
	}
	if o.DeadLetters() {
		return verdict{outcome: o, info: info, action: actTerm}
	}
	return verdict{outcome: o, info: info, action: actAck}
}

// policy is what decide needs of the configuration.
type policy struct {
	maxDeliver      int
	nakBase, nakMax time.Duration
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

// decide is the one place that chooses a job's outcome and its message's
// fate from how its last attempt ended: done is the handler's outcome when
// err is nil; attempts is the delivery count (1 on the first delivery).
// It is pure: no I/O, no clock.
func decide(done job.Outcome, err error, attempts int, p policy, t job.Type) verdict {
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

// expiredError is a job whose not_after passed before it could run.
type expiredError struct{ notAfter time.Time }

func (e *expiredError) Error() string {
	return "not_after " + e.notAfter.UTC().Format(time.RFC3339) + " passed before the job could run"
}
