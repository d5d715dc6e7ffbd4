package leaver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/audit"
)

// Service is the registry as a replica runs it: the store, the view and
// the indexer.
type Service struct {
	Store *Store
	View  *View
	ix    *Indexer
}

// Start provisions MFA_LEAVERS and the indexer's consumers (MFA_RESULTS and
// MFA_DLQ must exist) and returns the service; Run starts it. obs (the
// metrics) may be nil.
func Start(ctx context.Context, js jetstream.JetStream, replicas int, obs Observer, log *slog.Logger) (*Service, error) {
	kv, err := ProvisionBucket(ctx, js, replicas)
	if err != nil {
		return nil, err
	}
	results, dlq, err := ProvisionConsumers(ctx, js)
	if err != nil {
		return nil, err
	}
	st := NewStore(kv)
	return &Service{Store: st, View: NewView(kv, log), ix: NewIndexer(st, results, dlq, obs, log)}, nil
}

// SetObserver makes the indexer report finished offboards to obs (the
// metrics, which read the view: hence after Start). Call it before Run.
func (s *Service) SetObserver(obs Observer) { s.ix.obs = obs }

// SetJobTimes gives the indexer the job times of offboards whose result
// does not carry one (MFA_PEOPLE). Call it before Run.
func (s *Service) SetJobTimes(t JobTimes) { s.ix.times = t }

// Run keeps the view and the indexer going until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	var verr, ierr error
	wg.Add(2)
	go func() { defer wg.Done(); verr = s.View.Run(ctx) }()
	go func() { defer wg.Done(); ierr = s.ix.Run(ctx) }()
	wg.Wait()
	return errors.Join(verr, ierr)
}

// AuditAction is the audit action of a close: records go to
// mfa.audit.leavers.close in MFA_AUDIT (package audit).
const AuditAction = "leavers.close"

// AuditSubject is where a closed record is audited.
const AuditSubject = audit.SubjectPrefix + AuditAction

// CloseAudited closes an open record and stores an audit record on
// AuditSubject (stream MFA_AUDIT). The closure (who, why, when, what the
// record was open for) is also kept in the record itself; when the audit
// cannot be stored the error says that the record was closed.
func CloseAudited(ctx context.Context, js jetstream.JetStream, st *Store, key, by, reason string) (Record, error) {
	by, reason = strings.TrimSpace(by), strings.TrimSpace(reason)
	if reason == "" {
		return Record{}, errors.New("leaver: a close needs a reason")
	}
	if len(reason) > 1000 || strings.ContainsAny(reason, "\x00\r") {
		return Record{}, errors.New("leaver: a reason is at most 1000 characters of text")
	}
	if by == "" {
		by = "unknown"
	}
	rec, err := st.Close(ctx, key, by, reason)
	if err != nil {
		return Record{}, err
	}
	r := audit.Record{Action: AuditAction, At: rec.Closure.At, By: by, Reason: reason, UserID: rec.UserID, Count: 1,
		Details: map[string]string{"key": rec.Key, "was_reason": rec.Closure.WasReason}}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := audit.Publish(actx, js, r, AuditAction+":"+rec.Key+":"+rec.Closure.At.Format(time.RFC3339Nano)); err != nil {
		return rec, fmt.Errorf("leaver: record %s closed, but %w", rec.Key, err)
	}
	return rec, nil
}

// PublishEvent publishes m to JetStream when a stream captures its
// subject, else on core NATS (and flushes). stored says which.
func PublishEvent(ctx context.Context, js jetstream.JetStream, m *nats.Msg) (stored bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = js.StreamNameBySubject(ctx, m.Subject)
	switch {
	case err == nil:
		_, err = js.PublishMsg(ctx, m)
		return err == nil, err
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if err := js.Conn().PublishMsg(m); err != nil {
			return false, err
		}
		return false, js.Conn().FlushWithContext(ctx)
	}
	return false, err
}
