package jobs

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// PermanentError ends a job as failed; it is not retried.
type PermanentError struct {
	Code       string
	Message    string
	HTTPStatus int
}

func (e *PermanentError) Error() string { return e.Code + ": " + e.Message }

// RetryLaterError asks for the job to be delivered again after Delay (zero:
// the worker's growing nak delay). It counts toward the max deliveries.
type RetryLaterError struct {
	Err   error
	Delay time.Duration
}

func (e *RetryLaterError) Error() string { return "retry later: " + e.Err.Error() }
func (e *RetryLaterError) Unwrap() error { return e.Err }

// permanent wraps a OneLogin error as a PermanentError with a specific code.
func permanent(op string, err error) *PermanentError {
	status := onelogin.StatusCode(err)
	var er *onelogin.ErrorResponse
	msg := err.Error()
	if errors.As(err, &er) {
		msg = fmt.Sprintf("%s: OneLogin answered %d: %s", op, er.StatusCode, er.Message())
	} else {
		msg = op + ": " + msg
	}
	code := job.CodeOneLoginRejected
	switch {
	case onelogin.IsFactorNotFound(err):
		code = job.CodeFactorNotFound
	case onelogin.IsUserNotFound(err):
		code = job.CodeUserNotFound
	case status == http.StatusUnauthorized && op == "verify":
		code = job.CodeVerificationFailed
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		code = job.CodeUnauthorized
	}
	return &PermanentError{Code: code, Message: msg, HTTPStatus: status}
}
