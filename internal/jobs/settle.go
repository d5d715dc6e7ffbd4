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
	// Without a claim (the lock or the ledger stayed out of reach until the
	// deliveries ran out) there is no record to finish. The result id is
	// the claim's: a granted replay's, or the job's one result.
	t.mu.Lock()
	var resID string
	if t.claim != nil {
		resID = job.ResultMsgID(j.ID, replayOf(&t.claim.Record))
	} else {
		resID = job.ResultMsgID(j.ID, 0)
	}
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
		x.m.Duplicate(string(t.jobType()))
	}
	if t.fired && !same {
		// A schedule fired for a job that ended meanwhile (a cancel, or
		// its original message came back when due): its result is out.
		if err := t.msg.Ack(); err != nil {
			x.log.Warn("acking a fired schedule failed", "job_id", t.jobID(), "err", err)
		}
		return
	}
	v := decideFinished(job.Outcome(e.Outcome), res.Error, same)
	if x.deliver(ctx, t, res.Subject(), e.Result, e.ResultMsgID, v, same && e.DeadLettered) {
		x.log.Info("job already finished; stored result published again", "job_id", t.jobID(), "type", t.jobType(), "outcome", e.Outcome, "duplicate", !same)
	}
}

// reused ends a message whose id the ledger holds for a job with another
// body: the id already has its result, so this message gets none, only a
// DLQ copy with id_reused, and is counted as a duplicate.
func (x *executor) reused(ctx context.Context, t *task) {
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	x.m.Duplicate(string(t.jobType()))
	v := verdict{outcome: job.Rejected, action: actTerm, info: &job.ErrorInfo{Code: job.CodeIDReused, Message: "this id was already used for a job with a different body"}}
	if x.deliver(ctx, t, "", nil, "", v, true) {
		x.log.Warn("job id reused for another body; dead-lettered without a result", "job_id", t.jobID(), "type", t.jobType(), "code", job.CodeIDReused, "subject", t.msg.Subject(), "seq", t.seq)
	}
}

// reject ends an invalid job. A rejection with a readable id and a known
// type is final like every outcome: recorded in the ledger first (so the
// id has exactly one result, and a corrected job must use a new id), then
// the DLQ copy, the result <id>:result, and the message terminated. A
// rejection whose id cannot be read gets no result, only a DLQ copy.
// OneLogin is never called.
func (x *executor) reject(ctx context.Context, t *task, v verdict) {
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	now := time.Now()
	r := t.rej
	typ := r.Type
	if !typ.Valid() {
		typ = "unknown"
	}
	res, ok := r.Result(t.attempts, t.received, now)
	if !ok {
		if x.deliver(ctx, t, "", nil, "", v, true) {
			x.m.JobFinished(string(typ), string(job.Rejected), now.Sub(t.received))
			x.logRejected(t, typ)
		}
		return
	}
	resID, e, err := x.recordRejection(ctx, t, res)
	switch {
	case errors.Is(err, errReused):
		x.reused(ctx, t)
		return
	case e != nil:
		x.redeliver(ctx, t, e)
		return
	case err != nil && t.attempts < x.policy.maxDeliver:
		x.nak(t, x.policy.nakDelay(t.attempts))
		x.log.Warn("recording the rejection failed; job will be redelivered", "job_id", r.JobID, "err", err)
		return
	case err != nil:
		x.log.Error("recording the rejection failed on the last delivery; result published unrecorded", "job_id", r.JobID, "err", err)
	}
	res.Attempts = t.attempts
	if x.deliver(ctx, t, res.Subject(), res.Marshal(), resID, v, true) {
		x.m.JobFinished(string(typ), string(job.Rejected), now.Sub(t.received))
		x.logRejected(t, typ)
	}
}

func (x *executor) logRejected(t *task, typ job.Type) {
	r := t.rej
	x.log.Info("job rejected", "job_id", r.JobID, "type", typ, "outcome", job.Rejected, "code", r.Code, "reason", r.Message, "subject", t.msg.Subject(), "seq", t.seq, "attempts", t.attempts)
}

// errReused: the id belongs to a job with another body.
var errReused = errors.New("job id reused")

// recordRejection records a rejection as the job id's final outcome and
// returns its result id. When the ledger already holds the id it returns
// the entry to answer from (the same body again), or errReused (another
// body), unless the message is a granted replay of this rejection.
func (x *executor) recordRejection(ctx context.Context, t *task, res *job.Result) (string, *ledger.Entry, error) {
	id := t.rej.JobID
	rec := ledger.Record{
		State: ledger.Finished, Hash: job.RejectionHash(t.msg.Data()), Outcome: string(job.Rejected),
		DeadLettered: true, Seq: t.seq, UpdatedAt: time.Now(),
	}
	for {
		rec.Replay = ""
		rec.ResultMsgID = job.ResultMsgID(id, 0)
		rec.Result = res.Marshal()
		if _, err := x.ledger.Create(ctx, id, rec); err == nil {
			return rec.ResultMsgID, nil, nil
		} else if !errors.Is(err, ledger.ErrExists) {
			return rec.ResultMsgID, nil, err
		}
		e, err := x.ledger.Get(ctx, id)
		if errors.Is(err, ledger.ErrNotFound) {
			continue
		}
		if err != nil {
			return rec.ResultMsgID, nil, err
		}
		if e.State == ledger.Tombstone {
			// A cancel waited for this id; the job is invalid, so its one
			// result is the rejection, which replaces the tombstone.
			if _, err := x.ledger.Update(ctx, id, rec, e.Revision); err == nil {
				return rec.ResultMsgID, nil, nil
			} else if !errors.Is(err, ledger.ErrConflict) {
				return rec.ResultMsgID, nil, err
			}
			continue
		}
		if e.Hash != rec.Hash {
			return "", nil, errReused
		}
		if !x.granted(ctx, t, e) {
			return "", e, nil
		}
		rec.Replay = job.ReplayTag(t.replay)
		rec.ResultMsgID = job.ResultMsgID(id, t.replay)
		if _, err := x.ledger.Update(ctx, id, rec, e.Revision); err == nil {
			return rec.ResultMsgID, nil, nil
		} else if !errors.Is(err, ledger.ErrConflict) {
			return rec.ResultMsgID, nil, err
		}
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
			if t.attempts < x.policy.maxDeliver {
				x.nakAfterPublishFailure(t, "dead letter", err)
				return false
			}
			// No job message stays in MFA_JOBS for lack of a DLQ copy.
			x.log.Error("the DLQ copy could not be written on the last delivery; message settled without it", "subject", t.msg.Subject(), "seq", t.seq, "code", v.code(), "err", err)
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
// ackParked acknowledges a job that now waits as a JetStream schedule: it
// has no result yet, and a lost ack only schedules it again (idempotent).
func (x *executor) ackParked(t *task) {
	if err := t.msg.Ack(); err != nil {
		x.log.Warn("acking a scheduled job failed; a redelivery schedules it again (idempotent)", "job_id", t.job.ID, "err", err)
	}
}

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
