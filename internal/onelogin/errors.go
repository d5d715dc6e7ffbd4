package onelogin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// ErrorResponse is a non-2xx answer from a resource endpoint (or a 2xx whose
// status object says error).
type ErrorResponse struct {
	Endpoint   string
	StatusCode int
	Status     Status
	// RequestID is OneLogin's X-Request-Id of the answer (may be empty).
	RequestID string
}

func (e *ErrorResponse) Error() string {
	typ := e.Status.Type
	if typ == "" {
		typ = strings.ToLower(http.StatusText(e.StatusCode))
	}
	msg := sanitize(e.Status.Message.String())
	if msg == "" {
		return fmt.Sprintf("onelogin %s: %d %s", e.Endpoint, e.StatusCode, typ)
	}
	return fmt.Sprintf("onelogin %s: %d %s: %s", e.Endpoint, e.StatusCode, typ, msg)
}

// Message returns OneLogin's message, made safe to log.
func (e *ErrorResponse) Message() string { return sanitize(e.Status.Message.String()) }

// RateLimitError is a 429: the account's budget is spent until Rate.Reset.
type RateLimitError struct {
	Endpoint string
	Rate     RateLimit
	// RequestID is OneLogin's X-Request-Id of the answer (may be empty).
	RequestID string
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("onelogin %s: 429 rate limit exceeded, window resets at %s", e.Endpoint, e.Rate.Reset.UTC().Format(time.RFC3339))
}

// TokenError is a failed fetch of the OAuth2 access token. It never holds the
// client secret or a token.
type TokenError struct {
	StatusCode int // 0 when no HTTP answer came back
	Message    string
	Err        error // the underlying transport error, if any
	// Credentials is true when the credentials themselves were refused
	// (a 4xx other than 408/429, or the 500 that OneLogin documents for
	// credentials whose owner was deleted) or the secret could not be
	// read: retrying soon will not help, fixing the credentials will.
	Credentials bool
	// RequestID is OneLogin's X-Request-Id of the answer (may be empty).
	RequestID string
}

func (e *TokenError) Error() string {
	switch {
	case e.StatusCode != 0 && e.Message != "":
		return fmt.Sprintf("onelogin token: %d: %s", e.StatusCode, e.Message)
	case e.StatusCode != 0:
		return fmt.Sprintf("onelogin token: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	case e.Err == nil:
		return "onelogin token: " + e.Message
	default:
		return fmt.Sprintf("onelogin token: %v", e.Err)
	}
}

func (e *TokenError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCredentials) hold for a credentials failure.
func (e *TokenError) Is(target error) bool { return target == ErrCredentials && e.Credentials }

// ErrCredentials matches (with errors.Is) a *TokenError that says the
// worker's own OneLogin credentials are refused. It is not the failure of
// the job that happened to need a token: stop taking jobs until a token is
// obtained again.
var ErrCredentials = errors.New("onelogin credentials refused")

// DecodeError is a 2xx answer whose body could not be read as the endpoint's
// documented shape. The call may have taken effect.
type DecodeError struct {
	Endpoint string
	Err      error
	// RequestID is OneLogin's X-Request-Id of the answer (may be empty).
	RequestID string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("onelogin %s: decode response: %v", e.Endpoint, e.Err)
}
func (e *DecodeError) Unwrap() error { return e.Err }

// PagingError is a list whose After-Cursor repeated an earlier one: the
// list cannot be read to its end. Retrying may help (the list may have
// changed), so it is transient.
type PagingError struct {
	Endpoint string
	// RequestID is OneLogin's X-Request-Id of the answer (may be empty).
	RequestID string
}

func (e *PagingError) Error() string {
	return fmt.Sprintf("onelogin %s: the After-Cursor repeated an earlier page's; the list was not read to its end", e.Endpoint)
}

// ErrBudgetWait means the caller gave up while waiting for the rate-limit
// budget; the request was never sent.
var ErrBudgetWait = errors.New("gave up waiting for rate-limit budget")

// ErrBodyTooLarge means a response body exceeded the client's size limit.
var ErrBodyTooLarge = errors.New("response body exceeds the size limit")

// Class says what a caller should do with an error.
type Class int

const (
	// Permanent errors will fail the same way again: do not retry.
	Permanent Class = iota
	// Transient errors (network, time-out, 5xx, unreadable 2xx) may succeed
	// on retry.
	Transient
	// RateLimited errors succeed after the window resets; waiting for it is
	// not a failed attempt.
	RateLimited
)

func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case RateLimited:
		return "rate_limited"
	default:
		return "permanent"
	}
}

// Classify is the one place that decides whether an error from this package
// is worth retrying. A 401 reaching the caller is permanent: the client has
// already refreshed the token once and re-sent the request.
func Classify(err error) Class {
	if err == nil {
		return Permanent
	}
	var rl *RateLimitError
	if errors.As(err, &rl) {
		return RateLimited
	}
	var ve *VerifyError
	if errors.As(err, &ve) {
		if ve.Code == CodeVerificationPending {
			return Transient
		}
		return Permanent
	}
	var ue2 *UserLookupError
	if errors.As(err, &ue2) {
		return Permanent
	}
	var te *TokenError
	if errors.As(err, &te) {
		if te.Credentials {
			return Permanent
		}
		if te.StatusCode == 0 || te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests || te.StatusCode == http.StatusRequestTimeout {
			return Transient
		}
		return Permanent
	}
	var er *ErrorResponse
	if errors.As(err, &er) {
		if er.StatusCode >= 500 || er.StatusCode == http.StatusRequestTimeout {
			return Transient
		}
		return Permanent
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return Permanent
	}
	// Network failures, time-outs, cancelled contexts, unreadable bodies:
	// nothing says the same call would fail again.
	return Transient
}

// MayHaveTakenEffect reports whether a failed call may still have reached
// OneLogin and taken effect: it was (or may have been) sent and no answer
// says it was refused. A 5xx other than 503 says nothing about the effect:
// OneLogin's edge answers 502 (and 504) in bursts for calls that were
// applied, so 500, 502, 504 and any other 5xx received after the request
// was sent are ambiguous, as are time-outs, resets and lost replies. 503
// ("try again"), 4xx, 429, failures to connect, token failures and giving
// up on the budget are not: nothing was applied.
func MayHaveTakenEffect(err error) bool {
	if err == nil || errors.Is(err, ErrBudgetWait) {
		return false
	}
	var te *TokenError
	if errors.As(err, &te) {
		return false // the resource call was never sent
	}
	var ve *VerifyError
	if errors.As(err, &ve) {
		return false // OneLogin answered: pending, wrong OTP, expired state token
	}
	var le *UserLookupError
	if errors.As(err, &le) {
		return false
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return false
	}
	var pe *PagingError
	if errors.As(err, &pe) {
		return false // a list read: it changes nothing
	}
	if s := StatusCode(err); s != 0 {
		return s >= 500 && s != http.StatusServiceUnavailable
	}
	var de *DecodeError
	if errors.As(err, &de) {
		return true // a 2xx whose body we could not read: it happened
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return false
	}
	return !errors.Is(err, syscall.ECONNREFUSED)
}

// StatusCode returns the HTTP status behind err, or 0 when there was none.
func StatusCode(err error) int {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.StatusCode
	}
	var er *ErrorResponse
	if errors.As(err, &er) {
		return er.StatusCode
	}
	var rl *RateLimitError
	if errors.As(err, &rl) {
		return http.StatusTooManyRequests
	}
	var te *TokenError
	if errors.As(err, &te) {
		return te.StatusCode
	}
	return 0
}

// IsFactorNotFound reports whether OneLogin said the device does not exist:
// 400 "Factor could not be found". For a removal this means already gone.
func IsFactorNotFound(err error) bool {
	var er *ErrorResponse
	if !errors.As(err, &er) || (er.StatusCode != http.StatusBadRequest && er.StatusCode != http.StatusNotFound) {
		return false
	}
	return strings.Contains(strings.ToLower(er.Status.Message.Description), "factor could not be found")
}

// IsUserNotFound reports whether OneLogin said the user does not exist
// (404 "User for id N was not found", or 400 "User does not exist" on verify).
func IsUserNotFound(err error) bool {
	var er *ErrorResponse
	if !errors.As(err, &er) {
		return false
	}
	msg := strings.ToLower(er.Status.Message.Description)
	return strings.Contains(msg, "user for id") || strings.Contains(msg, "user does not exist")
}

// IsUnauthorized reports a 401 that survived the token refresh: bad
// credentials or missing scope; on verify, a wrong OTP (a *VerifyError with
// CodeVerificationFailed, which keeps the 401 status).
func IsUnauthorized(err error) bool { return StatusCode(err) == http.StatusUnauthorized }

// Error codes that this package's typed errors carry, named as a job result
// reports them.
const (
	// CodeVerificationFailed: OneLogin refused the OTP (a 401 on verify
	// while the token was shown good by a read call).
	CodeVerificationFailed = "verification_failed"
	// CodeStateTokenExpired: the state token of a verify expired or is no
	// longer the device's (a 400 on verify).
	CodeStateTokenExpired = "state_token_expired"
	// CodeVerificationPending: OneLogin answered 200 with status type
	// "pending" (a push not yet approved, or no OTP given): not verified.
	CodeVerificationPending = "verification_pending"
	// CodeUserNotFound: no OneLogin user matches a UserSelector exactly.
	CodeUserNotFound = "user_not_found"
	// CodeIdentityAmbiguous: several OneLogin users match an identifier of
	// a UserSelector, or its identifiers find different users.
	CodeIdentityAmbiguous = "identity_ambiguous"
	// CodeInvalidSelector: a UserSelector value holds "*" or "!", which
	// OneLogin reads as operators; it is never sent.
	CodeInvalidSelector = "invalid_selector"
	// CodeCredentials: the worker's own OneLogin credentials are refused.
	CodeCredentials = "credentials"
)

// ErrVerificationPending matches (with errors.Is) a verify answered
// "pending": the device is not verified yet.
var ErrVerificationPending = errors.New("verification pending")

// VerifyError is a verify that OneLogin answered without verifying: Code is
// CodeVerificationPending (retryable: poll again later), or
// CodeVerificationFailed or CodeStateTokenExpired (permanent).
type VerifyError struct {
	Code       string
	StatusCode int    // the HTTP status: 200 for pending, 401, 400
	Message    string // OneLogin's message, safe to log
	RequestID  string // OneLogin's X-Request-Id (may be empty)
	Err        error  // the *ErrorResponse behind it, if any
}

func (e *VerifyError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("onelogin verify: %s (%d)", e.Code, e.StatusCode)
	}
	return fmt.Sprintf("onelogin verify: %s (%d): %s", e.Code, e.StatusCode, e.Message)
}

func (e *VerifyError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrVerificationPending) hold for a pending answer.
func (e *VerifyError) Is(target error) bool {
	return target == ErrVerificationPending && e.Code == CodeVerificationPending
}

// UserLookupError says that a UserSelector did not name exactly one
// OneLogin user. Code is CodeUserNotFound, CodeIdentityAmbiguous or
// CodeInvalidSelector. It never holds a value looked up.
type UserLookupError struct {
	Code string
	// Field names the identifiers concerned, comma-separated ("email", or
	// "email,external_id").
	Field string
	// Matches is the number of users found: 0, or 2 and more.
	Matches int
	// Disagree is set when each identifier found one user, but not the
	// same one.
	Disagree bool
}

func (e *UserLookupError) Error() string { return "onelogin users: " + e.Reason() }

// Reason says why the lookup failed, naming the identifiers, never their
// values.
func (e *UserLookupError) Reason() string {
	switch {
	case e.Code == CodeInvalidSelector:
		return fmt.Sprintf("the %s holds '*' or '!', which OneLogin reads as operators; nothing was looked up", e.Field)
	case e.Code == CodeUserNotFound && strings.Contains(e.Field, ","):
		return fmt.Sprintf("no OneLogin user has any of these identifiers (%s)", e.Field)
	case e.Code == CodeUserNotFound:
		return fmt.Sprintf("no OneLogin user has this %s", e.Field)
	case e.Disagree:
		return fmt.Sprintf("the identifiers (%s) name different OneLogin users; nothing was done", e.Field)
	}
	return fmt.Sprintf("%d OneLogin users have this %s; nothing was done", e.Matches, e.Field)
}

// ErrorCode returns the result code that a typed error of this package
// stands for (one of the Code constants), or "" when the error has none and
// the caller decides by status and Classify.
func ErrorCode(err error) string {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Code
	}
	var le *UserLookupError
	if errors.As(err, &le) {
		return le.Code
	}
	if errors.Is(err, ErrCredentials) {
		return CodeCredentials
	}
	return ""
}

// RequestIDOf returns OneLogin's X-Request-Id carried by err, or "".
func RequestIDOf(err error) string {
	var ve *VerifyError
	if errors.As(err, &ve) && ve.RequestID != "" {
		return ve.RequestID
	}
	var er *ErrorResponse
	if errors.As(err, &er) {
		return er.RequestID
	}
	var rl *RateLimitError
	if errors.As(err, &rl) {
		return rl.RequestID
	}
	var te *TokenError
	if errors.As(err, &te) {
		return te.RequestID
	}
	var de *DecodeError
	if errors.As(err, &de) {
		return de.RequestID
	}
	var pe *PagingError
	if errors.As(err, &pe) {
		return pe.RequestID
	}
	return ""
}

// usageError is a mistake by the caller (bad argument), never retried.
type usageError struct{ msg string }

func (e *usageError) Error() string { return "onelogin: " + e.msg }

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// sanitize keeps a server-provided message to one printable line of bounded
// length, so that a hostile or broken answer cannot forge log lines.
func sanitize(s string) string {
	const max = 200
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			b.WriteString("...")
			break
		}
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}
