// Package history keeps a per-person index of job results, so that "what
// happened to this person's MFA, and when?" is answered without reading the
// result stream.
//
// Every result is appended, without its data (which can hold state tokens or
// sealed tokens), to the stream MFA_HISTORY on the subject
// mfa.history.<user_id>. The stream keeps at most MaxPerUser entries per
// person and drops entries older than MaxAge (400 days by default, since
// auditors ask months later). A query reads only the subject of one person,
// which JetStream finds through its per-subject index, so its cost does not
// grow with the number of results in the system.
//
// A result whose user could not be resolved (user_id 0, for example
// user_not_found) but whose job named the person by email, username or
// external id is kept on mfa.history.unresolved.<kind>.<sha256 of the value>,
// so a lookup by that selector still finds it; the value itself never appears
// in a subject.
//
// The result stream and its subjects mfa.results.<type>.<outcome> are not
// changed.
package history
