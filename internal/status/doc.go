// Package status serves the worker's read-only status page: the two lanes
// with their pending and in-flight jobs, OneLogin's remaining budget and when
// it resets, the state of the worker's OneLogin credentials, recent results,
// dead letters by type and reason, jobs scheduled (not_before ahead), and
// a person lookup that shows one person's history.
//
// The page is rendered on the server with html/template, uses no script, and
// reloads itself with a meta refresh. Its numbers come from the same
// prometheus.Gatherer that serves /metrics, so the two agree by
// construction, and from the result and dead-letter streams. It never shows
// a secret, OTP, token or phone number, and shows user ids only for the
// person looked up: recent results list job ids, types and outcomes.
//
// Access can be limited with HTTP basic auth whose credentials come from a
// file (LoadCredentials); they are compared in constant time.
package status
