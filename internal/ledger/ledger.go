// Package ledger keeps the worker's idempotency records and per-user locks in
// NATS JetStream key-value buckets.
//
// A job id maps to one Record: running (with the owning replica and a lease)
// or finished (with the stored result). Records change only by
// compare-and-set on the KV revision, so two replicas can never both believe
// they own a job. Per-user locks are short leases in a second bucket whose
// age limit frees a lock whose owner died; a finished job's lock is left
// for the next job to take (Locks.Keep).
package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
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
	// Scheduled: the job waits as a message schedule until DueAt.
	Scheduled State = "scheduled"
	// Tombstone: a cancel (CancelledBy) arrived before the job; the job,
	// when it arrives within the bucket's TTL, ends cancelled.
	Tombstone State = "tombstone"
	// Held: the blast-radius guard holds the job (package guard) until an
	// operator releases or discards it; the released or discarded message
	// claims the record like a fired schedule, and a cancel ends it like a
	// scheduled job.
	Held State = "held"
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

	// DueAt is when a scheduled job's schedule fires (its not_before
	// rounded up to the second); Schedule is the schedule's subject.
	DueAt    time.Time `json:"due_at,omitzero"`
	Schedule string    `json:"schedule,omitempty"`
	// JobTime is the job's time (see job.Job.Time).
	JobTime time.Time `json:"job_time,omitzero"`
	// Type, UserID, CorrelationID and Source let a cancel write the
	// result of a scheduled job without reading its message.
	Type          string `json:"type,omitempty"`
	UserID        int64  `json:"user_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	Source        string `json:"source,omitempty"`
	// CancelledBy is the id of the cancel job that ended this job or left
	// this tombstone; CancelScope is that cancel's scope (empty: the
	// operators' bare mfa.jobs.cancel, which binds any job; else it binds
	// only a job whose source equals the scope).
	CancelledBy string `json:"cancelled_by,omitempty"`
	CancelScope string `json:"cancel_scope,omitempty"`
	// MoreCancels are the tombstones of later cancels of the same id with
	// other scopes (at most one per scope, MaxTombstones in all), so that
	// a tombstone of a foreign scope cannot shut out the rightful one.
	MoreCancels []Cancel `json:"more_cancels,omitempty"`

	// Attempts, LastErrorCode and NextRetryAt are of a running job's last
	// failed delivery, written when it is given back for a retry: the
	// deliveries so far, the error code that made it retry (no message:
	// it may name what OneLogin answered) and when it is delivered again.
	Attempts      int       `json:"attempts,omitempty"`
	LastErrorCode string    `json:"last_error_code,omitempty"`
	NextRetryAt   time.Time `json:"next_retry_at,omitzero"`
}

// Cancel is one cancel waiting in a tombstone: its id and its scope.
type Cancel struct {
	By    string `json:"by"`
	Scope string `json:"scope,omitempty"`
}

// MaxTombstones bounds the cancels one tombstone keeps.
const MaxTombstones = 16

// Cancels lists the cancels a tombstone holds, first come first.
func (r *Record) Cancels() []Cancel {
	if r.CancelledBy == "" {
		return r.MoreCancels
	}
	return append([]Cancel{{By: r.CancelledBy, Scope: r.CancelScope}}, r.MoreCancels...)
}

// Binds reports whether a cancel of scope may end a job of source: the
// bare cancel (empty scope) any job, a scoped one only a job whose source
// equals its scope.
func Binds(scope, source string) bool {
	return scope == "" || scope == source
}

// Binding returns the first cancel of a tombstone that binds a job of
// source; ok is false when none does (the job then runs).
func (r *Record) Binding(source string) (c Cancel, ok bool) {
	for _, c := range r.Cancels() {
		if Binds(c.Scope, source) {
			return c, true
		}
	}
	return Cancel{}, false
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
	return "job." + job.IDToken(jobID)
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

// Locks are per-user leases shared by every replica. A lock's value names
// its owner and the job it was taken for. A job that finished leaves its
// lock in place (Keep) instead of deleting it: the lock then names a job
// whose ledger record is finished, which frees it for anyone (TakeOver),
// and the replica that kept it takes it again with one write. Either way
// it lapses with the bucket's age limit.
type Locks struct {
	kv    jetstream.KeyValue
	owner string
	lease time.Duration

	mu   sync.Mutex
	kept map[int64]keptLock
}

type keptLock struct {
	rev uint64
	at  time.Time
}

// Holder is who holds a user's lock: the job it was taken for (empty for a
// lock of an earlier version, which names only its owner) and the lock's
// revision.
type Holder struct {
	Job string
	Rev uint64
}

// NewLocks returns the locks on kv, taken in the name of owner. The bucket's
// age limit, lease, is the lease: a lock not renewed within it disappears.
func NewLocks(kv jetstream.KeyValue, owner string, lease time.Duration) *Locks {
	return &Locks{kv: kv, owner: owner, lease: lease, kept: map[int64]keptLock{}}
}

func lockKey(userID int64) string { return "user." + strconv.FormatInt(userID, 10) }

func (l *Locks) value(job string) []byte { return []byte(l.owner + "\n" + job) }

// TryAcquire takes the user's lock for job if nobody holds it, or if this
// replica kept it (Keep) less than half a lease ago. ok is false when it is
// held; holder then says by which job, for TakeOver.
func (l *Locks) TryAcquire(ctx context.Context, userID int64, job string) (rev uint64, ok bool, holder Holder, err error) {
	if k, found := l.takeKept(userID); found {
		if rev, err := l.kv.Update(ctx, lockKey(userID), l.value(job), k.rev); err == nil {
			return rev, true, Holder{}, nil
		}
	}
	rev, err = l.kv.Create(ctx, lockKey(userID), l.value(job))
	if err == nil {
		return rev, true, Holder{}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, false, Holder{}, fmt.Errorf("lock user %d: %w", userID, err)
	}
	e, err := l.kv.Get(ctx, lockKey(userID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return 0, false, Holder{}, nil // released meanwhile: the next try takes it
	}
	if err != nil {
		return 0, false, Holder{}, fmt.Errorf("lock user %d: %w", userID, err)
	}
	h := Holder{Rev: e.Revision()}
	if _, j, found := strings.Cut(string(e.Value()), "\n"); found {
		h.Job = j
	}
	return 0, false, h, nil
}

// TakeOver takes the user's lock from its holder at revision from, for a
// caller who found the holder's job finished; ok is false when the lock
// changed meanwhile.
func (l *Locks) TakeOver(ctx context.Context, userID int64, job string, from uint64) (rev uint64, ok bool, err error) {
	rev, err = l.kv.Update(ctx, lockKey(userID), l.value(job), from)
	if isConflict(err) || errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("take over lock of user %d: %w", userID, err)
	}
	return rev, true, nil
}

// Renew extends a held lock; ErrConflict means it was lost.
func (l *Locks) Renew(ctx context.Context, userID int64, job string, rev uint64) (uint64, error) {
	n, err := l.kv.Update(ctx, lockKey(userID), l.value(job), rev)
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

// Keep gives up a lock whose job's ledger record is finished without a
// write: the lock stays, free for TakeOver, and this replica takes it
// again at revision rev while it is less than half a lease old.
func (l *Locks) Keep(userID int64, rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.kept) >= maxKept {
		// Forgetting is safe: a forgotten lock is taken over like
		// another replica's, with a read of it and of the ledger.
		clear(l.kept)
	}
	l.kept[userID] = keptLock{rev: rev, at: time.Now()}
}

// maxKept bounds the locks a replica remembers keeping.
const maxKept = 4096

func (l *Locks) takeKept(userID int64) (keptLock, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := l.kept[userID]
	delete(l.kept, userID)
	return k, ok && time.Since(k.at) < l.lease/2
}

// People records, per OneLogin user id, the job time of the user's latest
// offboard: a job that would give the user MFA with an earlier job time is
// never executed (the resurrection guard).
type People struct {
	kv jetstream.KeyValue
}

// NewPeople returns the people records on kv.
func NewPeople(kv jetstream.KeyValue) *People { return &People{kv: kv} }

// PersonKey is the KV key of a user's record: user.<id>.
func PersonKey(userID int64) string { return "user." + strconv.FormatInt(userID, 10) }

type person struct {
	OffboardedAt time.Time `json:"offboarded_at"`
	JobID        string    `json:"job_id"`
}

// Offboarded returns the job time of the user's latest offboard and the
// id of that job; a zero time when none is recorded.
func (p *People) Offboarded(ctx context.Context, userID int64) (time.Time, string, error) {
	e, err := p.kv.Get(ctx, PersonKey(userID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return time.Time{}, "", nil
	}
	if err != nil {
		return time.Time{}, "", fmt.Errorf("people get: %w", err)
	}
	var r person
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return time.Time{}, "", fmt.Errorf("people get: corrupt record: %w", err)
	}
	return r.OffboardedAt, r.JobID, nil
}

// RecordOffboard stores at as the user's latest offboard unless a later
// one is recorded already (compare-and-set, so concurrent offboards keep the
// latest). The record is created without reading first: a person is
// offboarded once as a rule, so the read is made only when one exists.
func (p *People) RecordOffboard(ctx context.Context, userID int64, at time.Time, jobID string) error {
	b, err := json.Marshal(person{OffboardedAt: at.UTC(), JobID: jobID})
	if err != nil {
		return err
	}
	for i := 0; i < 20; i++ {
		_, err = p.kv.Create(ctx, PersonKey(userID), b)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("people create: %w", err)
		}
		e, err := p.kv.Get(ctx, PersonKey(userID))
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return fmt.Errorf("people get: %w", err)
		}
		var r person
		if json.Unmarshal(e.Value(), &r) == nil && !at.After(r.OffboardedAt) {
			return nil
		}
		_, err = p.kv.Update(ctx, PersonKey(userID), b, e.Revision())
		if isConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("people update: %w", err)
		}
		return nil
	}
	return errors.New("people: record keeps changing")
}
