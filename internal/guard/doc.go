// Package guard is the blast-radius guard: it counts offboards and removes
// per source over a sliding window and holds those past the limit until an
// operator releases or discards them.
//
// # The decision
//
// The job path asks Admit once per delivery of an offboard or a remove,
// after it has claimed the job id in the ledger (so duplicates, reused ids
// and cancelled jobs never reach the guard) and before the handler calls
// OneLogin. Admit answers:
//
//   - Run: counted in its source's window (or counted already: a
//     redelivery of an admitted job is not counted twice).
//   - Hold: the source's window is full, or the source is tripped (it has
//     held jobs that no operator has decided on yet: once a source trips,
//     every further offboard and remove of it is held, so a misfiring HR
//     sync cannot go on removing the limit's worth every window). Admit has
//     stored the job (its subject, body, the headers that carry its time)
//     before it answers; the job path marks the ledger record held and
//     acks the message. No result is published.
//   - Released: an operator released the held job; it runs whatever the
//     count, and is not counted.
//   - Discarded: an operator discarded the held job; the job path ends it
//     cancelled with code discarded, through its normal settlement (one
//     result per job id, ledger finished).
//
// A limit of 0 turns counting off (every job runs); held jobs stay held
// until an operator decides, whatever the limit.
//
// # Storage
//
// Everything lives in the KV bucket MFA_GUARD (file storage, no TTL, the
// topology's replicas), shared by every replica and surviving restarts of
// the worker and of NATS:
//
//	window.<source token>             the source's window: the admitted jobs of the
//	                                  last WORKER_GUARD_WINDOW (time and a hash of the
//	                                  job id) and the time it tripped, if it did
//	held.<source token>.<job token>   one held job: state held, released, discarded
//	                                  or cancelled, the job's subject, body and
//	                                  headers, who decided and when
//
// A source token is the source in base64url without padding, "_" for a
// job without source; a job token is job.IDToken (as in the ledger's
// job.<token>), so `nats kv get MFA_GUARD held.<source token>.<job token>`
// finds a held job.
//
// Every change is a compare-and-set on the key's revision, so two replicas
// deciding at once never admit more than the limit, and never both hold
// and admit the same job. A held record is created before the window is
// marked tripped; a worker killed in between leaves the job's message
// unacknowledged, and its redelivery finds the record and trips the window.
//
// # Release and discard
//
// Release and Discard (worker hold release|discard) change the record's
// state by compare-and-set first, then publish the stored body to
// mfa.jobs.<type> with the stored headers and a new Nats-Msg-Id,
// <job id>:guard:<state>:<record revision>, then mark the record
// published. A command killed before the publish leaves the record
// decided but unpublished; running the command again publishes it (the
// same message id, so never twice). When a source has no held job left,
// its trip is cleared. Each command leaves an audit record on
// mfa.audit.hold.release or mfa.audit.hold.discard.
//
// A released job's message meets the ledger like any job: if the original
// message was also redelivered (a worker killed between the hold and the
// ack), one of the two runs and the other is answered from the ledger. A
// job held for longer than the ledger's TTL runs from a fresh ledger record
// when released: the guard's record, not the ledger, is the hold's record of
// last resort, and it carries the job's time (Mfa-Job-Time).
//
// # How the job path uses it
//
// After the claim of an offboard or a remove (claimRun), after its
// not_after check (an expired job is not held) and before the handler:
//
//	d, err := g.Admit(ctx, guard.Job{ID: j.ID, Type: j.Type, Source: j.Source,
//		UserID: j.UserID, CorrelationID: j.CorrelationID, Body: msg.Data(),
//		Header: msg.Headers(), Time: jobTime}, time.Now())
//
// and by the answer:
//
//   - err (with Undecided): retry later (nak); never run unguarded.
//   - Hold: replace the claimed ledger record, at its revision, by one in
//     state ledger.Held keeping Hash, JobTime, Replay, Type, UserID,
//     CorrelationID and Source; tell the leaver registry; ack the message.
//     No result, no mfa_jobs_total.
//   - Discarded: settle as cancelled with code job.CodeDiscarded.
//   - Run, Released: go on.
//
// The claim treats a ledger.Held record like a scheduled one (take it and
// run); a cancel treats it like a scheduled one too (write the cancelled
// result into the ledger, publish it) and then calls Ended, so that the job
// is no longer listed as held. The job query answers "held" for a
// ledger.Held record, and, when the ledger has forgotten the id, for a
// record Lookup finds in state held. Every replica runs
// RunHeldGauge(ctx, m.SetHeld, log) for mfa_jobs_held; every cancelled
// outcome is counted with m.JobCancelled(type, code, source).
package guard
