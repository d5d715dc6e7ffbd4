package job

// Error codes: every code a result's error, a DLQ copy's Mfa-Error-Code
// header or a query reply can carry. Codes lists them with their meaning;
// the README's table is checked against it.
const (
	// Rejected jobs: the job itself is invalid; OneLogin is never called.
	CodeUnknownSubject        = "unknown_subject"
	CodeTooLarge              = "too_large"
	CodeInvalidJSON           = "invalid_json"
	CodeNotAnObject           = "not_an_object"
	CodeMissingField          = "missing_field"
	CodeUnknownField          = "unknown_field"
	CodeWrongType             = "wrong_type"
	CodeOutOfRange            = "out_of_range"
	CodeInvalidLength         = "invalid_length"
	CodeInvalidFormat         = "invalid_format"
	CodeInvalidValue          = "invalid_value"
	CodeInvalidID             = "invalid_id"
	CodeInvalidUserID         = "invalid_user_id"
	CodeInvalidType           = "invalid_type"
	CodeTypeMismatch          = "type_mismatch"
	CodeConflictingFields     = "conflicting_fields"
	CodeIDReused              = "id_reused"
	CodeRecipientXKeyRequired = "recipient_xkey_required"
	CodeInvalidRecipientXKey  = "invalid_recipient_xkey"
	CodeUnreasonableNumber    = "unreasonable_number"
	CodeInvalidCharacters     = "invalid_characters"
	CodeInvalidSelector       = "invalid_selector"

	// Failed jobs.
	CodeUserNotFound       = "user_not_found"
	CodeIdentityAmbiguous  = "identity_ambiguous"
	CodeFactorNotFound     = "factor_not_found"
	CodeFactorUnavailable  = "factor_not_available"
	CodeVerificationFailed = "verification_failed"
	// CodeStateTokenExpired and CodeVerificationPending are the codes of
	// the OneLogin client's typed verify errors (onelogin.ErrorCode).
	CodeStateTokenExpired   = "state_token_expired"
	CodeVerificationPending = "verification_pending"
	CodeUnauthorized        = "unauthorized"
	CodeOneLoginRejected    = "onelogin_rejected"
	CodeRetriesExhausted    = "retries_exhausted"
	CodeAmbiguousEffect     = "ambiguous_effect"
	CodeSealFailed          = "seal_failed"
	CodeFactorsRemain       = "factors_remain"
	// CodeCancelNotPermitted: a scoped cancel (mfa.jobs.cancel.<scope>)
	// named a job of another source.
	CodeCancelNotPermitted = "cancel_not_permitted"
	// CodeJobsStreamFull: MFA_JOBS reached the worker's limits
	// (WORKER_JOBS_MAX_BYTES, WORKER_JOBS_MAX_MSGS), so a job whose
	// not_before is ahead was not parked.
	CodeJobsStreamFull = "jobs_stream_full"

	// Expired jobs.
	CodeExpired = "not_after_passed"

	// Cancelled jobs.
	CodeCancelled            = "cancelled"
	CodeSupersededByOffboard = "superseded_by_offboard"
	// CodeDiscarded: an operator discarded a job the blast-radius guard held.
	CodeDiscarded = "discarded"

	// Query replies only (mfa.query.*), never in a result.
	CodeOneLoginUnavailable = "onelogin_unavailable"
	CodeRateLimited         = "rate_limited"
	CodeLedgerUnavailable   = "ledger_unavailable"
	CodeBusy                = "busy"
	CodeCredentials         = "credentials"
)

// CodeInfo describes one error code.
type CodeInfo struct {
	Code string
	// Outcome is the outcome the code comes with; empty for codes that
	// appear only in query replies.
	Outcome Outcome
	// Meaning is one line for operators (the README's table).
	Meaning string
}

// Codes is every error code, grouped by outcome, in the README's order.
var Codes = []CodeInfo{
	{CodeUnknownSubject, Rejected, "the message arrived on a subject that is not a job subject of a known type"},
	{CodeTooLarge, Rejected, "the job is over the size limit (64 KiB)"},
	{CodeInvalidJSON, Rejected, "the body is not JSON"},
	{CodeNotAnObject, Rejected, "the body is JSON but not an object"},
	{CodeMissingField, Rejected, "a required field is missing"},
	{CodeUnknownField, Rejected, "a field the schema does not know"},
	{CodeWrongType, Rejected, "a field has the wrong JSON type"},
	{CodeOutOfRange, Rejected, "a number is outside its range, or not_before is more than 366 days ahead"},
	{CodeInvalidLength, Rejected, "a string is too short or too long"},
	{CodeInvalidFormat, Rejected, "a string does not match its format"},
	{CodeInvalidValue, Rejected, "a value is not one of those allowed"},
	{CodeInvalidID, Rejected, "the id is not 1..128 printable ASCII characters"},
	{CodeInvalidUserID, Rejected, "user_id is not a positive integer"},
	{CodeInvalidType, Rejected, "type is not a known job type"},
	{CodeTypeMismatch, Rejected, "type does not match the subject's type"},
	{CodeConflictingFields, Rejected, "both factor_id and factor_name are given, or not_before is after not_after"},
	{CodeIDReused, Rejected, "the id was used for a job with another body"},
	{CodeRecipientXKeyRequired, Rejected, "generate_token without recipient_xkey while plain tokens are not allowed"},
	{CodeInvalidRecipientXKey, Rejected, "recipient_xkey is not an nkeys curve public key"},
	{CodeUnreasonableNumber, Rejected, "a number has more than 40 digits or an exponent beyond 400 (refused before validation)"},
	{CodeInvalidCharacters, Rejected, "a string sent to OneLogin, or correlation_id or source, holds a control character (C0, DEL, C1, so also ANSI escapes) or a bidirectional control"},
	{CodeInvalidSelector, Rejected, "a value of user holds '*' or '!', which OneLogin's Users API reads as operators (wildcard, negation): it cannot be matched exactly"},
	{CodeUserNotFound, Failed, "OneLogin does not know the user (by user_id, or none of the job's user identifiers matches anyone exactly)"},
	{CodeIdentityAmbiguous, Failed, "an identifier of the job's user matches several OneLogin users exactly, or its identifiers find different users; nothing was done"},
	{CodeFactorNotFound, Failed, "OneLogin does not know the device"},
	{CodeFactorUnavailable, Failed, "the factor is not available to the user"},
	{CodeVerificationFailed, Failed, "OneLogin refused the OTP"},
	{CodeStateTokenExpired, Failed, "the verify's state_token expired or is no longer the device's (OneLogin answered 400); activate again"},
	{CodeVerificationPending, Failed, "OneLogin still answered pending (a push not yet approved) on the last allowed delivery; never active"},
	{CodeUnauthorized, Failed, "OneLogin refused the worker's credentials or their scope (401/403)"},
	{CodeOneLoginRejected, Failed, "OneLogin refused the call for another reason (a 4xx)"},
	{CodeRetriesExhausted, Failed, "every delivery failed for a transient reason; the last error is in the message"},
	{CodeAmbiguousEffect, Failed, "a call that cannot be read back may have been made; not repeated"},
	{CodeSealFailed, Failed, "the MFA token could not be sealed to recipient_xkey"},
	{CodeFactorsRemain, Failed, "an offboard listed the user's factors again after removing them and some were still there (their ids in data.remaining_device_ids); the v1 API does not list every kind of factor, so an empty list is not proof that none remains"},
	{CodeCancelNotPermitted, Failed, "a cancel on mfa.jobs.cancel.<scope> named a job whose source is not the scope; the target was not touched (only the bare mfa.jobs.cancel may end any job)"},
	{CodeJobsStreamFull, Failed, "MFA_JOBS reached WORKER_JOBS_MAX_BYTES or WORKER_JOBS_MAX_MSGS, so the job, whose not_before is ahead, was not parked; replay it once there is room"},
	{CodeExpired, Expired, "not_after passed before the job could run"},
	{CodeCancelled, Cancelled, "a cancel job (data.cancelled_by, its scope in data.cancel_scope) ended the job before it started"},
	{CodeSupersededByOffboard, Cancelled, "the job's time is earlier than the user's last offboard; OneLogin was not called"},
	{CodeDiscarded, Cancelled, "the blast-radius guard held the job and an operator discarded it (worker hold discard); OneLogin was not called"},
	{CodeOneLoginUnavailable, "", "OneLogin did not answer or answered 5xx; retryable"},
	{CodeRateLimited, "", "the OneLogin rate limit is spent; retryable"},
	{CodeLedgerUnavailable, "", "the job ledger did not answer (mfa.query.job); retryable"},
	{CodeBusy, "", "OneLogin's remaining budget is below WORKER_QUERY_RESERVE, or this replica answers too many queries at once; retry later"},
	{CodeCredentials, "", "the worker's own OneLogin credentials are refused; jobs wait, nothing fails; retryable"},
}

// CodesOf returns the codes that come with outcome o.
func CodesOf(o Outcome) []string {
	var out []string
	for _, c := range Codes {
		if c.Outcome == o {
			out = append(out, c.Code)
		}
	}
	return out
}

// KnownCode reports whether code is in Codes.
func KnownCode(code string) bool {
	for _, c := range Codes {
		if c.Code == code {
			return true
		}
	}
	return false
}
