// Package jobs is the worker's pipeline: it pulls jobs from the MFA_JOBS
// stream, validates them against schemas/job.v1.json, runs them against
// OneLogin exactly once per job id, and publishes one result per job.
//
// The flow of one message:
//
//  1. Parse and validate (no I/O). An invalid job is rejected: a result, a
//     copy in MFA_DLQ, and the message terminated. OneLogin is never called.
//  2. Wait for earlier jobs of the same user in this replica (per-user order),
//     then take the user's lock in the MFA_LOCKS bucket (per-user exclusion
//     across replicas).
//  3. Claim the job id in the MFA_LEDGER bucket. A finished record means a
//     duplicate: the stored result is published again and the message acked.
//     A running record whose owner's lease lapsed is taken over.
//  4. Run the handler. Handlers read before they write (enroll looks for the
//     device first, remove and offboard treat already-gone as done), so a
//     redelivery after a crash does not repeat an effect. Calls that cannot
//     be read back (activate, verify, generate_token) are at most once.
//  5. One function, settle, maps the handler's error to the outcome and the
//     message action: Ack, NakWithDelay (a computed delay: the consumer's
//     BackOff does not apply to naks) or TermWithReason after a DLQ copy.
//     The ledger is written before the result is published, and the
//     message is acknowledged only after both.
//
// Quick retries happen inside a delivery with exponential backoff and
// jitter; waiting for the rate-limit window is not a retry. InProgress is
// sent while a job waits, so its ack timer never runs out.
package jobs
