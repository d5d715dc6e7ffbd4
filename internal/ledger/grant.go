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

// ErrGrantUsed is returned when a replay grant was already consumed.
var ErrGrantUsed = errors.New("ledger: replay grant already used")

// Grant states.
const (
	GrantUnused = "granted"
	GrantUsed   = "used"
)

// Grant is a one-time permission to run a finished job again: `worker dlq
// replay` writes one for (job id, DLQ sequence) before it re-publishes the
// dead letter with Mfa-Replay: <DLQ sequence>, and the worker consumes it
// (compare-and-set) when it takes the job's record over.
type Grant struct {
	JobID  string `json:"job_id"`
	DLQSeq uint64 `json:"dlq_seq"`
	State  string `json:"state"`
	// RecordRev is the revision of the job's ledger record that the
	// consumer was about to replace: if it crashed before replacing it,
	// the replay's redelivery finds the record unchanged and may go on.
	RecordRev uint64    `json:"record_rev,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
}

// GrantKey returns the KV key of the replay grant for (jobID, dlqSeq):
// grant.<base64url(job id), no padding>.<DLQ sequence>, next to the job's
// record job.<base64url(job id)>, so that `nats kv get MFA_LEDGER
// grant.<...>.<seq>` finds it.
func GrantKey(jobID string, dlqSeq uint64) string {
	return "grant." + base64.RawURLEncoding.EncodeToString([]byte(jobID)) + "." + strconv.FormatUint(dlqSeq, 10)
}

// WriteGrant writes an unused grant for (jobID, dlqSeq). Writing it again
// while it is unused is a no-op; once used it returns ErrGrantUsed.
func (l *Ledger) WriteGrant(ctx context.Context, jobID string, dlqSeq uint64) error {
	g := Grant{JobID: jobID, DLQSeq: dlqSeq, State: GrantUnused, CreatedAt: time.Now().UTC()}
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	_, err = l.kv.Create(ctx, GrantKey(jobID, dlqSeq), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		old, _, gerr := l.grant(ctx, jobID, dlqSeq)
		if gerr != nil {
			return gerr
		}
		if old.State == GrantUsed {
			return ErrGrantUsed
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("ledger grant: %w", err)
	}
	return nil
}

func (l *Ledger) grant(ctx context.Context, jobID string, dlqSeq uint64) (*Grant, uint64, error) {
	e, err := l.kv.Get(ctx, GrantKey(jobID, dlqSeq))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("ledger grant: %w", err)
	}
	var g Grant
	if err := json.Unmarshal(e.Value(), &g); err != nil || g.JobID != jobID || g.DLQSeq != dlqSeq {
		return nil, 0, fmt.Errorf("ledger grant: corrupt grant under %s", GrantKey(jobID, dlqSeq))
	}
	return &g, e.Revision(), nil
}

// UseGrant consumes the grant for (jobID, dlqSeq) by compare-and-set, on
// behalf of a replay that is about to replace the job's record at revision
// recordRev. ok is false when there is no such grant or it was used for
// another record revision; a grant used for recordRev itself (its consumer
// died before replacing the record) is granted again.
func (l *Ledger) UseGrant(ctx context.Context, jobID string, dlqSeq, recordRev uint64) (ok bool, err error) {
	for {
		g, rev, err := l.grant(ctx, jobID, dlqSeq)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if g.State == GrantUsed {
			return g.RecordRev == recordRev, nil
		}
		g.State, g.RecordRev, g.UsedAt = GrantUsed, recordRev, time.Now().UTC()
		b, err := json.Marshal(g)
		if err != nil {
			return false, err
		}
		_, err = l.kv.Update(ctx, GrantKey(jobID, dlqSeq), b, rev)
		if err == nil {
			return true, nil
		}
		if !isConflict(err) {
			return false, fmt.Errorf("ledger grant: %w", err)
		}
	}
}
