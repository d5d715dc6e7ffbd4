package job

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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
	// HeaderReplay marks a job re-published from the DLQ; its value tags
	// the replay so that the job runs again once, despite the ledger.
	HeaderReplay = "Mfa-Replay"
	// HeaderJobTime carries the job's time (RFC 3339, see Job.Time) on
	// schedules and DLQ copies, and on replays taken from them, so that a
	// job without not_before or requested_at keeps the time of its first
	// message on every path.
	HeaderJobTime = "Mfa-Job-Time"
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

// ScheduleMsgID is the message id of the schedule that parks a job.
func ScheduleMsgID(jobID string) string { return jobID + ":schedule" }

// ResultMsgID is the message id of a job's result: <id>:result, so that a
// result published twice is stored once. The result of a replayed dead
// letter is <id>:result:replay:<tag>, so it is not swallowed as a duplicate
// of the first result.
func ResultMsgID(jobID, replay string) string {
	id := jobID + ":result"
	if replay != "" {
		id += ":replay:" + replay
	}
	return id
}

// RejectionMsgID is the message id of a rejection's result:
// <id>:result:rejected:<hash of the body>, so that a rejection is not
// swallowed as a duplicate of the result of the job whose id it reused.
func RejectionMsgID(jobID string, body []byte) string {
	sum := sha256.Sum256(body)
	return ResultMsgID(jobID, "") + ":rejected:" + hex.EncodeToString(sum[:8])
}

// DLQMsgID is the message id of the DLQ copy of the job message at stream
// sequence seq (replay: its Mfa-Replay tag, if any).
func DLQMsgID(seq uint64, replay string) string {
	return "dlq:" + strconv.FormatUint(seq, 10) + ":" + replay
}

// ReplayTag is the Mfa-Replay value of a replay of the dead letter at DLQ
// sequence dlqSeq.
func ReplayTag(dlqSeq uint64) string { return strconv.FormatUint(dlqSeq, 10) }

// ReplayMsgID is the message id of a dead letter re-published to its job
// subject: <id>:replay:<tag> (an unreadable id is "unreadable").
func ReplayMsgID(jobID, tag string) string {
	if jobID == "" {
		jobID = "unreadable"
	}
	return jobID + ":replay:" + tag
}
