// Package simulator is a stateful stand-in for OneLogin's MFA API v1, for
// tests (used like httptest: wrap a *Server in httptest.NewServer), for
// `worker simulate` and for `worker dev`.
//
// It answers as OneLogin does, quirks included: the token endpoint with
// client-credentials checking and expiring tokens; the seven MFA endpoints
// with OneLogin's status codes and bodies (400 "Factor could not be found"
// for a missing device, 404 "User for id N was not found", the un-enveloped
// MFA token reply); the account-wide rate limit with its three headers and a
// 429 when spent. State is kept per user: enrolled devices with ids, OTPs a
// test can read back, expiring state tokens, temporary MFA tokens.
//
// Faults can be changed while it runs: latency, a fraction of 5xx answers,
// dropped connections, replies lost after the effect was applied, 429 bursts
// and outage windows. Every state-changing call is written to an effect log
// so that tests count side effects exactly.
package simulator
