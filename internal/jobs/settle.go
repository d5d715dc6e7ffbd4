package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
)

// Settlement: the only file that acks, naks or terminates a job message
// (the heartbeat's InProgress aside). What to do is decide's choice; this
// file carries it out: the ledger is written before the result is
// published, and the message is settled only after both. Settlement runs
// even while the worker shuts down: it keeps ctx's values, not its
// cancellation, and has its own time limit.

// settle carries out decide's verdict on how the job's last attempt ended.
func (x *executor) settle(ctx context.Context, t *task, out outcome, err error) {
	v := decide(out.Outcome, err, t.attempts, x.policy, t.jobType())
	if v.action == actNak {
		x.release(ctx, t)
		x.m.Retry(string(t.jobType()))
		x.nak(t, v.delay)
		var rl *RetryLaterError
		if errors.As(err, &rl) {
			err = rl.Err
		}
		x.log.Info("job will be retried", "job_id", t.jobID(), "type", t.jobType(), "attempts", t.attempts, "delay", v.delay.String(), "err", err.Error())
		return
	}
	if t.rej != nil {
		x.reject(ctx, t, v)
		return
	}
	x.finish(ctx, t, v, out.Data)
}

func (x *executor) settleContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), x.budgets.settle)
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
	resID := job.ResultMsgID(j.ID, t.replay)
	// Without a claim (the lock or the ledger stayed out of reach until the
	// deliveries ran out) there is no record to finish.
	t.mu.Lock()
	var err error
	if t.claim != nil {
		rec := t.claim.Record
		rec.State, rec.Owner, rec.LeaseUntil = ledger.Finished, "", time.Time{}
		rec.Outcome, rec.Result, rec.ResultMsgID = string(v.outcome), body, resID
		rec.DeadLettered, rec.Seq, rec.UpdatedAt = v.outcome.DeadLetters(), t.seq, now
		var rev uint64
		if rev, err = x.ledger.Update(ctx, j.ID, rec, t.claim.Revision); err == nil {
			t.claim = &ledger.Entry{Record: rec, Revision: rev}
		}
	}
	t.mu.Unlock()
	if errors.Is(err, ledger.ErrConflict) {
		// Another replica took the job over after our lease lapsed; it owns
		// the outcome now.
		x.log.Warn("job taken over by another replica; result not published", "job_id", j.ID)
		return
	}
	if err != nil {
		if t.attempts >= x.policy.maxDeliver+1 {
			x.log.Error("recording the result failed on the last delivery", "job_id", j.ID, "err", err)
		} else {
			x.release(ctx, t)
			x.nak(t, x.budgets.unstored)
			x.log.Warn("recording the result failed; job will be redelivered", "job_id", j.ID, "err", err)
			return
		}
	}
	code := v.code()
	if x.deliver(ctx, t, res.Subject(), body, resID, v, v.outcome.DeadLetters()) {
		x.m.JobFinished(string(j.Type), string(v.outcome), now.Sub(t.received))
		x.logFinished(t, v.outcome, code)
	}
}

// redeliver answers a job the ledger holds as finished. The same message
// coming back (a lost ack, a crash after the ledger write) gets the whole
// settlement again; another message with the same id is a duplicate and
// only gets the stored result again.
func (x *executor) redeliver(ctx context.Context, t *task, e *ledger.Entry) {
	var res job.Result
	if err := json.Unmarshal(e.Result, &res); err != nil {
		x.settle(ctx, t, outcome{}, &RetryLaterError{Err: fmt.Errorf("stored result unreadable: %w", err)})
		return
	}
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	same := e.Seq == t.seq
	if !same {
		x.m.Duplicate(string(t.job.Type))
	}
	v := decideFinished(job.Outcome(e.Outcome), res.Error, same)
	if x.deliver(ctx, t, res.Subject(), e.Result, e.ResultMsgID, v, same && e.DeadLettered) {
		x.log.Info("job already finished; stored result published again", "job_id", t.job.ID, "type", t.job.Type, "outcome", e.Outcome, "duplicate", !same)
	}
}

// reject ends an invalid job: a result when its id is known, a DLQ copy,
// and the message terminated. OneLogin is never called and the ledger is
// not written, so a corrected job may reuse the id.
func (x *executor) reject(ctx context.Context, t *task, v verdict) {
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	now := time.Now()
	r := t.rej
	var subject, resID string
	var body []byte
	if res, ok := r.Result(t.attempts, t.received, now); ok {
		subject, body = res.Subject(), res.Marshal()
		resID = job.RejectionMsgID(r.JobID, t.msg.Data())
	}
	typ := r.Type
	if !typ.Valid() {
		typ = "unknown"
	}
	if x.deliver(ctx, t, subject, body, resID, v, true) {
		x.m.JobFinished(string(typ), string(job.Rejected), now.Sub(t.received))
		x.log.Info("job rejected", "job_id", r.JobID, "type", typ, "outcome", job.Rejected, "code", r.Code, "reason", r.Message, "subject", t.msg.Subject(), "seq", t.seq, "attempts", t.attempts)
	}
}

// deliver publishes the DLQ copy (when dlq) and the result (when resID is
// set), then acks or terminates the message as v says. It reports whether
// the message was settled.
func (x *executor) deliver(ctx context.Context, t *task, subject string, body []byte, resID string, v verdict, dlq bool) bool {
	// The DLQ copy goes first: whoever sees a failed result finds its dead
	// letter already there. Both are idempotent by message id, so a
	// redelivery after a failure between them publishes neither twice.
	if dlq {
		if err := x.deadLetter(ctx, t, v.outcome, v.code()); err != nil {
			x.nakAfterPublishFailure(t, "dead letter", err)
			return false
		}
	}
	if resID != "" {
		if err := x.publish(ctx, subject, body, resID, nil); err != nil {
			x.nakAfterPublishFailure(t, "result", err)
			return false
		}
	}
	var err error
	switch v.action {
	case actTerm:
		err = t.msg.TermWithReason(v.code())
	case actAck:
		err = t.msg.Ack()
	}
	if err != nil {
		// The ledger holds the outcome: a redelivery settles it again.
		x.log.Warn("settling the message failed; a redelivery will settle it", "subject", t.msg.Subject(), "seq", t.seq, "err", err)
	}
	return true
}

// nak gives the message back for redelivery after delay.
func (x *executor) nak(t *task, delay time.Duration) {
	if err := t.msg.NakWithDelay(delay); err != nil {
		x.log.Warn("nak failed; the message returns after its ack wait", "subject", t.msg.Subject(), "seq", t.seq, "err", err)
	}
}

// giveBack returns a message whose job never started, for redelivery after
// delay: the worker is shutting down, its credentials are refused, or the
// job's user holds enough of this replica.
func (x *executor) giveBack(t *task, delay time.Duration) {
	t.stopBeat()
	x.nak(t, delay)
}

func (x *executor) nakAfterPublishFailure(t *task, what string, err error) {
	x.log.Warn("publish failed; job will be redelivered", "what", what, "subject", t.msg.Subject(), "seq", t.seq, "err", err)
	x.nak(t, x.policy.nakDelay(1))
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

// deadLetter copies the job to mfa.dlq.<type>. A verify job's OTP and
// state token are blanked: they are short-lived secrets.
func (x *executor) deadLetter(ctx context.Context, t *task, reason job.Outcome, code string) error {
	typ := t.jobType()
	body := t.msg.Data()
	if typ == job.TypeVerify {
		body = job.BlankSecrets(body)
	}
	h := nats.Header{}
	h.Set(job.HeaderReason, string(reason))
	h.Set(job.HeaderErrorCode, code)
	h.Set(job.HeaderDeliveries, strconv.Itoa(t.attempts))
	h.Set(job.HeaderOriginalSubject, t.msg.Subject())
	if id := t.jobID(); id != "" {
		h.Set(job.HeaderJobID, id)
	}
	if err := x.publish(ctx, job.DLQSubjectPrefix+string(typ), body, job.DLQMsgID(t.seq, t.replay), h); err != nil {
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
