// Package onelogin is a client for OneLogin's API v1 multi-factor
// authentication endpoints.
//
// The client is shaped like go-github: one Client with NewRequest and Do,
// one method per endpoint returning the decoded value, a *Response carrying
// the parsed X-RateLimit-* headers, and an error. Non-2xx answers become a
// typed *ErrorResponse (HTTP status plus OneLogin's status object) or a
// *RateLimitError (with the moment the window resets). Classify is the one
// place that decides whether an error is transient or permanent.
//
// OAuth2 client credentials live in the HTTP transport: the token is fetched
// from /auth/oauth2/v2/token with HTTP Basic, retried on transient failures,
// cached until shortly before expiry, and refreshed once when a resource call
// answers 401. A Pacer shared by every goroutine using the client spends the
// account-wide budget that the rate-limit headers report, so callers slow down
// before OneLogin answers 429 rather than after.
//
// Decoding is deliberately tolerant: OneLogin's documentation, its OpenAPI
// document and its live API disagree on several shapes (the auth_factor path,
// data as an object or an array, device ids as numbers or strings, the
// un-enveloped MFA token reply and its "resuable" misspelling, status messages
// as strings or objects). Every documented form is accepted.
package onelogin
