package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Count returns a stream's message count, -1 when it cannot be read.
func Count(js jetstream.JetStream, stream string) int {
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		return -1
	}
	info, err := s.Info(context.Background())
	if err != nil {
		return -1
	}
	return int(info.State.Msgs)
}

// Msg is a message read back from a stream.
type Msg struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
}

// Result decodes the message as a result.
func (m Msg) Result() (job.Result, error) {
	var r job.Result
	err := json.Unmarshal(m.Data, &r)
	return r, err
}

// ReadStream reads a stream from its first message to its last, in order,
// skipping deleted messages.
func ReadStream(ctx context.Context, js jetstream.JetStream, stream string) ([]Msg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	out := make([]Msg, 0, info.State.Msgs)
	for {
		// FetchNoWait ends as soon as nothing more is at hand; every batch
		// is read to its end so that no fetch is left running.
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return out, err
		}
		done := false
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil || done {
				continue
			}
			out = append(out, Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			done = md.NumPending == 0 || md.Sequence.Stream >= info.State.LastSeq
		}
		if done {
			return out, nil
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return out, err
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
}

// Results reads every result of the bed's server, in order.
func (b *Bed) Results() ([]job.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return Results(ctx, b.JS)
}

// Results reads every result of MFA_RESULTS, in order.
func Results(ctx context.Context, js jetstream.JetStream) ([]job.Result, error) {
	msgs, err := ReadStream(ctx, js, topology.StreamResults)
	if err != nil {
		return nil, err
	}
	out := make([]job.Result, 0, len(msgs))
	for _, m := range msgs {
		r, err := m.Result()
		if err != nil {
			return out, fmt.Errorf("result #%d: %w", m.Seq, err)
		}
		out = append(out, r)
	}
	return out, nil
}
