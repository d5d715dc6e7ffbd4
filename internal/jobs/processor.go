package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// settleTimeout bounds the writes that settle a job, which run even while
// the worker shuts down.
const settleTimeout = 10 * time.Second

// processor handles one job message at a time; it is shared by all of a
// replica's goroutines.
type processor struct {
	cfg    *Config
	log    *slog.Logger
	js     jetstream.JetStream
	ledger *ledger.Ledger
	locks  *ledger.Locks
	parser *job.Parser
	h      *handlers
	m      *metrics.Metrics
	owner  string
}

// task is one delivery of a job message.
type task struct {
	msg      jetstream.Msg
	seq      uint64
	attempts int
	job      *job.Job
	rej      *job.Rejection
	replay   string
	received time.Time
	stopBeat func()

	mu      sync.Mutex
	lockRev uint64 // 0: the user's lock is not held
	claim   *ledger.Entry
}

func (p *processor) newTask(msg jetstream.Msg) *task {
	t := &task{msg: msg, received: time.Now(), attempts: 1}
	if md, err := msg.Metadata(); err == nil {
		t.seq, t.attempts = md.Sequence.Stream, int(md.NumDelivered)
	}
	t.job, t.rej = p.parser.Parse(msg.Subject(), msg.Data())
	if h := msg.Headers(); h != nil {
		t.replay = h.Get(job.HeaderReplay)
	}
	return t
}

// userKey is the key of per-user ordering; 0 for jobs with no valid user.
func (t *task) userKey() int64 {
	if t.job != nil {
		return t.job.UserID
	}
	return 0
}

func (t *task) jobType() job.Type {
	if t.job != nil {
		return t.job.Type
	}
	return t.rej.Type
}

// heartbeat keeps the message, the user's lock and the ledger claim alive
// while the task is held, and stops when the returned func is called.
func (p *processor) heartbeat(t *task) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(p.cfg.heartbeat())
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = t.msg.InProgress()
				p.renew(ctx, t)
			}
		}
	}()
	t.stopBeat = func() { cancel(); <-done }
}

func (p *processor) renew(ctx context.Context, t *task) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lockRev != 0 {
		rev, err := p.locks.Renew(ctx, t.job.UserID, t.lockRev)
		switch {
		case err == nil:
			t.lockRev = rev
		case errors.Is(err, ledger.ErrConflict):
			p.log.Warn("user lock lost", "job_id", t.job.ID)
			t.lockRev = 0
		}
	}
	if t.claim != nil && t.claim.State == ledger.Running {
		rec := t.claim.Record
		rec.LeaseUntil = time.Now().Add(p.cfg.Lease)
		if rev, err := p.ledger.Update(ctx, t.job.ID, rec, t.claim.Revision); err == nil {
			t.claim = &ledger.Entry{Record: rec, Revision: rev}
		}
	}
}

// process runs one task to its end. The task's heartbeat is running.
func (p *processor) process(ctx context.Context, t *task) {
	defer t.stopBeat()
	if t.rej != nil {
		p.reject(t, t.rej)
		return
	}
	j := t.job
	defer p.m.JobStarted(string(j.Type))()
	if err := p.lockUser(ctx, t); err != nil {
		p.settle(t, outcome{}, &RetryLaterError{Err: err})
		return
	}
	defer p.unlockUser(t)

	d, err := p.claim(ctx, t)
	if err != nil {
		p.settle(t, outcome{}, &RetryLaterError{Err: err})
		return
	}
	switch d.kind {
	case claimDuplicate:
		p.redeliver(t, d.entry)
		return
	case claimReused:
		p.reject(t, &job.Rejection{Code: job.CodeIDReused, Message: "this id was already used for a job with a different body", JobID: j.ID, UserID: j.UserID, Type: j.Type, Job: j})
		return
	}
	if !j.NotAfter.IsZero() && time.Now().After(j.NotAfter) {
		p.settle(t, outcome{Outcome: job.Expired}, errExpired)
		return
	}
	r := &run{
		sentBefore: d.sentBefore,
		markSent:   func(ctx context.Context) error { return p.setSent(ctx, t, true) },
		clearSent:  func(ctx context.Context) error { return p.setSent(ctx, t, false) },
		retried:    func() { p.m.Retry(string(j.Type)) },
	}
	out, err := p.h.run(ctx, j, r)
	p.settle(t, out, err)
}

var errExpired = errors.New("not_after passed before the job could run")

// settle is the one place that turns a handler's result into the job's
// outcome and the message's fate: Ack, NakWithDelay, or a DLQ copy and
// TermWithReason.
func (p *processor) settle(t *task, out outcome, err error) {
	j := t.job
	var pe *PermanentError
	var rl *RetryLaterError
	switch {
	case err == nil:
		p.finish(t, out.Outcome, out.Data, nil)
	case errors.Is(err, errExpired):
		p.finish(t, job.Expired, nil, &job.ErrorInfo{Code: job.CodeExpired, Message: "not_after " + j.NotAfter.UTC().Format(time.RFC3339) + " passed before the job could run"})
	case errors.As(err, &pe):
		p.finish(t, job.Failed, out.Data, &job.ErrorInfo{Code: pe.Code, Message: pe.Message, HTTPStatus: pe.HTTPStatus})
	default:
		if !errors.As(err, &rl) {
			rl = &RetryLaterError{Err: err}
		}
		if t.attempts >= p.cfg.MaxDeliver {
			info := &job.ErrorInfo{Code: job.CodeRetriesExhausted, Message: fmt.Sprintf("gave up after %d deliveries; last error: %v", t.attempts, rl.Err), Retryable: true, HTTPStatus: onelogin.StatusCode(rl.Err)}
			p.finish(t, job.Failed, out.Data, info)
			return
		}
		delay := rl.Delay
		if delay == 0 {
			delay = p.cfg.nakDelay(t.attempts)
		}
		p.release(t)
		p.m.Retry(string(j.Type))
		if err := t.msg.NakWithDelay(delay); err != nil {
			p.log.Warn("nak failed; the message returns after its ack wait", "job_id", j.ID, "err", err)
		}
		p.log.Info("job will be retried", "job_id", j.ID, "type", j.Type, "attempts", t.attempts, "delay", delay.String(), "err", rl.Err.Error())
	}
}

// finish records the final result in the ledger, then publishes it (and the
// DLQ copy), then settles the message.
func (p *processor) finish(t *task, o job.Outcome, data map[string]any, info *job.ErrorInfo) {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	j := t.job
	now := time.Now()
	res := j.Result(o, t.attempts, t.received, now, info, data)
	body := res.Marshal()
	resID := job.ResultMsgID(j.ID, t.replay)
	// Without a claim (the lock or the ledger stayed out of reach until the
	// deliveries ran out) there is no record to finish.
	t.mu.Lock()
	var err error
	if t.claim != nil {
		rec := t.claim.Record
		rec.State, rec.Owner, rec.LeaseUntil = ledger.Finished, "", time.Time{}
		rec.Outcome, rec.Result, rec.ResultMsgID = string(o), body, resID
		rec.DeadLettered, rec.Seq, rec.UpdatedAt = o.DeadLetters(), t.seq, now
		var rev uint64
		if rev, err = p.ledger.Update(ctx, j.ID, rec, t.claim.Revision); err == nil {
			t.claim = &ledger.Entry{Record: rec, Revision: rev}
		}
	}
	t.mu.Unlock()
	if errors.Is(err, ledger.ErrConflict) {
		// Another replica took the job over after our lease lapsed; it owns
		// the outcome now.
		p.log.Warn("job taken over by another replica; result not published", "job_id", j.ID)
		return
	}
	if err != nil {
		if t.attempts >= p.cfg.MaxDeliver+1 {
			p.log.Error("recording the result failed on the last delivery", "job_id", j.ID, "err", err)
		} else {
			p.release(t)
			_ = t.msg.NakWithDelay(time.Second)
			p.log.Warn("recording the result failed; job will be redelivered", "job_id", j.ID, "err", err)
			return
		}
	}
	code := ""
	if info != nil {
		code = info.Code
	}
	if p.deliver(ctx, t, res.Subject(), body, resID, o, code, o.DeadLetters()) {
		p.m.JobFinished(string(j.Type), string(o), now.Sub(t.received))
		p.logFinished(t, o, code)
	}
}

// redeliver answers a job the ledger holds as finished. The same message
// coming back (a lost ack, a crash after the ledger write) gets the whole
// settlement again; another message with the same id is a duplicate and
// only gets the stored result again.
func (p *processor) redeliver(t *task, e *ledger.Entry) {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	var res job.Result
	if err := json.Unmarshal(e.Result, &res); err != nil {
		p.settle(t, outcome{}, &RetryLaterError{Err: fmt.Errorf("stored result unreadable: %w", err)})
		return
	}
	same := e.Seq == t.seq
	if !same {
		p.m.Duplicate(string(t.job.Type))
	}
	code := ""
	if res.Error != nil {
		code = res.Error.Code
	}
	o := job.Outcome(e.Outcome)
	if !same {
		o = job.Succeeded // a duplicate message is acked whatever its original's fate
	}
	if p.deliver(ctx, t, res.Subject(), e.Result, e.ResultMsgID, o, code, same && e.DeadLettered) {
		p.log.Info("job already finished; stored result published again", "job_id", t.job.ID, "type", t.job.Type, "outcome", e.Outcome, "duplicate", !same)
	}
}

// deliver publishes the result and the DLQ copy, then acks or terminates the
// message. It reports whether the message was settled.
func (p *processor) deliver(ctx context.Context, t *task, subject string, body []byte, resID string, o job.Outcome, code string, dlq bool) bool {
	if resID != "" {
		if err := p.publish(ctx, subject, body, resID, nil); err != nil {
			p.nakAfterPublishFailure(t, "result", err)
			return false
		}
	}
	if dlq {
		if err := p.deadLetter(ctx, t, o, code); err != nil {
			p.nakAfterPublishFailure(t, "dead letter", err)
			return false
		}
	}
	var err error
	if o.DeadLetters() {
		err = t.msg.TermWithReason(code)
	} else {
		err = t.msg.Ack()
	}
	if err != nil {
		// The ledger holds the outcome: a redelivery settles it again.
		p.log.Warn("settling the message failed; a redelivery will settle it", "subject", t.msg.Subject(), "seq", t.seq, "err", err)
	}
	return true
}

func (p *processor) nakAfterPublishFailure(t *task, what string, err error) {
	p.log.Warn("publish failed; job will be redelivered", "what", what, "subject", t.msg.Subject(), "seq", t.seq, "err", err)
	_ = t.msg.NakWithDelay(p.cfg.nakDelay(1))
}

// publish sends one message to a stream, retrying briefly.
func (p *processor) publish(ctx context.Context, subject string, data []byte, msgID string, h nats.Header) error {
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	for k, v := range h {
		m.Header[k] = v
	}
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	op := func() error {
		_, err := p.js.PublishMsg(ctx, m)
		return err
	}
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(50*time.Millisecond), backoff.WithMaxInterval(time.Second), backoff.WithMaxElapsedTime(5*time.Second))
	return backoff.Retry(op, backoff.WithContext(b, ctx))
}

// deadLetter copies the job to mfa.dlq.<type>. A verify job's OTP and
// state token are blanked: they are short-lived secrets.
func (p *processor) deadLetter(ctx context.Context, t *task, reason job.Outcome, code string) error {
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
	if err := p.publish(ctx, job.DLQSubjectPrefix+string(typ), body, job.DLQMsgID(t.seq, t.replay), h); err != nil {
		return err
	}
	p.m.DeadLetter(string(typ), code)
	return nil
}

func (t *task) jobID() string {
	if t.job != nil {
		return t.job.ID
	}
	return t.rej.JobID
}

// reject ends an invalid job: a result when its id is known, a DLQ copy,
// and the message terminated. OneLogin is never called and the ledger is
// not written, so a corrected job may reuse the id.
func (p *processor) reject(t *task, r *job.Rejection) {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	now := time.Now()
	typ := r.Type
	var subject, resID string
	var body []byte
	if res, ok := r.Result(t.attempts, t.received, now); ok {
		subject, body = res.Subject(), res.Marshal()
		resID = job.RejectionMsgID(r.JobID, t.msg.Data())
	}
	if !typ.Valid() {
		typ = "unknown"
	}
	if p.deliver(ctx, t, subject, body, resID, job.Rejected, r.Code, true) {
		p.m.JobFinished(string(typ), string(job.Rejected), now.Sub(t.received))
		p.log.Info("job rejected", "job_id", r.JobID, "type", typ, "outcome", job.Rejected, "code", r.Code, "reason", r.Message, "subject", t.msg.Subject(), "seq", t.seq, "attempts", t.attempts)
	}
}

func (p *processor) logFinished(t *task, o job.Outcome, code string) {
	attrs := []any{"job_id", t.job.ID, "type", t.job.Type, "outcome", o, "attempts", t.attempts, "duration_ms", time.Since(t.received).Milliseconds()}
	if code != "" {
		attrs = append(attrs, "code", code)
	}
	if o == job.Failed && t.job.Type.Urgent() {
		p.log.Error("job finished", attrs...)
		return
	}
	p.log.Info("job finished", attrs...)
}

// lockUser takes the user's lock, waiting in place (the heartbeat keeps the
// message alive) while another replica holds it.
func (p *processor) lockUser(ctx context.Context, t *task) error {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(20*time.Millisecond), backoff.WithMaxInterval(500*time.Millisecond), backoff.WithMaxElapsedTime(0))
	deadline := time.Now().Add(p.cfg.Lease + p.cfg.AckWait)
	for {
		rev, ok, err := p.locks.TryAcquire(ctx, t.job.UserID)
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
		if !sleep(ctx, b.NextBackOff()) {
			return ctx.Err()
		}
	}
}

func (p *processor) unlockUser(t *task) {
	t.mu.Lock()
	rev := t.lockRev
	t.lockRev = 0
	t.mu.Unlock()
	if rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if err := p.locks.Release(ctx, t.job.UserID, rev); err != nil {
		p.log.Warn("releasing the user lock failed; it lapses with its lease", "job_id", t.job.ID, "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
