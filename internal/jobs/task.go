package jobs

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
)

// task is one delivery of a job message.
type task struct {
	msg      jetstream.Msg
	seq      uint64
	attempts int
	job      *job.Job
	rej      *job.Rejection
	// replay is the DLQ sequence of the Mfa-Replay header (0: none, or a
	// value that is not one). It only counts with a matching grant.
	replay   uint64
	received time.Time
	stopBeat func()
	// fired: a schedule produced this message (its not_before is due).
	fired bool
	// jobTime is the job's time (job.Job.Time); timeFromHeader says that
	// the time it falls back on came from Mfa-Job-Time, not the message.
	jobTime        time.Time
	timeFromHeader bool

	mu      sync.Mutex
	lockRev uint64 // 0: the user's lock is not held
	// recorded: the ledger holds the job finished (this delivery wrote its
	// result, or found it there), so its lock may be left in place.
	recorded bool
	claim    *ledger.Entry
	// firstClaim: this delivery created the job id's ledger record (no
	// earlier delivery of the id claimed it within the ledger's TTL).
	firstClaim bool
}

func (x *executor) newTask(msg jetstream.Msg) *task {
	t := &task{msg: msg, received: time.Now(), attempts: 1}
	stored := t.received
	if md, err := msg.Metadata(); err == nil {
		t.seq, t.attempts = md.Sequence.Stream, int(md.NumDelivered)
		stored = md.Timestamp
	}
	t.job, t.rej = x.parser.Parse(msg.Subject(), msg.Data())
	var carried time.Time
	if h := msg.Headers(); h != nil {
		t.replay, _ = job.ParseReplay(h.Get(job.HeaderReplay))
		t.fired = h.Get(headerScheduler) != ""
		if v, err := time.Parse(time.RFC3339Nano, h.Get(job.HeaderJobTime)); err == nil {
			carried, t.timeFromHeader = v, true
		}
	}
	if t.job != nil {
		// The job's time, bounded by the time JetStream stored this
		// message (a fired schedule's message is stored when it is due).
		// Mfa-Job-Time, set by the worker on schedules (the not_before)
		// and on dead letters (the time as bounded when the job first
		// ran), stands in for the stored time of a job that declares
		// none, and bounds it too: a replay keeps its first bound. Any
		// publisher can set the header, so it is bounded as well.
		first := stored
		if t.timeFromHeader {
			first = carried
		}
		t.jobTime = job.BoundTime(t.job.DeclaredTime(first), stored)
		if t.timeFromHeader && carried.Before(t.jobTime) {
			t.jobTime = carried
		}
	}
	return t
}

// userKey is the key of per-user ordering; 0 for jobs with no valid user.
// A job that names its person by a selector is ordered with the other jobs
// of the same selector (it is resolved only when it runs).
func (t *task) userKey() int64 {
	switch {
	case t.job == nil:
		return 0
	case t.job.UserID == 0 && t.job.User != nil:
		return selectorKey(t.job.User)
	}
	return t.job.UserID
}

// userSelector is the kind of the job's user selector, "" if none.
func (t *task) userSelector() string {
	if t.job != nil {
		return t.job.User.Kind()
	}
	return t.rej.User.Kind()
}

func (t *task) jobType() job.Type {
	if t.job != nil {
		return t.job.Type
	}
	return t.rej.Type
}

func (t *task) jobID() string {
	if t.job != nil {
		return t.job.ID
	}
	return t.rej.JobID
}

// hold keeps e as the task's claim.
func (t *task) hold(e *ledger.Entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.claim = e
}

// sentBefore reports whether the claim records that an earlier delivery
// may have made a call that cannot be read back.
func (t *task) sentBefore() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.claim != nil && t.claim.Sent
}

// heartbeat keeps the message, the user's lock and the ledger claim alive
// while the task is held, and stops when the returned func is called.
func (x *executor) heartbeat(t *task) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(x.budgets.heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = t.msg.InProgress()
				x.renew(ctx, t)
			}
		}
	}()
	t.stopBeat = func() { cancel(); <-done }
}

func (x *executor) renew(ctx context.Context, t *task) {
	x.renewLock(ctx, t)
	_ = x.updateClaim(ctx, t, func(rec *ledger.Record) bool {
		if rec.State != ledger.Running {
			return false
		}
		rec.LeaseUntil = time.Now().Add(x.cfg.Lease)
		return true
	})
}

func (x *executor) renewLock(ctx context.Context, t *task) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lockRev != 0 {
		rev, err := x.locks.Renew(ctx, t.job.UserID, t.job.ID, t.lockRev)
		switch {
		case err == nil:
			t.lockRev = rev
		case errors.Is(err, ledger.ErrConflict):
			x.log.Warn("user lock lost", "job_id", t.job.ID)
			t.lockRev = 0
		}
	}
}
