package leaver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/pause"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Names of the indexer's durable consumers and what they read.
const (
	ConsumerResults   = "mfa-leavers"
	ConsumerDLQ       = "mfa-leavers-dlq"
	ResultsStream     = topology.StreamResults
	DLQStream         = topology.StreamDLQ
	OffboardResults   = job.ResultSubjectPrefix + "offboard.>"
	IngestDeadLetters = job.DLQSubjectPrefix + "ingest"
)

// ParseResult reads an offboard result body (schemas/result.v1.json). Data
// fields it reads beyond the contract's removed_device_ids, when present:
// verified_at, removed_factors (objects with auth_factor_name or type) or
// removed_factor_types, cancelled_by, cancel_scope, effective_at.
func ParseResult(body []byte, seq uint64) (Result, error) {
	var r struct {
		JobID       string    `json:"job_id"`
		Type        string    `json:"type"`
		UserID      int64     `json:"user_id"`
		User        *Selector `json:"user"`
		Outcome     string    `json:"outcome"`
		Source      string    `json:"source"`
		StartedAt   time.Time `json:"started_at"`
		FinishedAt  time.Time `json:"finished_at"`
		EffectiveAt time.Time `json:"effective_at"`
		Error       *struct {
			Code string `json:"code"`
		} `json:"error"`
		Data struct {
			Removed        []json.RawMessage `json:"removed_device_ids"`
			VerifiedAt     time.Time         `json:"verified_at"`
			RemovedFactors []struct {
				AuthFactorName string `json:"auth_factor_name"`
				Type           string `json:"type"`
			} `json:"removed_factors"`
			RemovedTypes []string  `json:"removed_factor_types"`
			CancelledBy  string    `json:"cancelled_by"`
			CancelScope  string    `json:"cancel_scope"`
			EffectiveAt  time.Time `json:"effective_at"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return Result{}, fmt.Errorf("leaver: decode result: %w", err)
	}
	if r.JobID == "" || r.Outcome == "" {
		return Result{}, errors.New("leaver: result lacks job_id or outcome")
	}
	if r.Type != "" && r.Type != "offboard" {
		return Result{}, fmt.Errorf("leaver: result of a %s job, not an offboard", r.Type)
	}
	res := Result{
		Seq: seq, JobID: r.JobID, UserID: r.UserID, Outcome: r.Outcome, Source: r.Source,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, Removed: len(r.Data.Removed),
		VerifiedAt: r.Data.VerifiedAt, CancelledBy: r.Data.CancelledBy, CancelScope: r.Data.CancelScope,
		EffectiveAt: r.EffectiveAt,
	}
	if res.EffectiveAt.IsZero() {
		res.EffectiveAt = r.Data.EffectiveAt
	}
	if r.User != nil && !r.User.IsZero() {
		res.User = r.User
	}
	if r.Error != nil {
		res.ErrorCode = r.Error.Code
	}
	types := r.Data.RemovedTypes
	for _, f := range r.Data.RemovedFactors {
		switch {
		case f.AuthFactorName != "":
			types = append(types, f.AuthFactorName)
		case f.Type != "":
			types = append(types, f.Type)
		}
	}
	res.RemovedTypes = types
	return res, nil
}

// ProvisionConsumers creates the indexer's two durable consumers (shared
// by every replica). MFA_RESULTS and MFA_DLQ must exist.
func ProvisionConsumers(ctx context.Context, js jetstream.JetStream) (results, dlq jetstream.Consumer, err error) {
	results, err = js.CreateOrUpdateConsumer(ctx, ResultsStream, jetstream.ConsumerConfig{
		Durable:       ConsumerResults,
		Description:   "Offboard results into the leaver registry (MFA_LEAVERS)",
		FilterSubject: OffboardResults,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 256,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("leaver: provision consumer %s: %w", ConsumerResults, err)
	}
	dlq, err = js.CreateOrUpdateConsumer(ctx, DLQStream, jetstream.ConsumerConfig{
		Durable:       ConsumerDLQ,
		Description:   "Dead-lettered HR events into the leaver registry (MFA_LEAVERS)",
		FilterSubject: IngestDeadLetters,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 64,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("leaver: provision consumer %s: %w", ConsumerDLQ, err)
	}
	return results, dlq, nil
}

// Observer is told of each finished offboard the indexer applies; the
// metrics implement it.
type Observer interface {
	OffboardFinished(lag time.Duration)
}

// JobTimes tells the job time (the effective time) of a user's latest
// offboard and its job id; *ledger.People (MFA_PEOPLE, where the job path
// records it before the result) implements it.
type JobTimes interface {
	Offboarded(ctx context.Context, userID int64) (time.Time, string, error)
}

// Indexer keeps MFA_LEAVERS up to date from the result stream and the
// ingest dead letters.
type Indexer struct {
	store   *Store
	results jetstream.Consumer
	dlq     jetstream.Consumer
	obs     Observer
	times   JobTimes
	log     *slog.Logger
}

// NewIndexer returns an indexer; obs may be nil.
func NewIndexer(store *Store, results, dlq jetstream.Consumer, obs Observer, log *slog.Logger) *Indexer {
	return &Indexer{store: store, results: results, dlq: dlq, obs: obs, log: log}
}

// Run reads both consumers until ctx ends.
func (ix *Indexer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs <- ix.consume(ctx, ix.results, ix.applyResult) }()
	go func() { defer wg.Done(); errs <- ix.consume(ctx, ix.dlq, ix.applyDeadLetter) }()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// errSkip marks a message that cannot be applied ever: it is acked (Term)
// after a log line.
var errSkip = errors.New("not applicable")

func (ix *Indexer) consume(ctx context.Context, cons jetstream.Consumer, apply func(context.Context, jetstream.Msg, uint64) error) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(32), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return fmt.Errorf("leaver: consume: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			ix.log.Warn("reading messages for the leaver registry failed; retrying", "err", err)
			if !pause.For(ctx, time.Second) {
				return nil
			}
			continue
		}
		var seq uint64
		if md, err := msg.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = apply(actx, msg, seq)
		cancel()
		switch {
		case errors.Is(err, errSkip):
			ix.log.Warn("a message is not for the leaver registry; skipped", "subject", msg.Subject(), "seq", seq, "err", err)
			_ = msg.Term()
		case err != nil:
			ix.log.Warn("updating the leaver registry failed; it will be retried", "subject", msg.Subject(), "seq", seq, "err", err)
			_ = msg.NakWithDelay(time.Second)
		default:
			_ = msg.Ack()
		}
	}
}

func (ix *Indexer) applyResult(ctx context.Context, msg jetstream.Msg, seq uint64) error {
	res, err := ParseResult(msg.Data(), seq)
	if err != nil {
		return fmt.Errorf("%w: %v", errSkip, err)
	}
	r, applied, err := ix.store.applyResult(ctx, res, ix.times)
	if err != nil {
		return err
	}
	if ix.obs != nil && applied && (res.Outcome == "succeeded" || res.Outcome == "noop") && r.JobID == res.JobID && !r.EffectiveAt.IsZero() {
		ix.obs.OffboardFinished(res.FinishedAt.Sub(r.EffectiveAt))
	}
	return nil
}

func (ix *Indexer) applyDeadLetter(ctx context.Context, msg jetstream.Msg, seq uint64) error {
	h := msg.Headers()
	d := DeadLetter{Seq: seq, Source: h.Get("Hr-Source"), EventID: h.Get("Hr-Event-Id"), Code: h.Get(job.HeaderErrorCode)}
	if md, err := msg.Metadata(); err == nil {
		d.At = md.Timestamp.UTC()
	}
	if d.EventID == "" {
		// No event id: the stream sequence names the dead letter.
		d.EventID = fmt.Sprintf("dlq:%d", seq)
	}
	_, err := ix.store.ApplyDeadLetter(ctx, d)
	return err
}
