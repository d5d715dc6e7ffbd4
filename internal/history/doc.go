// Package history keeps a per-person index of job results, so that "what
// happened to this person's MFA, and when?" is answered without reading the
// result stream.
//
// Every result is appended, without its data (which can hold state tokens or
// sealed tokens), to the stream MFA_HISTORY. Entries are of two kinds, kept
// for different times:
//
//   - Kept entries (see Kept): the results of offboard and remove jobs that
//     were neither rejected nor expired (succeeded, noop, failed, cancelled),
//     and succeeded enrolls and activates. Each is stored on a subject of its
//     own, mfa.history.kept.<user_id>.<first 32 hex digits of the sha256 of
//     the job id>, so the per-subject limit never drops it: it stays for the
//     stream's whole max age (MaxAge, 400 days by default, since auditors ask
//     months later), whatever is published for that person after it.
//   - Routine entries: everything else (rejected and expired jobs of every
//     type, verify, generate_token, cancel, noop or failed enrolls and
//     activates). They share the person's subject mfa.history.<user_id>,
//     which keeps the newest MaxPerUser (1,000 by default) within MaxAge.
//
// The split follows cost: a kept entry needs OneLogin calls (bounded by the
// budget, and offboards and removes by the blast-radius guard) or the
// authority to cancel, while a rejected or expired job costs its publisher
// nothing, so a flood of them only ever pushes out older routine entries.
//
// A query reads one person's routine subject and kept subjects through two
// consumers, one filtered on each, read at once; JetStream finds them
// through its per-subject index, so the cost does not grow with the number
// of results in the system, only with the person's own entries (at most
// MaxPerUser routine ones and their kept ones), and the query holds at most
// a few times the limit in memory. The answer is
// newest first and at most limit long: the newest entries of both kinds,
// except that routine entries never take more than half of the places
// (rounded down) from kept ones, so a burst of rejected jobs cannot hide an
// offboard, however recent the burst.
//
// A result whose user could not be resolved (user_id 0, for example
// user_not_found) but whose job named the person by email, username or
// external id is kept on mfa.history.unresolved.<kind>.<sha256 of the value>
// (routine) or mfa.history.kept.unresolved.<kind>.<sha256 of the value>.<job
// hash> (kept), so a lookup by that selector still finds it; the value
// itself never appears in a subject.
//
// Upgrading from the layout where every entry of a person shared one
// subject needs no change to the stream or to permissions (the subjects are
// still mfa.history.>). At each start the index copies every kept entry
// found on a routine subject to a kept subject of its own
// (Store.UpgradeLayout), reading from where the last start stopped (the
// whole stream the first time, as recorded by a marker on
// mfa.history.layout), so entries that replicas of the earlier version
// index during a rolling upgrade are copied too. Until copied, a query still
// ranks such an entry as kept; afterwards it lists it once.
//
// The result stream and its subjects mfa.results.<type>.<outcome> are not
// changed.
package history
