// Package ledger keeps the worker's idempotency records and per-user locks in
// NATS JetStream key-value buckets.
//
// A job id maps to one Record: running (with the owning replica and a lease)
// or finished (with the stored result). Records change only by
// compare-and-set on the KV revision, so two replicas can never both believe
// they own a job. Per-user locks are short leases in a second bucket whose
// age limit frees a lock whose owner died.
package ledger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Errors returned by the ledger.
var (
	ErrExists   = errors.New("ledger: record exists")
	ErrNotFound = errors.New("ledger: no record")
	ErrConflict = errors.New("ledger: record changed concurrently")
)

// State is a record's lifecycle state.
type State string

// Record states.
const (
	Running  State = "running"
	Finished State = "finished"
)

// Record is the ledger's entry for one job id.
type Record struct {
	State State `json:"state"`
	// Hash identifies the job body (secrets excluded): the same id with
	// another hash is a different job reusing the id.
	Hash string `json:"hash"`
	// Owner and LeaseUntil say who runs the job and until when that claim
	// holds without renewal.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Sent records that a call OneLogin cannot be asked about afterwards
	// (activate, verify, generate_token) may have reached it.
	Sent bool `json:"sent,omitempty"`
	// Replay is the tag of the dead-letter replay that produced this record.
	Replay string `json:"replay,omitempty"`
	// Outcome, Result and ResultMsgID hold the finished job's result event.
	Outcome     string          `json:"outcome,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
	ResultMsgID string          `json:"result_msg_id,omitempty"`
	// DeadLettered records that the job's copy went to the DLQ.
	DeadLettered bool `json:"dead_lettered,omitempty"`
	// Seq is the job stream sequence of the message that finished the job,
	// which tells its redelivery from a duplicate message.
	Seq       uint64    `json:"seq,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Entry is a record with its KV revision, needed to change it.
type Entry struct {
	Record
	Revision uint64
}

// Ledger is the job ledger.
type Ledger struct {
	kv jetstream.KeyValue
}

// New returns a ledger on kv.
func New(kv jetstream.KeyValue) *Ledger { return &Ledger{kv: kv} }

// Key returns the KV key of a job id. Job ids may hold any printable ASCII,
// KV keys may not, so the id is base64url-encoded.
func Key(jobID string) string {
	return "job." + base64.RawURLEncoding.EncodeToString([]byte(jobID))
}

// Create stores rec for a new job id, or returns ErrExists.
func (l *Ledger) Create(ctx context.Context, jobID string, rec Record) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	rev, err := l.kv.Create(ctx, Key(jobID), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrExists
	}
	if err != nil {
		return 0, fmt.Errorf("ledger create: %w", err)
	}
	return rev, nil
}

// Get returns the record of a job id, or ErrNotFound.
func (l *Ledger) Get(ctx context.Context, jobID string) (*Entry, error) {
	e, err := l.kv.Get(ctx, Key(jobID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("ledger get: %w", err)
	}
	var rec Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, fmt.Errorf("ledger get: corrupt record: %w", err)
	}
	return &Entry{Record: rec, Revision: e.Revision()}, nil
}

// Update replaces the record at revision rev, or returns ErrConflict when it
// changed since.
func (l *Ledger) Update(ctx context.Context, jobID string, rec Record, rev uint64) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	n, err := l.kv.Update(ctx, Key(jobID), b, rev)
	if isConflict(err) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("ledger update: %w", err)
	}
	return n, nil
}

// isConflict reports a failed compare-and-set: nats.go maps both codes the
// server uses for it (10071, and 10164 on replicated streams) to
// ErrKeyRevisionMismatch for Update and for Delete with LastRevision.
// ErrKeyExists is for Create only (see jetstream/errors.go).
func isConflict(err error) bool { return errors.Is(err, jetstream.ErrKeyRevisionMismatch) }

// Locks are per-user leases shared by every replica.
type Locks struct {
	kv    jetstream.KeyValue
	owner string
}

// NewLocks returns the locks on kv, taken in the name of owner. The bucket's
// age limit is the lease: a lock not renewed within it disappears.
func NewLocks(kv jetstream.KeyValue, owner string) *Locks {
	return &Locks{kv: kv, owner: owner}
}

func lockKey(userID int64) string { return "user." + strconv.FormatInt(userID, 10) }

// TryAcquire takes the user's lock if nobody holds it. ok is false when
// another holder has it.
func (l *Locks) TryAcquire(ctx context.Context, userID int64) (rev uint64, ok bool, err error) {
	rev, err = l.kv.Create(ctx, lockKey(userID), []byte(l.owner))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("lock user %d: %w", userID, err)
	}
	return rev, true, nil
}

// Renew extends a held lock; ErrConflict means it was lost.
func (l *Locks) Renew(ctx context.Context, userID int64, rev uint64) (uint64, error) {
	n, err := l.kv.Update(ctx, lockKey(userID), []byte(l.owner), rev)
	if isConflict(err) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("renew lock of user %d: %w", userID, err)
	}
	return n, nil
}

// Release frees a held lock (a no-op when it was lost meanwhile).
func (l *Locks) Release(ctx context.Context, userID int64, rev uint64) error {
	err := l.kv.Delete(ctx, lockKey(userID), jetstream.LastRevision(rev))
	if err != nil && !isConflict(err) {
		return fmt.Errorf("release lock of user %d: %w", userID, err)
	}
	return nil
}
