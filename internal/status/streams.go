package status

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Names of the contract's streams this package reads.
const (
	ResultsStream    = topology.StreamResults
	DLQStream        = topology.StreamDLQ
	dlqSubjectPrefix = job.DLQSubjectPrefix
)

// Streams reads the result and dead-letter streams for the page.
type Streams struct {
	js jetstream.JetStream
}

// NewStreams returns a reader on js.
func NewStreams(js jetstream.JetStream) *Streams { return &Streams{js: js} }

// Recent returns the last n results of MFA_RESULTS, newest first, without
// their data.
func (s *Streams) Recent(ctx context.Context, n int) ([]history.Entry, error) {
	if n <= 0 {
		return nil, nil
	}
	st, err := s.js.Stream(ctx, ResultsStream)
	if err != nil {
		return nil, fmt.Errorf("status: %s: %w", ResultsStream, err)
	}
	state := st.CachedInfo().State
	if state.Msgs == 0 {
		return []history.Entry{}, nil
	}
	start := state.FirstSeq
	if state.LastSeq >= uint64(n) && state.LastSeq-uint64(n)+1 > start {
		start = state.LastSeq - uint64(n) + 1
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: 30 * time.Second,
		Replicas:          1,
	})
	if err != nil {
		return nil, fmt.Errorf("status: read %s: %w", ResultsStream, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = st.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	want := int(min(cons.CachedInfo().NumPending, uint64(n)))
	out := make([]history.Entry, 0, want)
	if want == 0 {
		return out, nil
	}
	batch, err := cons.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("status: read %s: %w", ResultsStream, err)
	}
	for m := range batch.Messages() {
		e, err := history.EntryFromResult(m.Data())
		if err != nil {
			// Not a result this worker wrote; show where it is.
			e = history.Entry{Type: "?", Outcome: "unreadable"}
			if md, merr := m.Metadata(); merr == nil {
				e.FinishedAt = md.Timestamp
			}
		}
		out = append(out, e)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return nil, fmt.Errorf("status: read %s: %w", ResultsStream, err)
	}
	slices.Reverse(out)
	return out, nil
}

// DeadLettersByType counts the dead letters MFA_DLQ holds now, by job type
// (the last token of mfa.dlq.<type>).
func (s *Streams) DeadLettersByType(ctx context.Context) (map[string]uint64, error) {
	st, err := s.js.Stream(ctx, DLQStream)
	if err != nil {
		return nil, fmt.Errorf("status: %s: %w", DLQStream, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(dlqSubjectPrefix+">"))
	if err != nil {
		return nil, fmt.Errorf("status: %s: %w", DLQStream, err)
	}
	out := make(map[string]uint64, len(info.State.Subjects))
	for subj, n := range info.State.Subjects {
		out[strings.TrimPrefix(subj, dlqSubjectPrefix)] += n
	}
	return out, nil
}
