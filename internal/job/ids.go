package job

import (
	"encoding/base64"
	"strconv"
)

// Subjects and headers of the wire contract, and the message-id scheme:
// every Nats-Msg-Id the worker and its tools publish is made here.

// Subject prefixes: jobs on mfa.jobs.<type>, results on
// mfa.results.<type>.<outcome>, dead letters on mfa.dlq.<type>.
const (
	SubjectPrefix       = "mfa.jobs."
	ResultSubjectPrefix = "mfa.results."
	DLQSubjectPrefix    = "mfa.dlq."
)

// Headers of DLQ copies and replays.
const (
	HeaderReason          = "Mfa-Reason"
	HeaderErrorCode       = "Mfa-Error-Code"
	HeaderDeliveries      = "Mfa-Deliveries"
	HeaderOriginalSubject = "Mfa-Original-Subject"
	HeaderJobID           = "Mfa-Job-Id"
	// HeaderUserSelector names the kind of user selector (email, username,
	// external_id) of a job that named its person by one; never its value.
	HeaderUserSelector = "Mfa-User-Selector"
	// HeaderBodyTruncated ("true") marks a DLQ copy whose body was cut to
	// the DLQ body limit; HeaderBodySHA256 is then the SHA-256 (hex) of the
	// whole body, secrets blanked.
	HeaderBodyTruncated = "Mfa-Body-Truncated"
	HeaderBodySHA256    = "Mfa-Body-Sha256"
	// HeaderBodyRedacted ("true") marks a DLQ copy whose body was not valid
	// JSON and named a secret: it holds the original's size and SHA-256
	// instead (HeaderBodySHA256 repeats the hash).
	HeaderBodyRedacted = "Mfa-Body-Redacted"
	// HeaderReplay marks a job re-published from the DLQ by `worker dlq
	// replay`: its value is the dead letter's MFA_DLQ stream sequence, in
	// decimal digits. The job runs again only when the ledger holds an
	// unused replay grant for (job id, that sequence).
	HeaderReplay = "Mfa-Replay"
	// HeaderJobTime carries the job's time (RFC 3339, see Job.Time) on
	// schedules and DLQ copies, and on replays taken from them, so that a
	// job without not_before or requested_at keeps the time of its first
	// message on every path.
	HeaderJobTime = "Mfa-Job-Time"
)

// EventSubjectPrefix + source is where `worker ingest` stores an accepted
// HR event (stream HR_EVENTS).
const EventSubjectPrefix = "hr.events."

// Re-verification of leavers: where drift events go, and the source of the
// offboards it publishes.
const (
	AssuranceDriftSubject = "mfa.assurance.drift"
	AssuranceSource       = "mfa.assurance"
)

// HeaderScheduler is set by the NATS server on a message that a message
// schedule produced, naming the schedule.
const HeaderScheduler = "Nats-Scheduler"

// The per-person history index: its stream and subjects
// (mfa.history.<person key>). Spelled here rather than in topology because
// package history, which provisions it, is imported by topology.
const (
	HistoryStream        = "MFA_HISTORY"
	HistorySubjectPrefix = "mfa.history."
)

// The audit stream and the blast-radius guard's bucket and header, here for
// the same reason (topology imports packages audit and guard). HeaderGuard
// marks a job re-published by a hold's release or discard.
const (
	AuditStream        = "MFA_AUDIT"
	AuditSubjectPrefix = "mfa.audit."
	GuardBucket        = "MFA_GUARD"
	HeaderGuard        = "Mfa-Guard"
)

// The worker's query service (NATS micro): the group and its endpoints'
// subjects.
const (
	QueryGroup   = "mfa.query"
	QueryJob     = QueryGroup + "." + QueryEndpointJob
	QueryHistory = QueryGroup + "." + QueryEndpointHistory
	// QueryEndpointJob answers what is known of a job id; QueryEndpointHistory
	// a person's results.
	QueryEndpointJob     = "job"
	QueryEndpointHistory = "history"
	// QueryEndpointLeavers lists the leaver registry.
	QueryEndpointLeavers = "leavers"
)

// ScheduledSubjectPrefix is where jobs wait until their not_before:
// mfa.scheduled.<type>.<ledger key token of the id>.
const ScheduledSubjectPrefix = "mfa.scheduled."

// IDToken encodes a job id as one NATS subject token (base64url, no
// padding): job ids may hold any printable ASCII, subject tokens may not.
// The ledger key of a job is job.<IDToken(id)>.
func IDToken(jobID string) string { return base64.RawURLEncoding.EncodeToString([]byte(jobID)) }

// ScheduledSubject is the subject of the schedule that parks job id of
// type t until its not_before.
func ScheduledSubject(t Type, jobID string) string {
	return ScheduledSubjectPrefix + string(t) + "." + IDToken(jobID)
}

// ScheduleMsgID is the message id of the schedule that parks a job; a
// granted replay's schedule (replay, its tag, not empty) gets its own, so
// that the stream does not drop it as a duplicate of the first schedule.
func ScheduleMsgID(jobID, replay string) string {
	if replay != "" {
		return jobID + ":schedule:replay:" + replay
	}
	return jobID + ":schedule"
}

// ResultMsgID is the message id of a job's result. A job id has exactly one
// result, <id>:result; the result of a granted replay of the dead letter at
// MFA_DLQ sequence replaySeq (> 0) is <id>:result:replay:<replaySeq>.
//
// The scheme is injective: a plain result id ends in ":result", a replay's
// in a digit, and a replay's sequence holds no ':', so the last
// ":result:replay:" of an id ending in digits splits it back into exactly
// one (job id, sequence) pair, whatever the job id holds.
func ResultMsgID(jobID string, replaySeq uint64) string {
	id := jobID + ":result"
	if replaySeq > 0 {
		id += ":replay:" + strconv.FormatUint(replaySeq, 10)
	}
	return id
}

// ParseReplay reads an Mfa-Replay header value: a DLQ stream sequence in
// canonical decimal (digits only, no sign, no leading zero, at least 1). ok
// is false for anything else, which the worker treats as no replay at all.
func ParseReplay(v string) (seq uint64, ok bool) {
	if v == "" || len(v) > 20 || v[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// DLQMsgID is the message id of the DLQ copy of the job message at MFA_JOBS
// stream sequence seq: every job message has at most one DLQ copy.
func DLQMsgID(seq uint64) string {
	return "dlq:" + strconv.FormatUint(seq, 10)
}

// ReplayTag is the Mfa-Replay value of a replay of the dead letter at DLQ
// sequence dlqSeq.
func ReplayTag(dlqSeq uint64) string { return strconv.FormatUint(dlqSeq, 10) }

// ReplayMsgID is the Nats-Msg-Id of a dead letter re-published to its job
// subject: <id>:replay:<DLQ sequence>, new for every dead letter.
func ReplayMsgID(jobID string, dlqSeq uint64) string {
	return jobID + ":replay:" + strconv.FormatUint(dlqSeq, 10)
}
