package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
)

// The blast-radius guard's side of a delivery (package guard): after the
// claim and the not_after check, an offboard or a remove asks the guard
// whether it runs now. A held job's ledger record becomes ledger.Held and
// its message is acked without a result; the operator's release or discard
// re-publishes it, and its claim takes the held record like a fired
// schedule. The leaver registry hears of holds and runs (package leaver);
// its failures are logged, never the job's.

// blastGuard is what the executor needs of the blast-radius guard.
type blastGuard interface {
	Admit(ctx context.Context, j guard.Job, now time.Time) (guard.Decision, error)
	Ended(ctx context.Context, source, jobID, by string, now time.Time) error
}

// leaverNotes is what the executor tells the leaver registry.
type leaverNotes interface {
	NoteParsed(ctx context.Context, st leaver.State, j *job.Job, at time.Time) error
}

// admit asks the guard whether t's job runs now. ok reports that it does
// (counted, or released by an operator); otherwise the ending says why
// not: held (its ledger record is held now), discarded by an operator
// (cancelled), or undecided (given back: a guarded job never runs
// unguarded).
func (x *executor) admit(ctx context.Context, t *task) (end ending, ok bool) {
	j := t.job
	if x.blast == nil || !guard.Guarded(j.Type) {
		return ending{}, true
	}
	t.mu.Lock()
	unseen := t.firstClaim && t.msg.Headers().Get(guard.HeaderGuard) == ""
	t.mu.Unlock()
	d, err := x.blast.Admit(ctx, guard.Job{
		ID: j.ID, Type: j.Type, Source: j.Source, UserID: j.UserID, CorrelationID: j.CorrelationID,
		Body: t.msg.Data(), Header: t.msg.Headers(), Time: t.jobTime, Unseen: unseen,
	}, time.Now())
	switch d {
	case guard.Run, guard.Released:
		if err == nil {
			return ending{}, true
		}
	case guard.Discarded:
		return ending{err: &CancelledError{Code: job.CodeDiscarded,
			Message: "held by the blast-radius guard and discarded by an operator (worker hold discard); not executed"}}, false
	case guard.Hold:
		return x.hold(ctx, t), false
	}
	if err == nil {
		err = fmt.Errorf("the guard answered %s", d)
	}
	return ending{err: &RetryLaterError{Err: fmt.Errorf("blast-radius guard undecided: %w", err)}}, false
}

// hold turns the claim into a held record, keeping what a cancel needs to
// end the job without its message, and tells the leaver registry. A
// failed write gives the message back: its redelivery finds the guard's
// record and holds again.
func (x *executor) hold(ctx context.Context, t *task) ending {
	j := t.job
	err := x.updateClaim(ctx, t, func(rec *ledger.Record) bool {
		rec.State, rec.Owner, rec.LeaseUntil = ledger.Held, "", time.Time{}
		rec.Type, rec.UserID, rec.CorrelationID, rec.Source = string(j.Type), j.UserID, j.CorrelationID, j.Source
		rec.JobTime, rec.UpdatedAt = t.jobTime, time.Now()
		return true
	})
	if err != nil {
		return ending{err: &RetryLaterError{Err: fmt.Errorf("mark the job held: %w", err)}}
	}
	x.noteLeaver(ctx, t, leaver.Held)
	return ending{what: withheld}
}

// noteLeaver tells the leaver registry of an offboard's step (the registry
// ignores other types).
func (x *executor) noteLeaver(ctx context.Context, t *task, st leaver.State) {
	if x.leavers == nil || t.job == nil || t.job.Type != job.TypeOffboard {
		return
	}
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	if err := x.leavers.NoteParsed(ctx, st, t.job, t.jobTime); err != nil {
		x.log.Warn("telling the leaver registry failed; the result updates it later", "job_id", t.job.ID, "step", string(st), "err", err)
	}
}

// endHeld tells the guard that a cancel ended a job it held (no longer
// listed as held). A guard that was never told of the job changes nothing.
func (x *executor) endHeld(ctx context.Context, rec ledger.Record, target, by string) error {
	if x.blast == nil || !guard.Guarded(job.Type(rec.Type)) {
		return nil
	}
	if err := x.blast.Ended(ctx, rec.Source, target, by, time.Now()); err != nil {
		return fmt.Errorf("end the held job in the guard: %w", err)
	}
	return nil
}
