package status

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Retry is a job given back for a retry, as its ledger record tells.
type Retry struct {
	JobID         string
	Type          string
	UserID        int64
	Attempts      int
	LastErrorCode string
	NextRetryAt   time.Time
}

// RetryLister lists the jobs waiting for a retry.
type RetryLister interface {
	// Retrying returns up to limit jobs, the soonest retry first, and
	// how many there are; cut reports that the scan stopped early.
	Retrying(ctx context.Context, limit int) (rs []Retry, total int, cut bool, err error)
}

// Retry scan bounds. A job waiting for a retry has its ledger record
// rewritten at each failed delivery, and the nak delays are minutes at most
// (WORKER_RETRY_MAX_DELAY, 2 min by default), so only the records written in the last
// RetryWindow are read, at most retryScanMax of them: the page's cost
// follows the recent job rate, not the ledger's size.
const (
	RetryWindow  = 30 * time.Minute
	retryScanMax = 20_000
)

// Retrying implements RetryLister: it reads the ledger records written in
// the last RetryWindow (the bucket keeps one value per job, so each
// job is read once) and keeps the running ones with a failed delivery.
func (s *Streams) Retrying(ctx context.Context, limit int) ([]Retry, int, bool, error) {
	stream := "KV_" + topology.BucketLedger
	prefix := "$KV." + topology.BucketLedger + ".job."
	since := time.Now().Add(-RetryWindow)
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return nil, 0, false, fmt.Errorf("status: %s: %w", topology.BucketLedger, err)
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     prefix + ">",
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &since,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: 30 * time.Second,
		Replicas:          1,
	})
	if err != nil {
		return nil, 0, false, fmt.Errorf("status: read %s: %w", topology.BucketLedger, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = st.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	pending := int(cons.CachedInfo().NumPending)
	cut := pending > retryScanMax
	pending = min(pending, retryScanMax)
	var out []Retry
	for read := 0; read < pending; {
		batch, err := cons.Fetch(min(500, pending-read), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, 0, false, fmt.Errorf("status: read %s: %w", topology.BucketLedger, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if op := m.Headers().Get("KV-Operation"); op != "" {
				continue // a delete or purge
			}
			var rec ledger.Record
			if json.Unmarshal(m.Data(), &rec) != nil || rec.State != ledger.Running || rec.Attempts == 0 {
				continue
			}
			id, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(m.Subject(), prefix))
			if err != nil {
				continue
			}
			out = append(out, Retry{JobID: string(id), Type: rec.Type, UserID: rec.UserID, Attempts: rec.Attempts,
				LastErrorCode: rec.LastErrorCode, NextRetryAt: rec.NextRetryAt})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, 0, false, fmt.Errorf("status: read %s: %w", topology.BucketLedger, err)
		}
		if n == 0 {
			break // the rest expired meanwhile
		}
		read += n
	}
	slices.SortFunc(out, func(a, b Retry) int { return a.NextRetryAt.Compare(b.NextRetryAt) })
	total := len(out)
	return out[:min(len(out), limit)], total, cut, nil
}
