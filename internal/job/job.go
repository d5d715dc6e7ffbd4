// Package job is the job model: job types and their lanes, the typed
// parameters of each type, outcomes, every error code with its meaning,
// parsing and validation against schemas/job.v1.json (embedded), results
// and the message-id scheme. It does no I/O and imports nothing of the
// worker's own packages but the schemas.
package job

import (
	"strings"
	"time"
)

// Type is a job type: the last token of its subject mfa.jobs.<type>.
type Type string

// The job types.
const (
	TypeEnroll        Type = "enroll"
	TypeActivate      Type = "activate"
	TypeVerify        Type = "verify"
	TypeRemove        Type = "remove"
	TypeOffboard      Type = "offboard"
	TypeGenerateToken Type = "generate_token"
	// TypeCancel cancels another job that has not started running.
	TypeCancel Type = "cancel"
)

// Types lists every job type.
var Types = []Type{TypeEnroll, TypeActivate, TypeVerify, TypeRemove, TypeOffboard, TypeGenerateToken, TypeCancel}

// Valid reports whether t is a known type.
func (t Type) Valid() bool {
	for _, x := range Types {
		if t == x {
			return true
		}
	}
	return false
}

// Lane is one of the two consumers of MFA_JOBS. The urgent lane is served
// first, by the runner and by the OneLogin pacer: leavers lose MFA first.
type Lane int

// The lanes.
const (
	LaneNormal Lane = iota
	LaneUrgent
)

// String names the lane as its consumer's filter does.
func (l Lane) String() string {
	if l == LaneUrgent {
		return "urgent"
	}
	return "normal"
}

// traits are what the executor needs to know about a type. A new type is
// one line here plus its params, its handler and its schema branch.
type traits struct {
	lane Lane
	// atMostOnce: the type's OneLogin call cannot be read back afterwards,
	// so it is made at most once per job (see the executor).
	atMostOnce bool
	// guarded: the type gives a user MFA, so it is never executed when its
	// job time is earlier than the user's recorded offboard.
	guarded bool
}

// A generate_token whose reply was lost is retried (not at most once):
// nobody saw the lost token, and it expires.
var typeTraits = map[Type]traits{
	TypeEnroll:        {lane: LaneNormal, guarded: true},
	TypeActivate:      {lane: LaneNormal, atMostOnce: true, guarded: true},
	TypeVerify:        {lane: LaneNormal, atMostOnce: true, guarded: true},
	TypeRemove:        {lane: LaneUrgent},
	TypeOffboard:      {lane: LaneUrgent},
	TypeGenerateToken: {lane: LaneNormal, guarded: true},
	TypeCancel:        {lane: LaneUrgent},
}

// Lane returns the lane of t.
func (t Type) Lane() Lane { return typeTraits[t].lane }

// Urgent reports whether t belongs to the urgent lane: leavers lose MFA first.
func (t Type) Urgent() bool { return t.Lane() == LaneUrgent }

// AtMostOnce reports whether t's OneLogin call cannot be read back, so that
// a delivery after one that may have made it must not make it again.
func (t Type) AtMostOnce() bool { return typeTraits[t].atMostOnce }

// SupersededByOffboard reports whether a job of type t whose job time is
// earlier than the user's last offboard must not run (the resurrection
// guard): enroll, activate, verify and generate_token.
func (t Type) SupersededByOffboard() bool { return typeTraits[t].guarded }

// TypesOf returns the types of a lane, in the order of Types.
func TypesOf(l Lane) []Type {
	var out []Type
	for _, t := range Types {
		if t.Lane() == l {
			out = append(out, t)
		}
	}
	return out
}

// Subject returns the job subject of t.
func (t Type) Subject() string { return SubjectPrefix + string(t) }

// CancelSubject returns the subject of a cancel with scope: the bare
// mfa.jobs.cancel (the operators' cancel) for an empty scope, else
// mfa.jobs.cancel.<scope>.
func CancelSubject(scope string) string {
	if scope == "" {
		return TypeCancel.Subject()
	}
	return TypeCancel.Subject() + "." + scope
}

// ValidScope reports whether scope can follow mfa.jobs.cancel. as subject
// tokens: one or more non-empty tokens of printable ASCII, no wildcards.
func ValidScope(scope string) bool {
	if scope == "" || len(scope) > 255 {
		return false
	}
	for _, tok := range strings.Split(scope, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] <= ' ' || tok[i] >= 0x7f {
				return false
			}
		}
	}
	return true
}

// Job is a validated job. It names its person by UserID or by User,
// exactly one of them; the executor resolves User to UserID before it takes
// the per-user lock.
type Job struct {
	ID            string
	Type          Type
	UserID        int64
	User          *User
	Params        Params
	CorrelationID string
	Source        string
	RequestedAt   time.Time
	// NotBefore is zero when the job may run at once.
	NotBefore time.Time
	NotAfter  time.Time
	// Hash identifies the body, secrets excluded (see canonicalHash).
	Hash string
	// CancelScope is a cancel's authority, read from its subject: empty on
	// the operators' bare mfa.jobs.cancel (it may end any job), else the
	// tokens after mfa.jobs.cancel. joined by dots (it may end only jobs
	// whose Source equals it).
	CancelScope string
}

// User names a person as HR knows them by one or more identifiers (at
// least one field is set). Each identifier is resolved on its own by an
// exact match (emails and usernames without regard to case); those that find
// someone must all find the same single OneLogin user.
type User struct {
	Email      string `json:"email,omitempty"`
	Username   string `json:"username,omitempty"`
	ExternalID string `json:"external_id,omitempty"`
}

// The kinds of user identifier, as in the job's "user" object.
const (
	SelectorEmail      = "email"
	SelectorUsername   = "username"
	SelectorExternalID = "external_id"
)

// Identifier is one identifier of a User: its kind (SelectorEmail, ...) and
// value.
type Identifier struct {
	Kind  string
	Value string
}

// Identifiers returns the identifiers set, in the order email, username,
// external_id; nil for a nil User.
func (u *User) Identifiers() []Identifier {
	if u == nil {
		return nil
	}
	var out []Identifier
	for _, f := range [...]Identifier{{SelectorEmail, u.Email}, {SelectorUsername, u.Username}, {SelectorExternalID, u.ExternalID}} {
		if f.Value != "" {
			out = append(out, f)
		}
	}
	return out
}

// Kind names the identifiers set, joined by commas in the order email,
// username, external_id ("email,external_id"); "" when none is set.
func (u *User) Kind() string {
	var kinds []string
	for _, f := range u.Identifiers() {
		kinds = append(kinds, f.Kind)
	}
	return strings.Join(kinds, ",")
}

// SelectorOperators are the characters OneLogin's Users API reads as
// operators in a query value ("*" a wildcard, "!" a negation). OneLogin
// documents no escape for them, so a value holding one cannot be matched
// exactly and is refused (CodeInvalidSelector).
const SelectorOperators = "*!"

// Params are the per-type parameters; see schemas/job.v1.json.
type Params struct {
	FactorID            int64
	FactorName          string
	DisplayName         string
	Number              string
	Verified            bool
	DeviceID            int64
	StateTokenExpiresIn int
	NumericSMSOTP       *bool
	SMSMessage          string
	OTPToken            string // secret
	StateToken          string // secret
	ExpiresIn           int
	Reusable            bool
	RecipientXKey       string
	// JobID is the target of a cancel.
	JobID string
}

// MaxAhead is how far ahead a job's not_before may be.
const MaxAhead = 366 * 24 * time.Hour

// Time is the job's time: its not_before if given, else its requested_at,
// else stored (the time JetStream stored the first message that carried the
// job, which the caller knows from the message or from the Mfa-Job-Time
// header the worker sets on schedules and dead letters).
//
// A declared time (not_before, requested_at) is bounded by stored plus
// MaxClockAhead, so that a clock running ahead (or a date of 2099) can
// neither poison MFA_PEOPLE nor slip a stale job past the resurrection
// guard. A zero stored leaves the declared time as it is.
func (j *Job) Time(stored time.Time) time.Time {
	return BoundTime(j.DeclaredTime(stored), stored)
}

// DeclaredTime is the job's time as it declares it, unbounded: its
// not_before if given, else its requested_at, else fallback.
func (j *Job) DeclaredTime(fallback time.Time) time.Time {
	switch {
	case !j.NotBefore.IsZero():
		return j.NotBefore
	case !j.RequestedAt.IsZero():
		return j.RequestedAt
	}
	return fallback
}

// MaxClockAhead is how far a job's declared time may be ahead of the time
// JetStream stored it.
const MaxClockAhead = 5 * time.Minute

// BoundTime is min(declared, stored + MaxClockAhead): the job time as the
// contract bounds it. A zero stored leaves declared unbounded.
func BoundTime(declared, stored time.Time) time.Time {
	if stored.IsZero() {
		return declared
	}
	if limit := stored.Add(MaxClockAhead); declared.After(limit) {
		return limit
	}
	return declared
}

// secretParams are blanked in DLQ copies and left out of the body hash.
var secretParams = []string{"otp_token", "state_token"}
