package jobs

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
)

// DeadLetters reports whether the outcome sends a copy to MFA_DLQ.
func (o Outcome) DeadLetters() bool { return o == Failed || o == Rejected || o == Expired }

// Result is the event published to mfa.results.<type>.<outcome>; see
// schemas/result.v1.json.
type Result struct {
	JobID         string         `json:"job_id"`
	Type          Type           `json:"type"`
	UserID        int64          `json:"user_id"`
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

// ResultSubjectPrefix is the common prefix of result subjects.
const ResultSubjectPrefix = "mfa.results."

// Marshal encodes the result.
func (r *Result) Marshal() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		// Every field is a plain value; this cannot happen.
		panic("jobs: encode result: " + err.Error())
	}
	return b
}
