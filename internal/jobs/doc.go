// Package jobs is the execution path of the worker: it pulls jobs from the
// MFA_JOBS stream, runs them against OneLogin exactly once per job id, and
// publishes one result per job. The job model (types, codes, parsing,
// results, message ids) is package job; the stream, bucket and consumer
// names are package topology.
//
// One delivery is settle(execute(...)) (executor.process): execute takes
// the message as far as it goes and returns one ending, saying what
// happened (the job ran, with its outcome or error; it is a duplicate
// answered from the ledger; its id was reused for another body; it was
// parked as a schedule; it was given back without starting); settle asks
// the policy for the message's fate and carries it out. Nothing before
// settle acks, naks or terminates a message.
//
// The flow of one message, file by file, each calling only the files
// after it (budget.go, errors.go and config.go serve them all):
//
//   - runner.go: two lanes, a per-user queue, so that one user's jobs run
//     in arrival order within a replica, and a priority semaphore of
//     execution slots (urgent first) that a job takes only once it can run,
//     after its turn in the user's queue and the user's lock: jobs waiting
//     for a busy user hold no slot. A replica holds at most MaxPerUser
//     messages of one user (more are given back with a delay, never on a
//     job's last two deliveries) and twice its concurrency per lane.
//     task.go: the delivery and its heartbeat, the only other code that
//     touches the message (InProgress every AckWait/3 from the moment it
//     is fetched, renewing the user lock and the ledger lease).
//   - credentials.go: while OneLogin refuses the worker's own credentials
//     no job is fetched (the lanes' pulls are drained, buffered messages
//     given back); a token is asked for with backoff, the secret re-read
//     each time, and fetching resumes once one is obtained. A job that
//     meets the refusal is nak'ed, never failed.
//   - executor.go: process and execute. Parse (no I/O; an invalid job is
//     rejected, OneLogin is never called); a job whose not_before is ahead
//     is parked as a JetStream message schedule (timing.go); take the
//     user's lock in MFA_LOCKS (a job whose result the ledger holds leaves
//     its lock in place, naming it, for the user's next job to take over:
//     one write less per job), claim the job id in MFA_LEDGER (claim.go),
//     then make the handler's attempts. Transient failures are
//     retried in the delivery with exponential backoff and jitter;
//     rate-limit answers are waited out and are not retries. Types whose
//     call cannot simply be repeated (activate, verify; see
//     job.Type.AtMostOnce) are at most once: the intent is recorded in the
//     ledger before each call, and a call whose fate is unknown is not
//     repeated: an activate then fails with ambiguous_effect; a verify of a
//     device is read back from the device's active flag (active: done;
//     inactive: sent again in a later delivery); a verify of device 0
//     fails with ambiguous_effect. A pending verify is polled once per
//     delivery, never quickly. Every failed OneLogin call is logged with
//     the job id and OneLogin's X-Request-Id.
//   - timing.go: schedules, cancel jobs (a scheduled target is ended and
//     its schedule removed; an unknown one gets a tombstone in the ledger,
//     which ends it cancelled when it arrives), and the resurrection guard:
//     after the claim, an enroll, activate, verify or generate_token whose
//     job time is earlier than the user's offboard in MFA_PEOPLE ends
//     cancelled without a call; a successful or noop offboard records its
//     job time there before its result.
//   - blast.go: the blast-radius guard (package guard). After the claim,
//     the resurrection guard and the not_after check, an offboard or a
//     remove asks guard.Admit: run (counted, or released by an operator);
//     held (the ledger record becomes ledger.Held, keeping hash, job time,
//     replay, type, user, correlation id and source; the leaver registry
//     is told; the message is acked without a result); discarded by an
//     operator (cancelled, code discarded); or undecided (nak: a guarded
//     job never runs unguarded). A released or discarded job comes back as
//     a new message whose claim takes the held record like a fired
//     schedule; a cancel ends a held job like a scheduled one, then
//     guard.Ended. The leaver registry also hears when an offboard is
//     parked as a schedule and when it starts running; its failures are
//     logged, never the job's.
//   - resolve.go: a person named by email, username or external id is
//     resolved to one OneLogin user id before the lock.
//   - handlers.go: one attempt per call, reading before writing (enroll
//     looks for the device first, remove and offboard treat already-gone as
//     done; an offboard lists the factors again after removing them:
//     verified_at, or factors_remain). Handlers return typed errors
//     (errors.go, where every typed error of the package is) or the
//     OneLogin client's error as it came; they hold no retry loop.
//   - decide.go: the policy, whose methods are the only place that chooses
//     a message's fate, all pure: decide (a job's outcome and fate from how
//     its last attempt ended: Ack, NakWithDelay, a computed delay since the
//     consumer's BackOff does not apply to naks, or Term after a DLQ copy),
//     finished (a duplicate or the same message again), reused, parked,
//     notStarted, and the settlement's own failures (the result not
//     recorded, the DLQ copy or the result not published, the claim taken
//     over). classify is the one reading of an error, shared by the quick
//     retries and decide.
//   - settle.go: carries the fate out, and is the only file that acks,
//     naks or terminates (carry). The ledger is written first, then the
//     DLQ copy, then the result; the message is settled only after all of
//     them.
//   - claim.go: the ledger's side, under all of the above. read is the
//     one reading of what the ledger's record of a job id says to a
//     message (a cancel's tombstone, another body, scheduled, held, finished, a
//     granted replay, a lapsed or a live claim); claim takes the id (a finished record means a
//     duplicate, answered from the ledger; a running record whose owner's
//     lease lapsed is taken over); recordRejection writes an invalid job's
//     rejection as its id's one outcome; take and updateClaim are the only
//     writes of a claim.
//
// Time budgets are composed in one place, budget.go. With the defaults
// (AckWait 30s, Lease 30s, RetryWithin 15s, OneLogin client Timeout 30s,
// token fetch 20s) one delivery holds its message at most:
//
//	lock wait      Lease + AckWait                          60s, then nak
//	claim wait     Lease + AckWait                          60s, then nak
//	attempts       RetryWithin for starting retries         15s
//	               + the last attempt: per OneLogin call a
//	               token fetch (20s) and the request, re-sent
//	               once after a 401 (2 x 30s): 80s a call,
//	               3 calls for enroll, 1 + devices for offboard
//	settlement     ledger write, DLQ and result publishes
//	               (5s of retries each), ack: one 10s limit  10s
//	lock release (unless the job finished)                  10s
//
// that is 155s plus 80s per OneLogin call of the last attempt, not counting
// waits for the OneLogin rate-limit window: a call waits for the window's
// reset up to five times (the pacer holds it; see package onelogin), which
// only the worker's shutdown cuts short. The heartbeat keeps the message,
// the lock and the claim alive all that time. Shutdown lets running jobs
// finish for ShutdownGrace (20s), then cancels them: a cancelled job naks
// itself with a 1s delay.
package jobs
