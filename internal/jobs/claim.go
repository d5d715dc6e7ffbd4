package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
)

type claimKind int

const (
	claimRun       claimKind = iota // this delivery runs the job
	claimDuplicate                  // the job finished; answer from the ledger
	claimReused                     // the id belongs to a job with another body
	claimCancelled                  // a cancel's tombstone waited for the job
)

type decision struct {
	kind       claimKind
	entry      *ledger.Entry
	sentBefore bool
}

// claimOrEnd claims the job id and ends the task itself when this delivery
// must not run the job: a failed claim is retried later, a finished job is
// answered from the ledger, a reused id is rejected, and a job a cancel
// waited for settles as cancelled. ok reports that the delivery runs it.
func (x *executor) claimOrEnd(ctx context.Context, t *task) (d decision, ok bool) {
	d, err := x.claim(ctx, t)
	if err != nil {
		x.settle(ctx, t, outcome{}, &RetryLaterError{Err: err})
		return d, false
	}
	switch d.kind {
	case claimDuplicate:
		x.redeliver(ctx, t, d.entry)
		return d, false
	case claimReused:
		x.reused(ctx, t)
		return d, false
	case claimCancelled:
		x.settle(ctx, t, outcome{Data: job.CancelledData{CancelledBy: d.entry.CancelledBy}}, &CancelledError{
			Code: job.CodeCancelled, Message: "cancelled by job " + d.entry.CancelledBy + " before it arrived", CancelledBy: d.entry.CancelledBy})
		return d, false
	}
	return d, true
}

// claim takes ownership of the job id in the ledger. It runs under the
// user's lock, so a live running record belongs to a replica that lost that
// lock (stalled past its lease); it is waited out, then taken over.
func (x *executor) claim(ctx context.Context, t *task) (decision, error) {
	j := t.job
	fresh := func() ledger.Record {
		return ledger.Record{State: ledger.Running, Hash: j.Hash, Owner: x.owner, LeaseUntil: time.Now().Add(x.cfg.Lease), UpdatedAt: time.Now(), JobTime: t.jobTime}
	}
	deadline := time.Now().Add(x.budgets.claimWait)
	for {
		rec := fresh()
		rev, err := x.ledger.Create(ctx, j.ID, rec)
		if err == nil {
			x.setClaim(t, rec, rev)
			return decision{kind: claimRun}, nil
		}
		if !errors.Is(err, ledger.ErrExists) {
			return decision{}, err
		}
		e, err := x.ledger.Get(ctx, j.ID)
		if errors.Is(err, ledger.ErrNotFound) {
			continue // expired between the two calls
		}
		if err != nil {
			return decision{}, err
		}
		if e.State == ledger.Tombstone {
			// A cancel came first: claim the id to end the job cancelled.
			rec.CancelledBy = e.CancelledBy
			rev, err := x.ledger.Update(ctx, j.ID, rec, e.Revision)
			if err == nil {
				x.setClaim(t, rec, rev)
				return decision{kind: claimCancelled, entry: &ledger.Entry{Record: rec, Revision: rev}}, nil
			}
			if !errors.Is(err, ledger.ErrConflict) {
				return decision{}, err
			}
			continue
		}
		if e.Hash != j.Hash {
			return decision{kind: claimReused, entry: e}, nil
		}
		if !e.JobTime.IsZero() && !t.timeFromHeader && j.NotBefore.IsZero() && j.RequestedAt.IsZero() {
			// The first message's time, kept by the ledger (a replay
			// whose dead letter lost the header).
			t.jobTime, rec.JobTime = e.JobTime, e.JobTime
		}
		switch {
		case e.State == ledger.Scheduled:
			// Its schedule fired (or its message came back when due): run
			// it. The replay tag is the record's (a granted replay parked
			// again), never the message's header.
			rec.Replay = e.Replay
			rev, err := x.ledger.Update(ctx, j.ID, rec, e.Revision)
			if err == nil {
				x.setClaim(t, rec, rev)
				return decision{kind: claimRun}, nil
			}
			if !errors.Is(err, ledger.ErrConflict) {
				return decision{}, err
			}
		case e.State == ledger.Finished && x.granted(ctx, t, e):
			// A dead letter re-driven on purpose, with its one-time grant
			// consumed: run it again; its result is a replay's.
			rec.Replay = job.ReplayTag(t.replay)
			rev, err := x.ledger.Update(ctx, j.ID, rec, e.Revision)
			if err == nil {
				x.setClaim(t, rec, rev)
				return decision{kind: claimRun}, nil
			}
			if !errors.Is(err, ledger.ErrConflict) {
				return decision{}, err
			}
		case e.State == ledger.Finished:
			return decision{kind: claimDuplicate, entry: e}, nil
		case !time.Now().Before(e.LeaseUntil):
			// The owner died or gave the job back: take it over, keeping
			// the record of calls that may have been made.
			// The replay tag is the record's, never the message's header.
			rec.Sent, rec.Replay = e.Sent, e.Replay
			rev, err := x.ledger.Update(ctx, j.ID, rec, e.Revision)
			if err == nil {
				x.setClaim(t, rec, rev)
				return decision{kind: claimRun, sentBefore: e.Sent}, nil
			}
			if !errors.Is(err, ledger.ErrConflict) {
				return decision{}, err
			}
		default:
			if time.Now().After(deadline) {
				return decision{}, fmt.Errorf("job is running elsewhere (lease until %s)", e.LeaseUntil.UTC().Format(time.RFC3339))
			}
			if !sleep(ctx, min(time.Until(e.LeaseUntil)+10*time.Millisecond, time.Second)) {
				return decision{}, ctx.Err()
			}
		}
	}
}

// granted reports whether a message may run the job that e records as
// finished again: it carries Mfa-Replay of a dead letter (the job's outcome
// dead-lettered) that this record is not already the replay of, and the
// ledger holds the unused grant for (job id, that DLQ sequence), which is
// consumed here. A header without a grant changes nothing.
func (x *executor) granted(ctx context.Context, t *task, e *ledger.Entry) bool {
	if t.replay == 0 || x.grants == nil || !job.Outcome(e.Outcome).DeadLetters() {
		return false
	}
	if prev, ok := job.ParseReplay(e.Replay); ok && prev == t.replay {
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

func (x *executor) setClaim(t *task, rec ledger.Record, rev uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.claim = &ledger.Entry{Record: rec, Revision: rev}
}

// setSent records, before a call that cannot be read back, that it may
// have been made (sent true), or that none was after all (false).
func (x *executor) setSent(ctx context.Context, t *task, sent bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.claim.Sent == sent {
		return nil
	}
	rec := t.claim.Record
	rec.Sent, rec.UpdatedAt = sent, time.Now()
	rev, err := x.ledger.Update(ctx, t.job.ID, rec, t.claim.Revision)
	if err != nil {
		return fmt.Errorf("record call intent: %w", err)
	}
	t.claim = &ledger.Entry{Record: rec, Revision: rev}
	return nil
}

// release gives the claim back before a nak, so that the next delivery takes
// the job over at once instead of waiting for the lease.
func (x *executor) release(ctx context.Context, t *task) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.claim == nil || t.claim.State != ledger.Running {
		return
	}
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	rec := t.claim.Record
	rec.LeaseUntil, rec.UpdatedAt = time.Now(), time.Now()
	if rev, err := x.ledger.Update(ctx, t.job.ID, rec, t.claim.Revision); err == nil {
		t.claim = &ledger.Entry{Record: rec, Revision: rev}
	}
}
