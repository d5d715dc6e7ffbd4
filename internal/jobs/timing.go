package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/pause"
)

// Time is part of a job: this file parks jobs whose not_before is ahead as
// JetStream message schedules, runs cancel jobs, and keeps the resurrection
// guard (MFA_PEOPLE).
//
// A job whose not_before is ahead is recorded in the ledger as scheduled
// (with its due time), then published as a schedule on
// mfa.scheduled.<type>.<id token> in MFA_JOBS ("@at" its not_before rounded
// up to the second, target mfa.jobs.<type>, the job's body, and its job time
// in Mfa-Job-Time), and its message is acked: nothing waits in a worker or
// in an ack-pending slot. When the schedule fires, the server stores the
// body on the target subject (without Nats-Msg-Id; with Nats-Scheduler
// naming the schedule) and purges the schedule; the ledger's scheduled
// record recognises the job (and holds the tag of a granted replay), and the
// job then runs like any other.

// headerScheduler is set by the server on a message a schedule produced.
const headerScheduler = job.HeaderScheduler

// firedSkew is how long a job that a schedule produced may wait in place
// for its not_before when the worker's clock is behind the server's.
const firedSkew = 5 * time.Second

// peopleStore is what the executor needs of MFA_PEOPLE.
type peopleStore interface {
	Offboarded(ctx context.Context, userID int64) (time.Time, string, error)
	RecordOffboard(ctx context.Context, userID int64, at time.Time, jobID string) error
}

// purger finds and removes schedules in MFA_JOBS.
type purger interface {
	Purge(ctx context.Context, opts ...jetstream.StreamPurgeOpt) error
	GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
}

// FindSchedule looks for the schedule of job id in MFA_JOBS, whatever its
// type: the ledger forgets a scheduled job after its TTL (7 days by
// default) while the schedule waits up to 366 days, so the schedule itself
// is the record of last resort. It returns nil when there is none.
func FindSchedule(ctx context.Context, s interface {
	GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
}, jobID string) (*jetstream.RawStreamMsg, error) {
	for _, t := range job.Types {
		if t == job.TypeCancel {
			continue
		}
		m, err := s.GetLastMsgForSubject(ctx, job.ScheduledSubject(t, jobID))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	return nil, nil
}

// ScheduleDue reads the due time of a schedule message (its "@at" pattern).
func ScheduleDue(m *jetstream.RawStreamMsg) (time.Time, bool) {
	v := m.Header.Get(jetstream.ScheduleHeader)
	if len(v) < 4 || v[:4] != "@at " {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, v[4:])
	return t, err == nil
}

// DueAt is when the schedule of a job with not_before nb fires: @at has
// one-second precision, so nb is rounded up, never down.
func DueAt(nb time.Time) time.Time {
	d := nb.Truncate(time.Second)
	if d.Before(nb) {
		d = d.Add(time.Second)
	}
	return d.UTC()
}

// notDue reports whether t's job must wait for its not_before, after
// waiting in place for a fired schedule that came a little early by this
// worker's clock.
func (x *executor) notDue(ctx context.Context, t *task) bool {
	nb := t.job.NotBefore
	if nb.IsZero() {
		return false
	}
	wait := time.Until(nb)
	if wait <= 0 {
		return false
	}
	if t.fired && wait <= firedSkew {
		pause.For(ctx, wait)
		return time.Now().Before(nb)
	}
	return true
}

// park records a job whose not_before is ahead as scheduled and publishes
// its schedule; its message is then acked (parked). ok is false when the
// job must take the ordinary path instead (the ledger knows the id as a
// tombstone, a finished job or another body).
func (x *executor) park(ctx context.Context, t *task) (end ending, ok bool) {
	j := t.job
	if x.jobsFull.Load() {
		// No room for another schedule: the job fails (and is
		// dead-lettered, so it can be replayed), after its claim, so
		// that its id has this one result.
		if end, ok := x.claim(ctx, t); !ok {
			return end, true
		}
		return ending{err: &PermanentError{Code: job.CodeJobsStreamFull, Message: "MFA_JOBS is at its limits (WORKER_JOBS_MAX_BYTES, WORKER_JOBS_MAX_MSGS); the job was not parked"}}, true
	}
	due := DueAt(j.NotBefore)
	rec := ledger.Record{
		State: ledger.Scheduled, Hash: j.Hash, UpdatedAt: time.Now(),
		DueAt: due, Schedule: job.ScheduledSubject(j.Type, j.ID), JobTime: t.jobTime,
		Type: string(j.Type), UserID: j.UserID, CorrelationID: j.CorrelationID, Source: j.Source,
	}
	// Held as the claim: should the schedule never be stored, the last
	// delivery's failure finishes this record, so that a schedule stored
	// after all finds the job finished when it fires.
	err := x.take(ctx, t, rec, nil)
	if errors.Is(err, ledger.ErrExists) {
		e, gerr := x.ledger.Get(ctx, j.ID)
		if gerr != nil {
			return ending{err: &RetryLaterError{Err: gerr}}, true
		}
		switch x.read(ctx, t, e, j.Hash, true) {
		case ansScheduled:
			// Scheduled before (a redelivery after a crash): make sure the
			// schedule exists; it is idempotent by message id.
			rec = e.Record
			t.hold(e)
		case ansReplay:
			// A dead letter re-driven (its grant consumed) while its
			// not_before is still ahead: it waits again, as a replay.
			rec.Replay = job.ReplayTag(t.replay)
			err = x.take(ctx, t, rec, e)
		case ansRunning, ansLapsed:
			err = fmt.Errorf("job is running elsewhere")
		case ansTombstone:
			if _, binds := e.Binding(j.Source); binds {
				return ending{}, false // the claim ends it cancelled
			}
			// Only cancels of other scopes wait for it: it waits as
			// scheduled, and they have no hold on it.
			err = x.take(ctx, t, rec, e)
		default:
			return ending{}, false
		}
	}
	if err != nil {
		return ending{err: &RetryLaterError{Err: err}}, true
	}
	ctx, cancel := x.settleContext(ctx)
	defer cancel()
	// The schedule carries the job's time when it fires, its not_before
	// (the fired message is stored then, so the bound keeps it); a
	// replay's tag stays in the ledger record, which the fired message's
	// claim takes it from.
	h := nats.Header{}
	h.Set(job.HeaderJobTime, j.NotBefore.UTC().Format(time.RFC3339Nano))
	msgID := job.ScheduleMsgID(j.ID, rec.Replay)
	if err := x.publishSchedule(ctx, rec.Schedule, t.msg.Data(), msgID, h, due, j.Type.Subject()); err != nil {
		// Redelivered, or failed on the last delivery like any job.
		return ending{err: &RetryLaterError{Err: fmt.Errorf("schedule the job: %w", err)}}, true
	}
	// A cancel may have ended the job between the ledger write and the
	// schedule: then the schedule must go. The record is compared and set
	// unchanged to find out.
	if err := x.updateClaim(ctx, t, func(*ledger.Record) bool { return true }); errors.Is(err, ledger.ErrConflict) {
		if e, gerr := x.ledger.Get(ctx, j.ID); gerr == nil && e.State == ledger.Finished {
			if perr := x.jobs.Purge(ctx, jetstream.WithPurgeSubject(rec.Schedule)); perr != nil {
				x.log.Warn("removing the schedule of a cancelled job failed; it fires as a duplicate", "job_id", j.ID, "err", perr)
			}
		}
	}
	x.noteLeaver(ctx, t, leaver.Scheduled)
	x.log.Info("job scheduled", "job_id", j.ID, "type", j.Type, "due_at", due.Format(time.RFC3339))
	return ending{what: parked}, true
}

func (x *executor) publishSchedule(ctx context.Context, subject string, body []byte, msgID string, h nats.Header, due time.Time, target string) error {
	m := &nats.Msg{Subject: subject, Data: body, Header: h}
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	var err error
	for i := 0; i < 5; i++ {
		if _, err = x.pub.PublishMsg(ctx, m, jetstream.WithScheduleAt(due), jetstream.WithScheduleTarget(target)); err == nil {
			return nil
		}
		if !pause.For(ctx, time.Duration(50<<i)*time.Millisecond) {
			break
		}
	}
	return err
}

// guard is the resurrection guard: a job that would give MFA to a user whose
// recorded offboard is later than the job's time is cancelled.
func (x *executor) guard(ctx context.Context, t *task) error {
	j := t.job
	if !j.Type.SupersededByOffboard() || x.people == nil {
		return nil
	}
	off, by, err := x.people.Offboarded(ctx, j.UserID)
	if err != nil {
		return &RetryLaterError{Err: err}
	}
	if !off.IsZero() && t.jobTime.Before(off) {
		return &CancelledError{Code: job.CodeSupersededByOffboard, Message: fmt.Sprintf(
			"the job's time %s is earlier than the user's offboard at %s (job %s); not executed",
			t.jobTime.UTC().Format(time.RFC3339), off.UTC().Format(time.RFC3339), by)}
	}
	return nil
}

// recordOffboard stores a successful or noop offboard's job time in
// MFA_PEOPLE (if later than what is there) before its result.
func (x *executor) recordOffboard(ctx context.Context, t *task, out outcome, err error) error {
	if err != nil || t.job.Type != job.TypeOffboard || x.people == nil {
		return err
	}
	if out.Outcome != job.Succeeded && out.Outcome != job.Noop {
		return nil
	}
	if rerr := x.people.RecordOffboard(ctx, t.job.UserID, t.jobTime, t.job.ID); rerr != nil {
		return &RetryLaterError{Err: fmt.Errorf("record the offboard: %w", rerr)}
	}
	return nil
}

// cancel runs a cancel job against its target's ledger record.
func (x *executor) cancel(ctx context.Context, t *task) (outcome, error) {
	c := t.job
	target := c.Params.JobID
	result := func(o job.Outcome, to string) (outcome, error) {
		return outcome{Outcome: o, Data: job.CancelData{JobID: target, TargetOutcome: to, CancelScope: c.CancelScope}}, nil
	}
	// A scoped cancel ends only a job of its source; the operators' bare
	// cancel any job.
	notPermitted := func(source string) (outcome, error) {
		msg := fmt.Sprintf("a cancel on %s may end only jobs whose source is %q; job %s has ", job.CancelSubject(c.CancelScope), c.CancelScope, target)
		if source == "" {
			msg += "no source"
		} else {
			msg += fmt.Sprintf("source %q", source)
		}
		return outcome{}, &PermanentError{Code: job.CodeCancelNotPermitted, Message: msg}
	}
	for i := 0; i < 20; i++ {
		e, err := x.ledger.Get(ctx, target)
		if errors.Is(err, ledger.ErrNotFound) {
			// A schedule the ledger forgot (its TTL is shorter than 366 days)?
			sm, ferr := FindSchedule(ctx, x.jobs, target)
			if ferr != nil {
				return outcome{}, &RetryLaterError{Err: ferr}
			}
			if sm != nil {
				if tj, _ := x.parser.Parse(job.SubjectPrefix+sm.Subject[len(job.ScheduledSubjectPrefix):strings.LastIndexByte(sm.Subject, '.')], sm.Data); tj != nil && tj.ID == target {
					rec := ledger.Record{State: ledger.Scheduled, Hash: tj.Hash, Schedule: sm.Subject, Type: string(tj.Type), UserID: tj.UserID,
						CorrelationID: tj.CorrelationID, Source: tj.Source, UpdatedAt: time.Now()}
					if _, err := x.ledger.Create(ctx, target, rec); err != nil && !errors.Is(err, ledger.ErrExists) {
						return outcome{}, &RetryLaterError{Err: err}
					}
					continue // cancel it as a scheduled job
				}
			}
			// Not arrived yet: a tombstone waits for it, bound to the
			// cancel's scope.
			_, err = x.ledger.Create(ctx, target, ledger.Record{State: ledger.Tombstone, CancelledBy: c.ID, CancelScope: c.CancelScope, UpdatedAt: time.Now()})
			if errors.Is(err, ledger.ErrExists) {
				continue
			}
			if err != nil {
				return outcome{}, &RetryLaterError{Err: err}
			}
			return result(job.Noop, job.TargetUnknown)
		}
		if err != nil {
			return outcome{}, &RetryLaterError{Err: err}
		}
		switch e.State {
		case ledger.Tombstone:
			// Another cancel waits already: this one waits beside it
			// unless one of the same scope does (a tombstone of another
			// scope must not shut this one out).
			rec := e.Record
			cs := rec.Cancels()
			dup := false
			for _, w := range cs {
				dup = dup || w.By == c.ID || w.Scope == c.CancelScope
			}
			if dup || len(cs) >= ledger.MaxTombstones {
				return result(job.Noop, job.TargetUnknown)
			}
			rec.MoreCancels = append(rec.MoreCancels, ledger.Cancel{By: c.ID, Scope: c.CancelScope})
			rec.UpdatedAt = time.Now()
			if _, err := x.ledger.Update(ctx, target, rec, e.Revision); errors.Is(err, ledger.ErrConflict) {
				continue
			} else if err != nil {
				return outcome{}, &RetryLaterError{Err: err}
			}
			return result(job.Noop, job.TargetUnknown)
		case ledger.Running:
			return result(job.Noop, job.TargetRunning)
		case ledger.Finished:
			if job.Outcome(e.Outcome) == job.Cancelled && e.CancelledBy == c.ID {
				// An earlier delivery of this cancel ended it: finish its work.
				if err := x.endScheduled(ctx, e.Record); err != nil {
					return outcome{}, &RetryLaterError{Err: err}
				}
				if err := x.endHeld(ctx, e.Record, target, c.ID); err != nil {
					return outcome{}, &RetryLaterError{Err: err}
				}
				return result(job.Succeeded, string(job.Cancelled))
			}
			return result(job.Noop, e.Outcome)
		case ledger.Scheduled, ledger.Held:
			// A held job is ended like a scheduled one, then the guard
			// stops listing it as held.
			if !ledger.Binds(c.CancelScope, e.Source) {
				return notPermitted(e.Source)
			}
			now := time.Now()
			tj := &job.Job{ID: target, Type: job.Type(e.Type), UserID: e.UserID, CorrelationID: e.CorrelationID, Source: e.Source}
			res := tj.Result(job.Cancelled, 1, now, now, &job.ErrorInfo{Code: job.CodeCancelled, Message: "cancelled by job " + c.ID + " before it started"}, job.CancelledData{CancelledBy: c.ID, CancelScope: c.CancelScope})
			rec := e.Record
			rec.State, rec.Outcome, rec.Result, rec.ResultMsgID = ledger.Finished, string(job.Cancelled), res.Marshal(), job.ResultMsgID(target, replayOf(&e.Record))
			rec.CancelledBy, rec.CancelScope, rec.UpdatedAt = c.ID, c.CancelScope, now
			if _, err := x.ledger.Update(ctx, target, rec, e.Revision); errors.Is(err, ledger.ErrConflict) {
				continue // it fired, or another cancel won: look again
			} else if err != nil {
				return outcome{}, &RetryLaterError{Err: err}
			}
			if err := x.endScheduled(ctx, rec); err != nil {
				return outcome{}, &RetryLaterError{Err: err}
			}
			if e.State == ledger.Held {
				if err := x.endHeld(ctx, rec, target, c.ID); err != nil {
					return outcome{}, &RetryLaterError{Err: err}
				}
			}
			x.m.JobFinished(e.Type, string(job.Cancelled), 0)
			x.m.JobCancelled(e.Type, job.CodeCancelled, e.Source)
			x.log.Info("job finished", "job_id", target, "type", e.Type, "outcome", job.Cancelled, "code", job.CodeCancelled, "cancelled_by", c.ID, "cancel_scope", c.CancelScope)
			return result(job.Succeeded, string(job.Cancelled))
		default:
			return outcome{}, &RetryLaterError{Err: fmt.Errorf("target record in unknown state %q", e.State)}
		}
	}
	return outcome{}, &RetryLaterError{Err: errors.New("target record keeps changing")}
}

// endScheduled removes a cancelled job's schedule and publishes its result
// (both idempotent).
func (x *executor) endScheduled(ctx context.Context, rec ledger.Record) error {
	if rec.Schedule != "" {
		if err := x.jobs.Purge(ctx, jetstream.WithPurgeSubject(rec.Schedule)); err != nil {
			return fmt.Errorf("remove schedule: %w", err)
		}
	}
	var res job.Result
	if err := json.Unmarshal(rec.Result, &res); err != nil {
		return fmt.Errorf("stored result unreadable: %w", err)
	}
	return x.publish(ctx, res.Subject(), rec.Result, rec.ResultMsgID, nil)
}
