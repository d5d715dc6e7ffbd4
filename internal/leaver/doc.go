// Package leaver keeps the leaver registry: one record per person who is
// leaving, in the KV bucket MFA_LEAVERS, from the moment an offboard (from
// any source) or an HR leaver event is accepted until the person's factors
// are removed and verified gone, or someone closes the matter with a reason.
//
// # States
//
// A record is scheduled (accepted, waiting to run), held (stopped by the
// blast-radius guard), running, offboarded (factors removed), verified (an
// offboard read the factors again and found none: data.verified_at), open
// (with a reason: user_not_found, identity_ambiguous, factors_remain,
// failed, rejected, expired, cancelled, discarded, rule_error, drift) or
// closed (by `worker leavers close`, with a reason and who closed it). Since
// says when the record entered its state. An open record stays open until a
// later offboard of the person succeeds or an operator closes it.
//
// # Keys
//
// A KV key must be a sequence of NATS subject tokens, and no email reaches
// a subject, so a record is keyed by what is known of the person:
//
//	user.<user_id>                   the OneLogin user id, once known
//	sel.<kind>.<sha256 hex>          a person named only by email, username or
//	                                 external_id (kind), the hash of the value
//	                                 (an email lower-cased)
//	event.<sha256 hex>               an HR event that could not be mapped to
//	                                 anyone (a dead letter on mfa.dlq.ingest),
//	                                 the hash of "<source> <event id>"
//	job.<sha256 hex>                 an offboard whose person is unreadable
//	                                 (rejected), the hash of the job id
//
// so `nats kv get MFA_LEAVERS user.12345` finds a person's record, and `worker
// leavers --email ...` computes the other forms. When a result or a step
// names a person both by user id and as HR knows them, the sel.* records of
// each identifier are merged into the user.* record and replaced by
// pointers (MovedTo), so a later step that knows only the email lands in
// the user's record. Keys alias.<sha256 hex> map an HR
// event (source and id) to the record it was accepted into, so that a dead
// letter of that event opens that record.
//
// # Feeding the registry
//
// The registry stays out of the job path's hot loop. An indexer reads two
// durable consumers, shared by every replica: mfa-leavers on MFA_RESULTS
// (mfa.results.offboard.>) and mfa-leavers-dlq on MFA_DLQ (mfa.dlq.ingest).
// The door and the job path tell it what only they know through Accepted,
// Scheduled, Held and Running (or NoteJob, from a job's body), each one KV
// update. The job path's notes carry the job's time (the
// effective time); a result whose record lacks it reads it from
// MFA_PEOPLE (JobTimes). Every update is a
// compare-and-set on the record's revision, retried on conflict, and a
// record remembers the last result and dead-letter stream sequences it
// applied, so a redelivered or older message changes nothing.
//
// # Reading it
//
// A View watches the bucket and keeps a compact summary of every record in
// memory: mfa.query.leavers, the gauges mfa_leavers{state} and
// mfa_leavers_oldest_open_seconds, and re-verification read it, never the
// bucket record by record. `worker leavers` and `worker evidence` read the
// bucket's stream once, the last value of each key.
package leaver
