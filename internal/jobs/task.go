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

	mu      sync.Mutex
	lockRev uint64 // 0: the user's lock is not held
	claim   *ledger.Entry
}

func (x *executor) newTask(msg jetstream.Msg) *task {
	t := &task{msg: msg, received: time.Now(), attempts: 1}
	if md, err := msg.Metadata(); err == nil {
		t.seq, t.attempts = md.Sequence.Stream, int(md.NumDelivered)
	}
	t.job, t.rej = x.parser.Parse(msg.Subject(), msg.Data())
	if h := msg.Headers(); h != nil {
		t.replay, _ = job.ParseReplay(h.Get(job.HeaderReplay))
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

func (t *task) jobID() string {
	if t.job != nil {
		return t.job.ID
	}
	return t.rej.JobID
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
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lockRev != 0 {
		rev, err := x.locks.Renew(ctx, t.job.UserID, t.lockRev)
		switch {
		case err == nil:
			t.lockRev = rev
		case errors.Is(err, ledger.ErrConflict):
			x.log.Warn("user lock lost", "job_id", t.job.ID)
			t.lockRev = 0
		}
	}
	if t.claim != nil && t.claim.State == ledger.Running {
		rec := t.claim.Record
		rec.LeaseUntil = time.Now().Add(x.cfg.Lease)
		if rev, err := x.ledger.Update(ctx, t.job.ID, rec, t.claim.Revision); err == nil {
			t.claim = &ledger.Entry{Record: rec, Revision: rev}
		}
	}
}
