package jobs

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// Error codes of failed and expired jobs.
const (
	CodeFactorNotFound     = "factor_not_found"
	CodeUserNotFound       = "user_not_found"
	CodeVerificationFailed = "verification_failed"
	CodeUnauthorized       = "unauthorized"
	CodeFactorUnavailable  = "factor_not_available"
	CodeOneLoginRejected   = "onelogin_rejected"
	CodeRetriesExhausted   = "retries_exhausted"
	CodeAmbiguousEffect    = "ambiguous_effect"
	CodeExpired            = "not_after_passed"
	CodeSealFailed         = "seal_failed"
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
	code := CodeOneLoginRejected
	switch {
	case onelogin.IsFactorNotFound(err):
		code = CodeFactorNotFound
	case onelogin.IsUserNotFound(err):
		code = CodeUserNotFound
	case status == http.StatusUnauthorized && op == "verify":
		code = CodeVerificationFailed
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		code = CodeUnauthorized
	}
	return &PermanentError{Code: code, Message: msg, HTTPStatus: status}
}
