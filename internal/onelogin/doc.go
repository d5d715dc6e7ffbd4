// Package onelogin is a client for OneLogin's API v1 multi-factor
// authentication endpoints and the Users API v2 lookup that names a person
// by email, username or external id.
//
// The client is shaped like go-github: one Client with NewRequest and Do,
// one method per endpoint returning the decoded value, a *Response carrying
// the parsed X-RateLimit-* headers and OneLogin's own X-Request-Id, and an
// error. Non-2xx answers become a typed *ErrorResponse (HTTP status plus
// OneLogin's status object) or a *RateLimitError (with the moment the window
// resets). Classify is the one place that decides whether an error is
// transient or permanent; ErrorCode names the result code a typed error
// stands for, and RequestIDOf the X-Request-Id to log with it.
//
// OAuth2 client credentials live in the HTTP transport. The token is fetched
// from /auth/oauth2/v2/token in a documented form (a JSON grant with HTTP
// Basic), retried on transient failures, and cached until shortly before it
// expires, computed from created_at + expires_in: OneLogin hands out the same
// token until it expires, so an early refresh that gets it back keeps it to
// its end. A refused credential (any 4xx, or the 500 OneLogin documents for
// a deleted owner) is a *TokenError matching ErrCredentials, not retried; the
// secret can be re-read on every fetch (Config.ClientSecretFunc), and
// TokenStatus reports without a request whether a token is held.
//
// A 401 on a resource call refreshes the token and re-sends the request
// once, except on verify: an OTP is sent at most once per token, and a read
// call with the same token tells a stale token from a refused OTP (never the
// message wording). Only a verify of status type "success" is success;
// "pending" is a retryable *VerifyError.
//
// A Pacer shared by every goroutine using the client spends the account-wide
// budget that the rate-limit headers report, so callers slow down before
// OneLogin answers 429 rather than after. Users API v2 calls wait their turn
// in the pacer at their caller's priority (endpoint "users"), but OneLogin
// neither charges them to the v1 budget nor sends rate-limit headers on them
// (nor on a 401): such answers leave the pacer's view of the budget as it
// was. Users API pages are continued by the opaque After-Cursor alone
// (OneLogin refuses a cursor with limit or page), and a cursor that repeats
// ends the loop.
//
// FindUser names a person by every identifier given (email, username,
// external id): each is looked up by an exact match, and those that find
// someone must find the same single user. "*" and "!", OneLogin's wildcard
// and negation, are never sent: a value holding one is refused.
//
// MayHaveTakenEffect says whether a failed write may have been applied:
// after the request was sent, any 5xx but 503 (OneLogin's edge answers 502
// for calls it applied), a time-out or a lost reply may have; a 503, a 429
// or a refused connection has not.
//
// Decoding is deliberately tolerant: OneLogin's documentation, its OpenAPI
// document and its live API disagree on several shapes (the auth_factor path,
// data as an object or an array, device ids as numbers or strings, a device
// listed twice, the un-enveloped MFA token reply answered 200 or 201 and its
// "resuable" misspelling, status messages as strings or objects). Every
// documented form is accepted.
package onelogin
