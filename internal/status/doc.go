// Package status serves the worker's read-only status page: the two lanes
// with their pending and in-flight jobs, OneLogin's remaining budget and when
// it resets, the state of the worker's OneLogin credentials, dead letters by
// type and reason, jobs scheduled (not_before ahead), the work in progress
// (open leavers first, then jobs waiting for a retry with their attempts,
// last error code and next retry, then the jobs the guard holds), recent
// results with their person, filtered by type and outcome, and a person
// search.
//
// Jobs waiting for a retry come from the ledger: the runner notes attempts,
// error code and next retry in a job's record when it gives a delivery
// back, and the page reads only the records written in the last
// RetryWindow (at most 20,000), so its cost follows the recent job rate.
//
// The person search takes an email, username, external id or OneLogin user
// id. An identifier is resolved as jobs resolve it (ops.Resolver: exact
// matches that must agree), at the query priority: while OneLogin's budget
// is kept for jobs the search answers busy at once. A person's page shows
// their leaver record (package leaver: state, the scheduled offboard and
// when it is due, the devices an offboard removed, drift), the jobs the guard
// holds for them, and their history.
//
// The page never acts: each row that needs an action shows the exact
// command (worker hold release --job ..., worker leavers close --id ...).
// Long ids are cut in the table and given in full in the cell's title, so
// the page fits 1,280 px.
//
// The page is rendered on the server with html/template, uses no script
// (filters and searches are plain GET forms), and reloads itself with a
// meta refresh. Its numbers come from the same prometheus.Gatherer that
// serves /metrics, so the two agree by construction, and from the result and
// dead-letter streams. It never shows a secret, OTP, token or phone number.
//
// Access can be limited with HTTP basic auth whose credentials come from a
// file (LoadCredentials); they are compared in constant time.
package status
