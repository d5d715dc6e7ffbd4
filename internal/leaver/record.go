package leaver

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"time"
)

// State is where a leaver stands.
type State string

// The states of a record.
const (
	Scheduled  State = "scheduled"
	Held       State = "held"
	Running    State = "running"
	Offboarded State = "offboarded"
	Verified   State = "verified"
	Open       State = "open"
	Closed     State = "closed"
)

// States lists every state, in the order a leaver normally passes them.
var States = []State{Scheduled, Held, Running, Offboarded, Verified, Open, Closed}

// Valid reports whether s is one of States.
func (s State) Valid() bool { return slices.Contains(States, s) }

// Reasons a record is open. An offboard's error code that is not listed
// here opens the record with ReasonFailed and keeps the code in ErrorCode.
const (
	ReasonUserNotFound  = "user_not_found"
	ReasonAmbiguous     = "identity_ambiguous"
	ReasonFactorsRemain = "factors_remain"
	ReasonFailed        = "failed"
	ReasonRejected      = "rejected"
	ReasonExpired       = "expired"
	ReasonCancelled     = "cancelled"
	ReasonDiscarded     = "discarded"
	ReasonRuleError     = "rule_error"
	ReasonDrift         = "drift"
)

// Selector names a person as HR knows them (a job's "user").
type Selector struct {
	Email      string `json:"email,omitempty"`
	Username   string `json:"username,omitempty"`
	ExternalID string `json:"external_id,omitempty"`
}

// IsZero reports whether no field is set.
func (s Selector) IsZero() bool { return s == Selector{} }

// primary returns the identifier a sel.* key is made from: external_id,
// else username, else email (lower-cased), the most stable first.
func (s Selector) primary() (kind, value string, ok bool) {
	switch {
	case strings.TrimSpace(s.ExternalID) != "":
		return "external_id", strings.TrimSpace(s.ExternalID), true
	case strings.TrimSpace(s.Username) != "":
		return "username", strings.TrimSpace(s.Username), true
	case strings.TrimSpace(s.Email) != "":
		return "email", strings.ToLower(strings.TrimSpace(s.Email)), true
	}
	return "", "", false
}

func hash(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:])
}

// UserKey is the key of the record of OneLogin user id.
func UserKey(id int64) string { return "user." + strconv.FormatInt(id, 10) }

// SelectorKey is the key of the record of a person named only by sel; ok is
// false when sel names nobody.
func SelectorKey(sel Selector) (string, bool) {
	kind, v, ok := sel.primary()
	if !ok {
		return "", false
	}
	return "sel." + kind + "." + hash(v), true
}

// selectorKeys returns the keys a person named by sel may have a record
// under: the key of sel itself, then that of each identifier alone (an
// earlier job may have named the person by one of them only).
func selectorKeys(sel Selector) []string {
	var out []string
	for _, s := range []Selector{sel, {ExternalID: sel.ExternalID}, {Username: sel.Username}, {Email: sel.Email}} {
		if k, ok := SelectorKey(s); ok && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// EventKey is the key of the record of an HR event that names nobody the
// registry can tell.
func EventKey(source, eventID string) string { return "event." + hash(source, eventID) }

// JobKey is the key of the record of an offboard whose person is unknown.
func JobKey(jobID string) string { return "job." + hash(jobID) }

// aliasKey maps an HR event to the record it was accepted into.
func aliasKey(source, eventID string) string { return "alias." + hash("event", source, eventID) }

// personKey returns the key of the record of a person: by user id when
// known, else by selector.
func personKey(userID int64, sel *Selector) (string, bool) {
	if userID > 0 {
		return UserKey(userID), true
	}
	if sel != nil {
		return SelectorKey(*sel)
	}
	return "", false
}

// ValidKey reports whether k is a record key (not an alias).
func ValidKey(k string) bool {
	kind, rest, ok := strings.Cut(k, ".")
	if !ok || rest == "" || strings.ContainsAny(rest, " *>\t\r\n") {
		return false
	}
	switch kind {
	case "user":
		n, err := strconv.ParseInt(rest, 10, 64)
		return err == nil && n > 0
	case "sel":
		kind, h, ok := strings.Cut(rest, ".")
		return ok && (kind == "email" || kind == "username" || kind == "external_id") && isHex(h)
	case "event", "job":
		return isHex(rest)
	}
	return false
}

func isHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Cancellation is a cancel that ended one of the leaver's offboards.
type Cancellation struct {
	JobID string `json:"job_id"`
	// By is the cancel job's id (data.cancelled_by), or "hold discard".
	By string `json:"by,omitempty"`
	// Scope is the cancel's scope ("" for an operators' bare cancel).
	Scope string    `json:"scope,omitempty"`
	Code  string    `json:"code"`
	At    time.Time `json:"at"`
}

// Hold is a time the guard held one of the leaver's offboards.
type Hold struct {
	JobID string    `json:"job_id"`
	At    time.Time `json:"at"`
	// Ended says how the hold ended: "ran" (released, or finished), or
	// "discarded"; empty while held.
	Ended   string    `json:"ended,omitempty"`
	EndedAt time.Time `json:"ended_at,omitzero"`
}

// Transition is one change of state, kept for the evidence (the last
// maxTransitions).
type Transition struct {
	State  State     `json:"state"`
	Reason string    `json:"reason,omitempty"`
	JobID  string    `json:"job_id,omitempty"`
	At     time.Time `json:"at"`
}

// Closure says who closed an open record, and why.
type Closure struct {
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// State and Reason the record had when closed.
	WasReason string `json:"was_reason,omitempty"`
}

const (
	maxTransitions   = 32
	maxCancellations = 16
	maxHolds         = 16
	maxJobs          = 16
)

// Record is one leaver, the value under its key in MFA_LEAVERS.
type Record struct {
	Key    string    `json:"key"`
	State  State     `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`

	UserID int64     `json:"user_id,omitempty"`
	User   *Selector `json:"user,omitempty"`
	// Source and EventID of the HR event, when the leaver came through
	// `worker ingest`; Source is the job's source otherwise.
	Source      string    `json:"source,omitempty"`
	EventID     string    `json:"event_id,omitempty"`
	ReceivedAt  time.Time `json:"received_at,omitzero"`
	EffectiveAt time.Time `json:"effective_at,omitzero"`
	DueAt       time.Time `json:"due_at,omitzero"`

	// JobID is the offboard the record follows now; FinishedAt and
	// ErrorCode are of its result.
	JobID      string    `json:"job_id,omitempty"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	ErrorCode  string    `json:"error_code,omitempty"`
	// OffboardedAt is when the last successful offboard finished.
	OffboardedAt   time.Time `json:"offboarded_at,omitzero"`
	FactorsRemoved int       `json:"factors_removed"`
	FactorTypes    []string  `json:"factor_types,omitempty"`
	VerifiedAt     time.Time `json:"verified_at,omitzero"`

	// LastCheckAt is the last re-verification; CheckSlot the interval
	// slot it claimed (each leaver is checked once per slot, by one
	// replica).
	LastCheckAt time.Time `json:"last_check_at,omitzero"`
	CheckSlot   int64     `json:"check_slot,omitempty"`
	Drifts      int       `json:"drifts,omitempty"`
	LastDriftAt time.Time `json:"last_drift_at,omitzero"`
	// DriftTypes are the factor types found again at the last drift.
	DriftTypes []string `json:"drift_types,omitempty"`

	Cancellations []Cancellation `json:"cancellations,omitempty"`
	Holds         []Hold         `json:"holds,omitempty"`
	Closure       *Closure       `json:"closure,omitempty"`
	Transitions   []Transition   `json:"transitions,omitempty"`
	// FinishedJobs are offboards of this person that have a result: a
	// late Scheduled, Held or Running of one of them changes nothing.
	FinishedJobs []string `json:"finished_jobs,omitempty"`

	// ResultSeq and DLQSeq are the last MFA_RESULTS and MFA_DLQ stream
	// sequences applied: an older or redelivered message is skipped.
	// MovedTo, on a sel.* key, names the user.* record the person's
	// record was merged into; such a pointer is no leaver of its own.
	MovedTo   string    `json:"moved_to,omitempty"`
	ResultSeq uint64    `json:"result_seq,omitempty"`
	DLQSeq    uint64    `json:"dlq_seq,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// setState moves r to s with reason, from now, and notes the transition.
// Staying in the same state with the same reason keeps Since.
func (r *Record) setState(s State, reason, jobID string, now time.Time) {
	if r.State == s && r.Reason == reason {
		return
	}
	r.State, r.Reason, r.Since = s, reason, now
	r.Transitions = appendCapped(r.Transitions, Transition{State: s, Reason: reason, JobID: jobID, At: now}, maxTransitions)
}

func appendCapped[T any](s []T, v T, n int) []T {
	s = append(s, v)
	if len(s) > n {
		s = slices.Delete(s, 0, len(s)-n)
	}
	return s
}

// finished reports whether jobID already has a result in r.
func (r *Record) finished(jobID string) bool {
	return jobID != "" && slices.Contains(r.FinishedJobs, jobID)
}

// done reports whether the person's factors are gone as far as the
// registry knows.
func (r *Record) done() bool { return r.State == Offboarded || r.State == Verified }

// Acceptance is what the door or the job path knows of a leaver's offboard.
type Acceptance struct {
	JobID  string
	UserID int64
	User   *Selector
	// Source is the job's source; for an HR event, the HR source
	// ("bamboohr") goes in HRSource and its id in EventID.
	Source      string
	HRSource    string
	EventID     string
	ReceivedAt  time.Time
	EffectiveAt time.Time
	DueAt       time.Time
}

func (a Acceptance) key() (string, bool) { return personKey(a.UserID, a.User) }

// note copies what a tells into r.
func (r *Record) note(a Acceptance) {
	if a.UserID > 0 {
		r.UserID = a.UserID
	}
	if a.User != nil && !a.User.IsZero() {
		u := *a.User
		r.User = &u
	}
	if a.HRSource != "" {
		r.Source, r.EventID = a.HRSource, a.EventID
	} else if a.Source != "" && r.EventID == "" {
		r.Source = a.Source
	}
	if !a.ReceivedAt.IsZero() {
		r.ReceivedAt = a.ReceivedAt
	}
	if !a.EffectiveAt.IsZero() {
		r.EffectiveAt = a.EffectiveAt
	}
	if !a.DueAt.IsZero() {
		r.DueAt = a.DueAt
	}
}

// applyStep moves r to state s for a's job, unless that job already
// finished. A new job id starts a new leaving: its result, not the last
// one's, is what the record follows now.
func applyStep(r *Record, a Acceptance, s State, now time.Time) bool {
	if r.finished(a.JobID) {
		return false
	}
	if a.JobID != r.JobID {
		if r.JobID != "" && r.State != Open && r.State != Closed && !r.done() && stepRank(s) < stepRank(r.State) {
			// Another job of the same person is already further along.
			r.note(a)
			return true
		}
		r.JobID = a.JobID
		r.FinishedAt, r.ErrorCode = time.Time{}, ""
	} else if stepRank(s) < stepRank(r.State) && !r.done() && r.State != Open && r.State != Closed {
		return false // a late step: the record is further along
	}
	r.note(a)
	if s == Held {
		r.Holds = appendCapped(r.Holds, Hold{JobID: a.JobID, At: now}, maxHolds)
	}
	if s == Running {
		r.endHold(a.JobID, "ran", now)
	}
	r.setState(s, "", a.JobID, now)
	return true
}

func stepRank(s State) int {
	switch s {
	case Scheduled:
		return 1
	case Held:
		return 2
	case Running:
		return 3
	}
	return 0
}

func (r *Record) endHold(jobID, how string, now time.Time) {
	for i := range r.Holds {
		if r.Holds[i].JobID == jobID && r.Holds[i].Ended == "" {
			r.Holds[i].Ended, r.Holds[i].EndedAt = how, now
		}
	}
}

// Result is what the registry reads of an offboard's result.
type Result struct {
	Seq        uint64
	JobID      string
	UserID     int64
	User       *Selector
	Outcome    string
	ErrorCode  string
	Source     string
	StartedAt  time.Time
	FinishedAt time.Time
	// Removed and RemovedTypes are the factors removed (types only when
	// the result names them); VerifiedAt is data.verified_at.
	Removed      int
	RemovedTypes []string
	VerifiedAt   time.Time
	// CancelledBy and CancelScope are of a cancelled offboard.
	CancelledBy string
	CancelScope string
	// EffectiveAt is the job's time when the result carries it.
	EffectiveAt time.Time
}

// applyResult applies an offboard's result to r. It reports whether r
// changed.
func applyResult(r *Record, res Result, now time.Time) bool {
	if res.Seq != 0 && res.Seq <= r.ResultSeq {
		return false
	}
	if res.Seq != 0 {
		r.ResultSeq = res.Seq
	}
	if res.UserID > 0 {
		r.UserID = res.UserID
	}
	if res.User != nil && !res.User.IsZero() && r.User == nil {
		u := *res.User
		r.User = &u
	}
	if r.Source == "" {
		r.Source = res.Source
	}
	if !res.EffectiveAt.IsZero() && (r.EffectiveAt.IsZero() || res.JobID != r.JobID) {
		r.EffectiveAt = res.EffectiveAt
	}
	if !r.finished(res.JobID) {
		r.FinishedJobs = appendCapped(r.FinishedJobs, res.JobID, maxJobs)
	}
	success := res.Outcome == "succeeded" || res.Outcome == "noop"
	if !success && r.done() && res.JobID != r.JobID {
		// Another offboard of someone already offboarded did not run:
		// nothing to follow up, the factors are gone. Keep the trace.
		r.noteCancel(res, now)
		r.Transitions = appendCapped(r.Transitions, Transition{State: r.State, Reason: reasonOf(res), JobID: res.JobID, At: now}, maxTransitions)
		return true
	}
	r.JobID, r.FinishedAt, r.ErrorCode = res.JobID, res.FinishedAt, res.ErrorCode
	if success {
		r.endHold(res.JobID, "ran", now)
		r.OffboardedAt = res.FinishedAt
		r.FactorsRemoved = res.Removed
		r.FactorTypes = slices.Clone(res.RemovedTypes)
		r.VerifiedAt = res.VerifiedAt
		r.Closure = nil
		if !res.VerifiedAt.IsZero() {
			r.setState(Verified, "", res.JobID, now)
		} else {
			r.setState(Offboarded, "", res.JobID, now)
		}
		return true
	}
	r.noteCancel(res, now)
	r.setState(Open, reasonOf(res), res.JobID, now)
	return true
}

func (r *Record) noteCancel(res Result, now time.Time) {
	if res.Outcome != "cancelled" {
		return
	}
	if res.ErrorCode == ReasonDiscarded {
		r.endHold(res.JobID, "discarded", now)
	}
	by := res.CancelledBy
	if by == "" && res.ErrorCode == ReasonDiscarded {
		by = "hold discard"
	}
	r.Cancellations = appendCapped(r.Cancellations, Cancellation{JobID: res.JobID, By: by, Scope: res.CancelScope, Code: res.ErrorCode, At: res.FinishedAt}, maxCancellations)
}

// reasonOf is the open reason of an offboard that did not succeed.
func reasonOf(res Result) string {
	switch res.Outcome {
	case "rejected":
		return ReasonRejected
	case "expired":
		return ReasonExpired
	case "cancelled":
		if res.ErrorCode == ReasonDiscarded {
			return ReasonDiscarded
		}
		return ReasonCancelled
	}
	switch res.ErrorCode {
	case ReasonUserNotFound, ReasonAmbiguous, ReasonFactorsRemain:
		return res.ErrorCode
	}
	return ReasonFailed
}

// DeadLetter is an HR event that the mapper dead-lettered.
type DeadLetter struct {
	Seq     uint64
	Source  string
	EventID string
	Code    string // Mfa-Error-Code
	At      time.Time
}

// applyDeadLetter opens r for a dead-lettered HR event, unless the person's
// factors are already gone.
func applyDeadLetter(r *Record, d DeadLetter, now time.Time) bool {
	if d.Seq != 0 && d.Seq <= r.DLQSeq {
		return false
	}
	if d.Seq != 0 {
		r.DLQSeq = d.Seq
	}
	if r.Source == "" || r.EventID == "" {
		r.Source, r.EventID = d.Source, d.EventID
	}
	if r.ReceivedAt.IsZero() {
		r.ReceivedAt = d.At
	}
	reason := ReasonRuleError
	if d.Code != "" && d.Code != ReasonRuleError {
		r.ErrorCode = d.Code
	}
	if r.done() {
		r.Transitions = appendCapped(r.Transitions, Transition{State: r.State, Reason: reason, At: now}, maxTransitions)
		return true
	}
	r.setState(Open, reason, "", now)
	return true
}

// applyDrift opens r: factors were found again after the offboard.
func applyDrift(r *Record, types []string, now time.Time) {
	r.Drifts++
	r.LastDriftAt = now
	r.LastCheckAt = now
	r.DriftTypes = slices.Clone(types)
	r.Closure = nil
	r.setState(Open, ReasonDrift, "", now)
}

// applyClose closes an open record with a reason.
func applyClose(r *Record, by, reason string, now time.Time) {
	r.Closure = &Closure{By: by, Reason: reason, At: now, WasReason: r.Reason}
	r.setState(Closed, "", "", now)
}

// merge folds o (a sel.* record of the same person) into r.
func merge(r *Record, o Record) {
	if r.Source == "" || (r.EventID == "" && o.EventID != "") {
		r.Source, r.EventID = o.Source, o.EventID
	}
	if r.ReceivedAt.IsZero() || (!o.ReceivedAt.IsZero() && o.ReceivedAt.Before(r.ReceivedAt)) {
		r.ReceivedAt = o.ReceivedAt
	}
	if r.EffectiveAt.IsZero() {
		r.EffectiveAt = o.EffectiveAt
	}
	if r.User == nil {
		r.User = o.User
	}
	if r.JobID == "" {
		r.JobID = o.JobID
	}
	if r.CreatedAt.IsZero() || (!o.CreatedAt.IsZero() && o.CreatedAt.Before(r.CreatedAt)) {
		r.CreatedAt = o.CreatedAt
	}
	for _, c := range o.Cancellations {
		r.Cancellations = appendCapped(r.Cancellations, c, maxCancellations)
	}
	for _, h := range o.Holds {
		r.Holds = appendCapped(r.Holds, h, maxHolds)
	}
	for _, j := range o.FinishedJobs {
		if !r.finished(j) {
			r.FinishedJobs = appendCapped(r.FinishedJobs, j, maxJobs)
		}
	}
	ts := append(slices.Clone(o.Transitions), r.Transitions...)
	slices.SortStableFunc(ts, func(a, b Transition) int { return a.At.Compare(b.At) })
	if len(ts) > maxTransitions {
		ts = ts[len(ts)-maxTransitions:]
	}
	r.Transitions = ts
	// An open sel.* record whose person now has a user.* record that is
	// not done keeps its reason there.
	if r.State == "" {
		r.State, r.Reason, r.Since = o.State, o.Reason, o.Since
	}
	r.ResultSeq = max(r.ResultSeq, o.ResultSeq)
	r.DLQSeq = max(r.DLQSeq, o.DLQSeq)
}
