// Package simulator is a stateful stand-in for OneLogin's MFA API v1 and
// its Users API v2 lookup, for tests (used like httptest: wrap a *Server in
// httptest.NewServer), for `worker simulate` and for `worker dev`.
//
// It answers as OneLogin does, quirks included: the token endpoint accepting
// only the documented request forms, handing out the same token until it
// expires with expires_in the full lifetime and created_at; the seven MFA
// endpoints with OneLogin's status codes and bodies (400 "Factor could not
// be found" for a missing device, 404 "User for id N was not found", 400 for
// an expired state token, 200 "pending" for a push not yet approved, the
// un-enveloped MFA token reply answered 201, a push device listed twice,
// needs_trigger true then false, alphanumeric SMS codes, and optionally a
// factor the v1 API does not list); GET /api/2/users as a bare array paged
// at 50 by limit and page or by an opaque base64 After-Cursor, never both
// (400 in the v2 error shape), with "*" wildcards and "!" negation honoured,
// not charged to the v1 budget and without rate-limit headers; the
// account-wide v1 rate limit with its three headers (never on a 401) and a
// 429 when spent; an X-Request-Id on every answer. Each quirk is a mode in Config whose zero
// value is the most realistic reading.
//
// State is kept per user: enrolled devices with ids, OTPs a test can read
// back (and a dev-only OnOTP hook), expiring state tokens, temporary MFA
// tokens, a user directory generated for an id range or loaded from a JSON
// file. Config.Now injects a clock.
//
// Faults can be changed while it runs: latency, a fraction of 5xx answers,
// dropped connections, replies lost after the effect was applied, 502s
// after the effect was applied, removals answered without effect, 429 bursts
// and outage windows. Every state-changing call is written to an effect log,
// and every verify that reached the endpoint to VerifyAttempts, so that tests
// count side effects and OTP sends exactly.
package simulator
