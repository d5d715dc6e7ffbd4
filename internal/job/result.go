package job

import (
	"encoding/json"
	"time"
)

// Outcome is how a job ended.
type Outcome string

// The outcomes.
const (
	Succeeded Outcome = "succeeded"
	Noop      Outcome = "noop"
	Failed    Outcome = "failed"
	Rejected  Outcome = "rejected"
	Expired   Outcome = "expired"
	// Cancelled: a cancel job ended the job before it started, or the
	// resurrection guard did (a stale job for a user offboarded later).
	Cancelled Outcome = "cancelled"
)

// Outcomes lists every outcome.
var Outcomes = []Outcome{Succeeded, Noop, Failed, Rejected, Expired, Cancelled}

// DeadLetters reports whether the outcome sends a copy to MFA_DLQ.
func (o Outcome) DeadLetters() bool { return o == Failed || o == Rejected || o == Expired }

// Result is the event published to mfa.results.<type>.<outcome>; see
// schemas/result.v1.json.
type Result struct {
	JobID         string         `json:"job_id"`
	Type          Type           `json:"type"`
	UserID        int64          `json:"user_id"`
	User          *User          `json:"user,omitempty"`
	Outcome       Outcome        `json:"outcome"`
	Attempts      int            `json:"attempts"`
	StartedAt     time.Time      `json:"started_at"`
	FinishedAt    time.Time      `json:"finished_at"`
	DurationMS    int64          `json:"duration_ms"`
	CorrelationID string         `json:"correlation_id,omitempty"`
	Source        string         `json:"source,omitempty"`
	Error         *ErrorInfo     `json:"error,omitempty"`
	Data          map[string]any `json:"data,omitempty"`
}

// ErrorInfo is a result's error object.
type ErrorInfo struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	HTTPStatus int    `json:"http_status,omitempty"`
	Retryable  bool   `json:"retryable"`
}

// Subject returns the subject the result is published on.
func (r *Result) Subject() string {
	return ResultSubjectPrefix + string(r.Type) + "." + string(r.Outcome)
}

// Marshal encodes the result.
func (r *Result) Marshal() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		// Every field is a plain value; this cannot happen.
		panic("job: encode result: " + err.Error())
	}
	return b
}

// Result builds the result of j, with its typed data (nil: none).
func (j *Job) Result(o Outcome, attempts int, started, finished time.Time, info *ErrorInfo, data Data) *Result {
	r := newResult(j.ID, j.Type, j.UserID, o, attempts, started, finished, info)
	r.CorrelationID, r.Source, r.Data = j.CorrelationID, j.Source, dataMap(data)
	r.User = j.User
	return r
}

// Result builds the result of a rejected job. Only a rejection with a
// readable id and a known type has one: ok is false otherwise.
func (r *Rejection) Result(attempts int, started, finished time.Time) (res *Result, ok bool) {
	if r.JobID == "" || !r.Type.Valid() {
		return nil, false
	}
	res = newResult(r.JobID, r.Type, r.UserID, Rejected, attempts, started, finished, &ErrorInfo{Code: r.Code, Message: r.Message})
	res.User = r.User
	if r.Job != nil {
		res.CorrelationID, res.Source = r.Job.CorrelationID, r.Job.Source
	}
	return res, true
}

func newResult(id string, t Type, user int64, o Outcome, attempts int, started, finished time.Time, info *ErrorInfo) *Result {
	return &Result{
		JobID: id, Type: t, UserID: user, Outcome: o, Attempts: attempts,
		StartedAt: started.UTC(), FinishedAt: finished.UTC(), DurationMS: finished.Sub(started).Milliseconds(),
		Error: info,
	}
}
