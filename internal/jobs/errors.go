package jobs

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// Handlers report how an attempt went with one of these typed errors, or
// with a OneLogin error as the client returned it; decide and classify
// (decide.go) are the only code that interprets them.

// PermanentError ends a job as failed; it is not retried.
type PermanentError struct {
	Code       string
	Message    string
	HTTPStatus int
	// RequestID is OneLogin's X-Request-Id of the refusal, for the log.
	RequestID string
}

func (e *PermanentError) Error() string { return e.Code + ": " + e.Message }

// RetryLaterError asks for the job to be delivered again after Delay (zero:
// the worker's growing nak delay). It counts toward the max deliveries.
type RetryLaterError struct {
	Err   error
	Delay time.Duration
	// maySent keeps the ledger's record that a call that cannot be read
	// back may have been made (a verify whose read-back failed).
	maySent bool
}

func (e *RetryLaterError) Error() string { return "retry later: " + e.Err.Error() }
func (e *RetryLaterError) Unwrap() error { return e.Err }

// AmbiguousError is a call that may or may not have taken effect (no answer
// came back, or an earlier delivery may have made it). For a type whose
// call cannot be read back it fails the job with ambiguous_effect; for the
// others it is retried like any transient error.
type AmbiguousError struct {
	Op string
	// Earlier is set when an earlier delivery may have made the call.
	Earlier bool
	Err     error
}

func (e *AmbiguousError) Error() string {
	if e.Earlier {
		return e.Op + ": an earlier delivery may already have made this call; not repeated (replay the job to run it again)"
	}
	return e.Op + ": the call may have reached OneLogin but no answer came back; not repeated (replay the job to run it again)"
}

func (e *AmbiguousError) Unwrap() error { return e.Err }

// Failure turns a OneLogin refusal into the PermanentError a job (or a
// query, with no type) reports for it.
func Failure(t job.Type, op string, err error) *PermanentError { return failure(t, op, err) }

// failure turns a OneLogin refusal into a PermanentError with a specific
// code. op names the call in the message; t is the job type (a 401 to a
// verify is a wrong OTP, not wrong credentials).
func failure(t job.Type, op string, err error) *PermanentError {
	status := onelogin.StatusCode(err)
	var er *onelogin.ErrorResponse
	var msg string
	if errors.As(err, &er) {
		msg = fmt.Sprintf("%s: OneLogin answered %d: %s", op, er.StatusCode, er.Message())
	} else {
		msg = op + ": " + err.Error()
	}
	code := job.CodeOneLoginRejected
	switch {
	case onelogin.ErrorCode(err) != "":
		// The client's typed errors name their code: state_token_expired,
		// verification_failed, user_not_found, ...
		code = onelogin.ErrorCode(err)
	case onelogin.IsFactorNotFound(err):
		code = job.CodeFactorNotFound
	case onelogin.IsUserNotFound(err):
		code = job.CodeUserNotFound
	case status == http.StatusUnauthorized && t == job.TypeVerify:
		code = job.CodeVerificationFailed
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		code = job.CodeUnauthorized
	}
	return &PermanentError{Code: code, Message: msg, HTTPStatus: status, RequestID: onelogin.RequestIDOf(err)}
}

// CancelledError ends a job as cancelled: by a cancel job (Code cancelled,
// CancelledBy set) or by the resurrection guard (superseded_by_offboard).
// OneLogin is not called.
type CancelledError struct {
	Code        string
	Message     string
	CancelledBy string
}

func (e *CancelledError) Error() string { return e.Code + ": " + e.Message }

// expiredError is a job whose not_after passed before it could run.
type expiredError struct{ notAfter time.Time }

func (e *expiredError) Error() string {
	return "not_after " + e.notAfter.UTC().Format(time.RFC3339) + " passed before the job could run"
}

// errReused: the id belongs to a job with another body.
var errReused = errors.New("job id reused")
