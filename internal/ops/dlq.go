// Package ops holds the operators' tools over NATS: listing and replaying
// dead letters, and the read-only query service.
package ops

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// DeadLetter is one message of MFA_DLQ.
type DeadLetter struct {
	Seq             uint64    `json:"seq"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	JobID           string    `json:"job_id,omitempty"`
	Reason          string    `json:"reason"`
	ErrorCode       string    `json:"error_code"`
	Deliveries      int       `json:"deliveries"`
	OriginalSubject string    `json:"original_subject"`
	// JobTime is the job's time (Mfa-Job-Time), handed on to a replay.
	JobTime string `json:"job_time,omitempty"`
	Body    []byte `json:"-"`
}

// DeadLetterFilter selects dead letters; empty fields match all.
type DeadLetterFilter struct {
	Type  string
	Code  string
	Seqs  []uint64
	Limit int
}

func (f DeadLetterFilter) match(d DeadLetter) bool {
	if f.Type != "" && d.Subject != job.DLQSubjectPrefix+f.Type {
		return false
	}
	if f.Code != "" && d.ErrorCode != f.Code {
		return false
	}
	if len(f.Seqs) > 0 {
		for _, s := range f.Seqs {
			if s == d.Seq {
				return true
			}
		}
		return false
	}
	return true
}

// ListDeadLetters reads MFA_DLQ in order.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, f DeadLetterFilter) ([]DeadLetter, error) {
	s, err := js.Stream(ctx, topology.StreamDLQ)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", topology.StreamDLQ, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", topology.StreamDLQ, err)
	}
	var out []DeadLetter
	if info.State.Msgs == 0 {
		return out, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("read %s #%d: %w", topology.StreamDLQ, seq, err)
		}
		n, _ := strconv.Atoi(m.Header.Get(job.HeaderDeliveries))
		d := DeadLetter{
			Seq: seq, Subject: m.Subject, Time: m.Time, JobID: m.Header.Get(job.HeaderJobID),
			Reason: m.Header.Get(job.HeaderReason), ErrorCode: m.Header.Get(job.HeaderErrorCode), Deliveries: n,
			OriginalSubject: m.Header.Get(job.HeaderOriginalSubject), Body: m.Data,
			JobTime: m.Header.Get(job.HeaderJobTime),
		}
		if f.match(d) {
			out = append(out, d)
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
		}
	}
	return out, nil
}

// Replay publishes a dead letter back to its job subject under a new
// Nats-Msg-Id and with the Mfa-Replay header, so that the job runs again
// although the ledger holds its failure, then removes it from the DLQ.
func Replay(ctx context.Context, js jetstream.JetStream, d DeadLetter) error {
	subject := d.OriginalSubject
	if subject == "" || len(subject) <= len(job.SubjectPrefix) || subject[:len(job.SubjectPrefix)] != job.SubjectPrefix {
		subject = job.SubjectPrefix + d.Subject[len(job.DLQSubjectPrefix):]
	}
	tag := job.ReplayTag(d.Seq)
	m := nats.NewMsg(subject)
	m.Data = d.Body
	m.Header.Set(job.HeaderReplay, tag)
	m.Header.Set(jetstream.MsgIDHeader, job.ReplayMsgID(d.JobID, tag))
	if d.JobTime != "" {
		m.Header.Set(job.HeaderJobTime, d.JobTime)
	}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("replay DLQ #%d: %w", d.Seq, err)
	}
	s, err := js.Stream(ctx, topology.StreamDLQ)
	if err != nil {
		return fmt.Errorf("replay DLQ #%d: republished, but could not open the DLQ to remove it: %w", d.Seq, err)
	}
	if err := s.DeleteMsg(ctx, d.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("replay DLQ #%d: republished, but not removed from the DLQ: %w", d.Seq, err)
	}
	return nil
}
