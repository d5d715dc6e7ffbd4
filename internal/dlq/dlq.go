// Package dlq holds the operators' tools for dead letters, on the client
// side (`worker dlq`): listing MFA_DLQ and replaying its jobs under a
// ledger grant. The server-side query service is package ops.
package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
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
	// Truncated and Redacted: the body is not the job's (cut to 64 KiB, or
	// replaced by its size and hash); such a dead letter cannot be replayed.
	Truncated bool `json:"truncated,omitempty"`
	Redacted  bool `json:"redacted,omitempty"`
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
			Truncated: m.Header.Get(job.HeaderBodyTruncated) == "true", Redacted: m.Header.Get(job.HeaderBodyRedacted) == "true",
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

// RefusedError is a dead letter that Replay will not re-drive; nothing was
// written or published for it.
type RefusedError struct {
	Seq    uint64
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("replay DLQ #%d refused: %s", e.Seq, e.Reason)
}

// ReplayTarget checks a dead letter and returns the job subject it would be
// replayed to and the job id its grant is for. The type is the DLQ
// subject's last token (mfa.dlq.<type>), never a header, and the body's
// "type" must agree with it; the job id is the body's, and the Mfa-Job-Id
// header must agree with it.
func ReplayTarget(d DeadLetter) (subject, jobID string, err error) {
	refuse := func(format string, a ...any) (string, string, error) {
		return "", "", &RefusedError{Seq: d.Seq, Reason: fmt.Sprintf(format, a...)}
	}
	typ := job.Type(strings.TrimPrefix(d.Subject, job.DLQSubjectPrefix))
	if !strings.HasPrefix(d.Subject, job.DLQSubjectPrefix) || !typ.Valid() {
		return refuse("subject %.80q is not mfa.dlq.<job type>", d.Subject)
	}
	if d.Truncated || d.Redacted {
		return refuse("the stored body is not the job's (truncated or redacted); publish the job again under a new id")
	}
	var body struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal(d.Body, &body); err != nil {
		return refuse("the body is not a JSON job")
	}
	if body.Type != string(typ) {
		return refuse("the body's type %.40q does not match the DLQ subject's type %q", body.Type, typ)
	}
	if body.ID == "" || len(body.ID) > 128 {
		return refuse("the body has no valid job id")
	}
	if d.JobID != body.ID {
		return refuse("the Mfa-Job-Id header does not match the body's id")
	}
	// A scoped cancel goes back on its scope: a replay must not give it
	// the operators' bare subject, which may end any job.
	if scope, ok := strings.CutPrefix(d.OriginalSubject, job.CancelSubject("")+"."); ok && typ == job.TypeCancel && job.ValidScope(scope) {
		return job.CancelSubject(scope), body.ID, nil
	}
	return typ.Subject(), body.ID, nil
}

// Replay re-drives a dead letter: it writes a one-time replay grant for
// (job id, DLQ sequence) into MFA_LEDGER (which needs write access to the
// bucket), publishes the body to mfa.jobs.<type> with Mfa-Replay: <DLQ
// sequence> and the new Nats-Msg-Id <id>:replay:<DLQ sequence>, then
// removes the dead letter. A dead letter that ReplayTarget refuses gets a
// *RefusedError and nothing is written.
func Replay(ctx context.Context, js jetstream.JetStream, d DeadLetter) error {
	subject, id, err := ReplayTarget(d)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, topology.BucketLedger)
	if err != nil {
		return fmt.Errorf("replay DLQ #%d: open %s: %w", d.Seq, topology.BucketLedger, err)
	}
	if err := ledger.New(kv).WriteGrant(ctx, id, d.Seq); err != nil {
		return fmt.Errorf("replay DLQ #%d: write the replay grant: %w", d.Seq, err)
	}
	m := nats.NewMsg(subject)
	m.Data = d.Body
	m.Header.Set(job.HeaderReplay, job.ReplayTag(d.Seq))
	m.Header.Set(jetstream.MsgIDHeader, job.ReplayMsgID(id, d.Seq))
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
