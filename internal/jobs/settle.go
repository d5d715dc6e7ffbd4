package jobs

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
)

// Settlement: the only file that acks, naks or terminates a job message
// (the heartbeat's InProgress aside). settle takes what a delivery came to,
// asks the policy for its fate (decide.go) and carries it out: the ledger
// is written before the DLQ copy and the result are published, and the
// message is settled only after all of them. Settlement runs even while the
// worker shuts down: it keeps ctx's values, not its cancellation, and has
// its own time limit.

// settle is the one exit of a delivery.
func (x *executor) settle(ctx context.Context, t *task, e ending) {
	p := x.policy
	switch e.what {
	case stopping, gated, busy:
		x.carry(t, p.notStarted(e.what, e.held))
	case parked:
		x.carry(t, p.parked())
	case withheld:
		x.carry(t, p.held())
		x.log.Info("job held by the blast-radius guard", "job_id", t.jobID(), "type", t.jobType(), "attempts", t.attempts)
	case reused:
		x.reused(ctx, t)
	case duplicate:
		x.redeliver(ctx, t, e)
	default:
		v := p.decide(e.out.Outcome, e.err, t.attempts, t.jobType())
		switch {
		case v.action == actNak:
			x.retry(ctx, t, v, e.err)
		case t.rej != nil:
			x.reject(ctx, t, v, e)
		default:
			x.finish(ctx, t, v, e.out.Data)
		}
	}
}

// carry settles the message as v says: the only Ack, Nak and Term of a
// job message. A failure is logged: an ack or term that is lost makes a
// redelivery that the ledger answers, a nak that is lost brings the
// message back after its ack wait.
func (x *executor) carry(t *task, v verdict) {
	var err error
	switch v.action {
	case actAck:
		err = t.msg.Ack()
	case actTerm:
		err = t.msg.TermWithReason(v.code())
	case actNak:
		t.stopBeat()
		err = t.msg.NakWithDelay(v.delay)
	case actLeave:
		return
	}
	if err != nil {
		x.log.Warn("settling the message failed; it is delivered again", "action", v.action.String(), "subject", t.msg.Subject(), "seq", t.seq, "err", err)
	}
}

// retry gives the message back as v says, after giving the claim back.
func (x *executor) retry(ctx context.Context, t *task, v verdict, err error) {
	x.releaseForRetry(ctx, t, retryCode(err), time.Now().Add(v.delay))
	x.m.Retry(string(t.jobType()))
	x.carry(t, v)
	var rl *RetryLaterError
	if errors.As(err, &rl) {
		err = rl.Err
	}
	x.log.Info("job will be retried", "job_id", t.jobID(), "type", t.jobType(), "attempts", t.attempts, "delay", v.delay.String(), "err", err.Error())
}

// finish records the final result in the ledger, then publishes it (and the
// DLQ copy), then settles the message.
func (x *executor) finish(ctx context.Context, t *task, v verdict, data job.Data) {
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	j := t.job
	now := time.Now()
	res := j.Result(v.outcome, t.attempts, t.received, now, v.info, data)
	body := res.Marshal()
	// Without a claim (the lock or the ledger stayed out of reach until the
	// deliveries ran out) there is no record to finish. The result id is
	// the claim's: a granted replay's, or the job's one result.
	t.mu.Lock()
	var replay uint64
	if t.claim != nil {
		replay = replayOf(&t.claim.Record)
	}
	t.mu.Unlock()
	resID := job.ResultMsgID(j.ID, replay)
	err := x.updateClaim(ctx, t, func(rec *ledger.Record) bool {
		rec.State, rec.Owner, rec.LeaseUntil = ledger.Finished, "", time.Time{}
		rec.Outcome, rec.Result, rec.ResultMsgID = string(v.outcome), body, resID
		rec.DeadLettered, rec.Seq, rec.UpdatedAt = v.outcome.DeadLetters(), t.seq, now
		return true
	})
	if errors.Is(err, ledger.ErrConflict) {
		x.carry(t, x.policy.takenOver())
		x.log.Warn("job taken over by another replica; result not published", "job_id", j.ID)
		return
	}
	t.mu.Lock()
	t.recorded = err == nil && t.claim != nil && t.claim.Record.State == ledger.Finished
	t.mu.Unlock()
	if err != nil {
		if f := x.policy.unrecorded(v, t.attempts); f.action == actNak {
			x.release(ctx, t)
			x.carry(t, f)
			x.log.Warn("recording the result failed; job will be redelivered", "job_id", j.ID, "err", err)
			return
		}
		x.log.Error("recording the result failed on the last delivery", "job_id", j.ID, "err", err)
	}
	if x.deliver(ctx, t, res.Subject(), body, resID, v) {
		x.m.JobFinished(string(j.Type), string(v.outcome), now.Sub(t.received))
		if v.outcome == job.Cancelled {
			x.m.JobCancelled(string(j.Type), v.code(), j.Source)
		}
		x.logFinished(t, v.outcome, v.code())
	}
}

// redeliver answers a job the ledger holds as finished. The same message
// coming back (a lost ack, a crash after the ledger write) gets the whole
// settlement again; another message with the same id is a duplicate and
// only gets the stored result again.
func (x *executor) redeliver(ctx context.Context, t *task, end ending) {
	e, res := end.entry, end.result
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	t.mu.Lock()
	t.recorded = true // the ledger holds the job finished
	t.mu.Unlock()
	same := e.Seq == t.seq
	if !same {
		x.m.Duplicate(string(t.jobType()))
	}
	v := x.policy.finished(job.Outcome(e.Outcome), res.Error, same, t.fired)
	if x.deliver(ctx, t, res.Subject(), e.Result, e.ResultMsgID, v) && !v.noResult {
		x.log.Info("job already finished; stored result published again", "job_id", t.jobID(), "type", t.jobType(), "outcome", e.Outcome, "duplicate", !same)
	}
}

// reused ends a message whose id the ledger holds for a job with another
// body, counted as a duplicate.
func (x *executor) reused(ctx context.Context, t *task) {
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	x.m.Duplicate(string(t.jobType()))
	if x.deliver(ctx, t, "", nil, "", x.policy.reused()) {
		x.log.Warn("job id reused for another body; dead-lettered without a result", "job_id", t.jobID(), "type", t.jobType(), "code", job.CodeIDReused, "subject", t.msg.Subject(), "seq", t.seq)
	}
}

// reject ends an invalid job, whose rejection execute recorded in the
// ledger (recordRejection): the DLQ copy, the result <id>:result, and the
// message terminated. A rejection whose id cannot be read gets no result,
// only a DLQ copy. OneLogin is never called.
func (x *executor) reject(ctx context.Context, t *task, v verdict, e ending) {
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	r := t.rej
	typ := r.Type
	if !typ.Valid() {
		typ = "unknown"
	}
	var subject string
	var body []byte
	if e.result != nil {
		subject, body = e.result.Subject(), e.result.Marshal()
	}
	if err := e.unrecorded; err != nil {
		if f := x.policy.rejectionUnrecorded(v, t.attempts); f.action == actNak {
			x.carry(t, f)
			x.log.Warn("recording the rejection failed; job will be redelivered", "job_id", r.JobID, "err", err)
			return
		}
		x.log.Error("recording the rejection failed on the last delivery; result published unrecorded", "job_id", r.JobID, "err", err)
	}
	if x.deliver(ctx, t, subject, body, e.resultID, v) {
		x.m.JobFinished(string(typ), string(job.Rejected), time.Since(t.received))
		x.logRejected(t, typ)
	}
}

func (x *executor) logRejected(t *task, typ job.Type) {
	r := t.rej
	x.log.Info("job rejected", "job_id", r.JobID, "type", typ, "outcome", job.Rejected, "code", r.Code, "reason", r.Message, "subject", t.msg.Subject(), "seq", t.seq, "attempts", t.attempts)
}

// deliver publishes the DLQ copy (when v terminates the message) and the
// result (when resID is set and v has one), then settles the message as v
// says. It reports whether the message was settled as v says.
func (x *executor) deliver(ctx context.Context, t *task, subject string, body []byte, resID string, v verdict) bool {
	// The DLQ copy goes first: whoever sees a failed result finds its dead
	// letter already there. Both are idempotent by message id, so a
	// redelivery after a failure between them publishes neither twice.
	if v.action == actTerm {
		if err := x.deadLetter(ctx, t, v.outcome, v.code()); err != nil {
			if f := x.policy.deadLetterFailed(v, t.attempts); f.action == actNak {
				x.nakAfterPublishFailure(t, f, "dead letter", err)
				return false
			}
			x.log.Error("the DLQ copy could not be written on the last delivery; message settled without it", "subject", t.msg.Subject(), "seq", t.seq, "code", v.code(), "err", err)
		}
	}
	if resID != "" && !v.noResult {
		if err := x.publish(ctx, subject, body, resID, nil); err != nil {
			x.nakAfterPublishFailure(t, x.policy.publishFailed(), "result", err)
			return false
		}
	}
	x.carry(t, v)
	return true
}

func (x *executor) nakAfterPublishFailure(t *task, v verdict, what string, err error) {
	x.log.Warn("publish failed; job will be redelivered", "what", what, "subject", t.msg.Subject(), "seq", t.seq, "err", err)
	x.carry(t, v)
}

// publish sends one message to a stream, retrying briefly.
func (x *executor) publish(ctx context.Context, subject string, data []byte, msgID string, h nats.Header) error {
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	for k, v := range h {
		m.Header[k] = v
	}
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	op := func() error {
		_, err := x.pub.PublishMsg(ctx, m)
		return err
	}
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(50*time.Millisecond), backoff.WithMaxInterval(time.Second), backoff.WithMaxElapsedTime(x.budgets.publish))
	return backoff.Retry(op, backoff.WithContext(b, ctx))
}

// deadLetter copies the job to mfa.dlq.<type>, whatever its subject or
// type with every otp_token, state_token and mfa_token blanked, a body that
// is not JSON and names one replaced by its size and hash, and the body cut
// to 64 KiB (see job.ForDLQ). No header holds anything from the body but
// the job id.
func (x *executor) deadLetter(ctx context.Context, t *task, reason job.Outcome, code string) error {
	typ := t.jobType()
	if !typ.Valid() {
		typ = "unknown"
	}
	d := job.ForDLQ(t.msg.Data())
	h := nats.Header{}
	h.Set(job.HeaderReason, string(reason))
	h.Set(job.HeaderErrorCode, code)
	h.Set(job.HeaderDeliveries, strconv.Itoa(t.attempts))
	h.Set(job.HeaderOriginalSubject, t.msg.Subject())
	if id := t.jobID(); id != "" {
		h.Set(job.HeaderJobID, id)
	}
	if k := t.userSelector(); k != "" {
		h.Set(job.HeaderUserSelector, k)
	}
	if !t.jobTime.IsZero() {
		h.Set(job.HeaderJobTime, t.jobTime.UTC().Format(time.RFC3339Nano))
	}
	d.Header(h.Set)
	if err := x.publish(ctx, job.DLQSubjectPrefix+string(typ), d.Body, job.DLQMsgID(t.seq), h); err != nil {
		return err
	}
	x.m.DeadLetter(string(typ), code)
	return nil
}

func (x *executor) logFinished(t *task, o job.Outcome, code string) {
	attrs := []any{"job_id", t.job.ID, "type", t.job.Type, "outcome", o, "attempts", t.attempts, "duration_ms", time.Since(t.received).Milliseconds()}
	if code != "" {
		attrs = append(attrs, "code", code)
	}
	if o == job.Failed && t.job.Type.Urgent() {
		x.log.Error("job finished", attrs...)
		return
	}
	x.log.Info("job finished", attrs...)
}
