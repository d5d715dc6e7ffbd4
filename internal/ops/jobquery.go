package ops

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
)

// Job states answered by mfa.query.job.
const (
	JobUnknown   = "unknown"
	JobScheduled = "scheduled"
	JobRunning   = "running"
	JobFinished  = "finished"
	// JobHeld: the blast-radius guard holds the job until an operator
	// releases or discards it (worker hold).
	JobHeld = "held"
)

// JobState is the data of a mfa.query.job reply.
type JobState struct {
	JobID string `json:"job_id"`
	// State is unknown, scheduled, held, running or finished (a
	// cancelled job is finished).
	State string `json:"state"`
	// DueAt is when a scheduled job runs (its not_before rounded up to
	// the second).
	DueAt *time.Time `json:"due_at,omitempty"`
	// Result is a finished job's result event.
	Result json.RawMessage `json:"result,omitempty"`
	// CancelledBy and CancelScope are set on an unknown job that a cancel
	// already waits for (a tombstone in the ledger): the cancel's id and
	// its scope (empty: the operators' bare mfa.jobs.cancel, which binds
	// any job; else it binds only a job whose source is the scope). When
	// the job arrives, the first waiting cancel that binds it ends it
	// cancelled. MoreCancels are the further cancels waiting for it, of
	// other scopes, first come first.
	CancelledBy string          `json:"cancelled_by,omitempty"`
	CancelScope string          `json:"cancel_scope,omitempty"`
	MoreCancels []WaitingCancel `json:"more_cancels,omitempty"`
	// Attempts, LastErrorCode and NextRetryAt are set on a running job
	// whose last delivery failed and waits for a retry: the deliveries
	// so far, the error code that made it retry, and when it is delivered
	// again.
	Attempts      int        `json:"attempts,omitempty"`
	LastErrorCode string     `json:"last_error_code,omitempty"`
	NextRetryAt   *time.Time `json:"next_retry_at,omitempty"`
	// HeldSince is when the guard held the job (state held).
	HeldSince *time.Time `json:"held_since,omitempty"`
}

// WaitingCancel is a cancel waiting in the ledger for a job that has not
// arrived: its id and its scope.
type WaitingCancel struct {
	CancelledBy string `json:"cancelled_by"`
	CancelScope string `json:"cancel_scope,omitempty"`
}

type jobRequest struct {
	JobID string `json:"job_id"`
}

// ledgerReader is what the job query needs of the ledger.
type ledgerReader interface {
	Get(ctx context.Context, jobID string) (*ledger.Entry, error)
}

// scheduleReader finds a job's schedule in MFA_JOBS.
type scheduleReader interface {
	GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
}

// HeldLookup finds the blast-radius guard's record of a job id (a
// guard.Guard); nil when it never held the job.
type HeldLookup interface {
	Lookup(ctx context.Context, jobID string) (*guard.Held, error)
}

// LookupJob answers what the ledger knows of a job id, and for an id the
// ledger does not know, whether a schedule for it waits in the job stream
// (the ledger forgets a scheduled job after its TTL; the schedule waits up
// to 366 days). s may be nil.
func LookupJob(ctx context.Context, l ledgerReader, sr scheduleReader, jobID string) (*JobState, error) {
	return LookupJobHeld(ctx, l, sr, nil, jobID)
}

// LookupJobHeld is LookupJob that also asks the blast-radius guard, when
// the ledger has forgotten the id, whether it holds the job (the guard's
// record, without a TTL, is the hold's record of last resort). hl may be
// nil.
func LookupJobHeld(ctx context.Context, l ledgerReader, sr scheduleReader, hl HeldLookup, jobID string) (*JobState, error) {
	e, err := l.Get(ctx, jobID)
	if errors.Is(err, ledger.ErrNotFound) {
		if hl != nil {
			h, err := hl.Lookup(ctx, jobID)
			if err != nil {
				return nil, err
			}
			if h != nil && h.State == guard.StateHeld {
				at := h.HeldAt.UTC()
				return &JobState{JobID: jobID, State: JobHeld, HeldSince: &at}, nil
			}
		}
		if sr != nil {
			m, err := jobs.FindSchedule(ctx, sr, jobID)
			if err != nil {
				return nil, err
			}
			if m != nil {
				st := &JobState{JobID: jobID, State: JobScheduled}
				if due, ok := jobs.ScheduleDue(m); ok {
					st.DueAt = &due
				}
				return st, nil
			}
		}
		return &JobState{JobID: jobID, State: JobUnknown}, nil
	}
	if err != nil {
		return nil, err
	}
	s := &JobState{JobID: jobID}
	switch e.State {
	case ledger.Scheduled:
		s.State = JobScheduled
		due := e.DueAt.UTC()
		s.DueAt = &due
	case ledger.Running:
		s.State = JobRunning
		if e.Attempts > 0 {
			s.Attempts, s.LastErrorCode = e.Attempts, e.LastErrorCode
			if !e.NextRetryAt.IsZero() {
				next := e.NextRetryAt.UTC()
				s.NextRetryAt = &next
			}
		}
	case ledger.Held:
		s.State = JobHeld
		if !e.UpdatedAt.IsZero() {
			at := e.UpdatedAt.UTC()
			s.HeldSince = &at
		}
	case ledger.Finished:
		s.State, s.Result = JobFinished, e.Result
	default: // a tombstone
		s.State = JobUnknown
		for i, c := range e.Cancels() {
			if i == 0 {
				s.CancelledBy, s.CancelScope = c.By, c.Scope
				continue
			}
			s.MoreCancels = append(s.MoreCancels, WaitingCancel{CancelledBy: c.By, CancelScope: c.Scope})
		}
	}
	return s, nil
}

// AddJobEndpoint adds mfa.query.job to the service: request
// {"job_id": "..."}, data a JobState. It reads the ledger only, so it
// never spends OneLogin's budget. hl (may be nil) answers for held jobs
// the ledger has forgotten.
func (q *QueryService) AddJobEndpoint(l ledgerReader, s scheduleReader, hl HeldLookup) error {
	return q.svc.AddGroup(job.QueryGroup).AddEndpoint(job.QueryEndpointJob, micro.HandlerFunc(func(req micro.Request) {
		var r jobRequest
		if err := json.Unmarshal(req.Data(), &r); err != nil || !job.ValidID(r.JobID) {
			respondError(req, "400", &job.ErrorInfo{Code: job.CodeInvalidID, Message: `request must be {"job_id": "..."} with 1..128 printable ASCII characters`})
			return
		}
		ctx, cancel := context.WithTimeout(q.ctx, 5*time.Second)
		defer cancel()
		st, err := LookupJobHeld(ctx, l, s, hl, r.JobID)
		if err != nil {
			respondError(req, "503", &job.ErrorInfo{Code: job.CodeLedgerUnavailable, Message: "the job ledger did not answer", Retryable: true})
			return
		}
		_ = req.RespondJSON(queryReply{Data: st})
	}))
}

// respondError answers {"error": {...}} with the micro error headers set,
// so that `nats micro stats` counts the error.
func respondError(req micro.Request, status string, info *job.ErrorInfo) {
	b, _ := json.Marshal(queryReply{Error: info})
	_ = req.Error(status, info.Code, b)
}
