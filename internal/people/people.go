// Package people holds the operators' tools over MFA_PEOPLE, the bucket
// of the resurrection guard: showing a person's record, and clearing a
// record that must not stand (an offboard dated far ahead by a publisher's
// clock, which would otherwise cancel every later enroll of that person
// for ever).
//
// A clear is an operator's act with the same trust as a replay: it needs
// write access to MFA_LEDGER's grants (a job publisher has none) and to
// MFA_PEOPLE. It writes a one-time grant grant.people.<user id>.<record
// revision> into MFA_LEDGER, leaves an audit record on
// mfa.audit.people.clear, and only then replaces the record, by
// compare-and-set on the revision the operator was shown, with one whose
// offboard time is empty and which says who cleared what, when and why.
// An offboard recorded meanwhile makes the clear fail: nothing is lost
// that the operator did not see. The worker reads a cleared record as "no
// offboard recorded", and the next offboard of the person replaces it.
package people

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/audit"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Bucket names of the records and of the grants (as in package topology,
// which provisions them).
const (
	Bucket       = topology.BucketPeople
	LedgerBucket = topology.BucketLedger
)

// FutureSkew is how far ahead of now a recorded offboard may be before
// Show calls it poisoned: job time is bounded to the time JetStream stored
// the job plus 5 minutes.
const FutureSkew = 5 * time.Minute

// Record is one person's record.
type Record struct {
	UserID       int64     `json:"-"`
	OffboardedAt time.Time `json:"offboarded_at"`
	JobID        string    `json:"job_id"`
	// Cleared says who cleared an earlier offboard time, when and why.
	Cleared *Cleared `json:"cleared,omitempty"`
	// Revision and Written are the KV entry's revision and time.
	Revision uint64    `json:"-"`
	Written  time.Time `json:"-"`
}

// Cleared is an operator's clear of a record.
type Cleared struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	// WasOffboardedAt and WasJobID are what the record held.
	WasOffboardedAt time.Time `json:"was_offboarded_at"`
	WasJobID        string    `json:"was_job_id"`
	Grant           string    `json:"grant"`
}

// Poisoned reports whether the recorded offboard lies further ahead of
// now than job time can: such a record cancels every later enroll.
func (r *Record) Poisoned(now time.Time) bool {
	return r != nil && r.OffboardedAt.After(now.Add(FutureSkew))
}

// ErrNothing is returned when there is no offboard to clear.
var ErrNothing = errors.New("people: no offboard is recorded for this user")

// ErrChanged is returned when the record changed after it was read.
var ErrChanged = errors.New("people: the record changed since it was read (an offboard was recorded meanwhile); show it again and decide")

// Show returns the record of userID, or nil when there is none.
func Show(ctx context.Context, kv jetstream.KeyValue, userID int64) (*Record, error) {
	e, err := kv.Get(ctx, ledger.PersonKey(userID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", Bucket, ledger.PersonKey(userID), err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("read %s %s: corrupt record: %w", Bucket, ledger.PersonKey(userID), err)
	}
	r.UserID, r.Revision, r.Written = userID, e.Revision(), e.Created()
	return &r, nil
}

// GrantKey is the MFA_LEDGER key of the grant to clear userID's record at
// revision rev. The token "people" is no base64url encoding of a printable
// job id, so it never meets a replay grant's key.
func GrantKey(userID int64, rev uint64) string {
	return "grant.people." + strconv.FormatInt(userID, 10) + "." + strconv.FormatUint(rev, 10)
}

type grant struct {
	UserID    int64     `json:"user_id"`
	Revision  uint64    `json:"revision"`
	State     string    `json:"state"`
	By        string    `json:"by"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
}

// Operator names who clears and why; both are required.
type Operator struct {
	By     string
	Reason string
}

// Clear clears userID's recorded offboard, if it is still at revision rev
// (0: whatever is there now), and returns the record as it was.
func Clear(ctx context.Context, js jetstream.JetStream, userID int64, rev uint64, op Operator, now time.Time) (*Record, error) {
	if strings.TrimSpace(op.Reason) == "" || strings.TrimSpace(op.By) == "" {
		return nil, errors.New("people: a clear needs who (--by) and why (--reason)")
	}
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", Bucket, err)
	}
	lkv, err := js.KeyValue(ctx, LedgerBucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", LedgerBucket, err)
	}
	r, err := Show(ctx, kv, userID)
	if err != nil {
		return nil, err
	}
	if r == nil || r.OffboardedAt.IsZero() {
		return r, ErrNothing
	}
	if rev != 0 && r.Revision != rev {
		return r, ErrChanged
	}
	// The grant: one per (user, revision), written by someone allowed to
	// write grants.
	gk := GrantKey(userID, r.Revision)
	g := grant{UserID: userID, Revision: r.Revision, State: ledger.GrantUnused, By: op.By, Reason: op.Reason, CreatedAt: now.UTC()}
	gb, _ := json.Marshal(g)
	grev, err := lkv.Create(ctx, gk, gb)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// An earlier clear of this revision died before it finished, or
		// finished: the record's revision tells (a finished clear changed
		// it), so carry on with the grant as it is.
		e, gerr := lkv.Get(ctx, gk)
		if gerr != nil {
			return r, fmt.Errorf("read the grant %s: %w", gk, gerr)
		}
		grev, err = e.Revision(), nil
	}
	if err != nil {
		return r, fmt.Errorf("write the grant %s into %s (the operator needs the grants' permission): %w", gk, LedgerBucket, err)
	}
	rec := audit.Record{
		Action: audit.ActionPeopleClear, At: now, By: op.By, Reason: op.Reason, UserID: userID, Count: 1,
		JobIDs: []string{r.JobID},
		Details: map[string]string{
			"was_offboarded_at": r.OffboardedAt.UTC().Format(time.RFC3339Nano),
			"revision":          strconv.FormatUint(r.Revision, 10),
			"grant":             gk,
		},
	}
	if err := audit.Publish(ctx, js, rec, "people-clear:"+strconv.FormatInt(userID, 10)+":"+strconv.FormatUint(r.Revision, 10)); err != nil {
		return r, err
	}
	cleared := Record{Cleared: &Cleared{
		At: now.UTC(), By: op.By, Reason: op.Reason, WasOffboardedAt: r.OffboardedAt.UTC(), WasJobID: r.JobID, Grant: gk,
	}}
	b, err := json.Marshal(cleared)
	if err != nil {
		return r, err
	}
	if _, err := kv.Update(ctx, ledger.PersonKey(userID), b, r.Revision); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return r, ErrChanged
		}
		return r, fmt.Errorf("clear %s %s: %w", Bucket, ledger.PersonKey(userID), err)
	}
	g.State, g.UsedAt = ledger.GrantUsed, now.UTC()
	gb, _ = json.Marshal(g)
	if _, err := lkv.Update(ctx, gk, gb, grev); err != nil {
		return r, fmt.Errorf("cleared, but marking the grant %s used failed: %w", gk, err)
	}
	return r, nil
}
