package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/pause"
)

// Index reads results from cons (a durable consumer on MFA_RESULTS) and
// appends each to store, until ctx ends. It is how the worker keeps the
// index: off the job path, so a job's settlement never waits for it, and
// durable, so a result published just before a crash is indexed by the
// next replica to read the consumer. Each entry is appended with the
// result's own Nats-Msg-Id, so one redelivered is stored once. A message
// that is not a result is logged (subject and sequence only) and dropped.
//
// Alongside, once per stream, it copies the kept entries of the earlier
// layout to their own subjects (see Store.UpgradeLayout); Index returns once
// that has stopped too.
func Index(ctx context.Context, cons jetstream.Consumer, store *Store, log *slog.Logger) error {
	upgraded := make(chan struct{})
	go func() {
		defer close(upgraded)
		n, err := store.UpgradeLayout(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("copying the history's kept entries to their own subjects failed; retried at the next start", "copied", n, "err", err)
		case err == nil && n > 0:
			log.Info("copied the history's kept entries of the earlier layout to their own subjects", "copied", n)
		}
	}()
	defer func() { <-upgraded }()
	it, err := cons.Messages(jetstream.PullMaxMessages(batchMax), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return fmt.Errorf("history: consume results: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	// The reader hands messages over as they come; the loop below takes
	// one, then every other one already waiting, and indexes them as one
	// batch.
	msgs := make(chan jetstream.Msg, batchMax)
	readErr := make(chan error, 1)
	go func() {
		defer close(msgs)
		for {
			msg, err := it.Next()
			if err == nil {
				msgs <- msg
				continue
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			readErr <- err
			if !pause.For(ctx, time.Second) {
				return
			}
		}
	}()
	batch := make([]jetstream.Msg, 0, batchMax)
	for {
		select {
		case err := <-readErr:
			log.Warn("reading results for the history index failed; retrying", "err", err)
			continue
		case msg, ok := <-msgs:
			if !ok {
				return nil
			}
			batch = append(batch[:0], msg)
		}
	more:
		for len(batch) < batchMax {
			select {
			case msg, ok := <-msgs:
				if !ok {
					break more
				}
				batch = append(batch, msg)
			default:
				break more
			}
		}
		indexBatch(ctx, batch, store, log)
	}
}

// batchMax is the most results the index pulls and appends at once.
const batchMax = 64

// indexBatch appends the results of a batch of messages and acks each
// once its entry is stored; a message that is not a result is logged
// (subject and sequence only) and terminated, one whose entry could not be
// stored is given back for a retry in a second.
func indexBatch(ctx context.Context, batch []jetstream.Msg, store *Store, log *slog.Logger) {
	ps := make([]Pending, 0, len(batch))
	kept := make([]jetstream.Msg, 0, len(batch))
	for _, msg := range batch {
		var seq uint64
		if md, err := msg.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		e, err := EntryFromResult(msg.Data())
		if err != nil {
			log.Warn("a message on the result stream is not a result; not indexed", "subject", msg.Subject(), "seq", seq)
			_ = msg.Term()
			continue
		}
		id := msg.Headers().Get(jetstream.MsgIDHeader)
		if id == "" {
			id = fmt.Sprintf("results:%d", seq)
		}
		ps, kept = append(ps, Pending{Entry: e, MsgID: id}), append(kept, msg)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	errs := store.AppendAll(actx, ps)
	cancel()
	for i, msg := range kept {
		if errs[i] != nil {
			log.Warn("indexing a result failed; it will be retried", "job_id", ps[i].Entry.JobID, "err", errs[i])
			_ = msg.NakWithDelay(time.Second)
			continue
		}
		_ = msg.Ack()
	}
}

// Start runs Index in the background when cons is set, logging why it
// stopped if it fails; the returned channel is closed once it has ended.
func Start(ctx context.Context, cons jetstream.Consumer, store *Store, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	if cons == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		if err := Index(ctx, cons, store, log); err != nil {
			log.Error("the history index stopped; results are not indexed until the next start", "err", err)
		}
	}()
	return done
}
