// Package audit keeps the operators' trail: every operator action that
// changes what the worker will do (releasing or discarding held jobs,
// clearing a person's offboard record) is published as one JSON record on
// mfa.audit.<area>.<action> and stored in the stream MFA_AUDIT.
//
// The stream has limits retention and keeps records for MaxAge (400 days by
// default, as auditors ask months later); each record carries a Nats-Msg-Id
// derived from what it records, so an operator's command run twice after a
// lost acknowledgement stores it once. Records hold ids, sources, counts,
// the operator's name and reason; never a job body or a secret.
package audit

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// Stream is the audit stream; SubjectPrefix its subjects' prefix.
const (
	Stream        = job.AuditStream
	SubjectPrefix = job.AuditSubjectPrefix
	// DefaultMaxAge is how long records are kept.
	DefaultMaxAge = 400 * 24 * time.Hour
)

// Actions recorded on mfa.audit.<action>.
const (
	ActionHoldRelease = "hold.release"
	ActionHoldDiscard = "hold.discard"
	ActionPeopleClear = "people.clear"
)

// Record is one operator action.
type Record struct {
	Action string    `json:"action"`
	At     time.Time `json:"at"`
	// By names the operator (the command's --by, else the OS user);
	// Reason is the operator's own words.
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
	// What the action was applied to: a source, job ids, a OneLogin user.
	Source string   `json:"source,omitempty"`
	JobIDs []string `json:"job_ids,omitempty"`
	UserID int64    `json:"user_id,omitempty"`
	Count  int      `json:"count"`
	// Details holds the action's own fields (the cleared record's time and
	// job id, for example).
	Details map[string]string `json:"details,omitempty"`
}

// MaxJobIDs is how many job ids one record lists; Count says how many the
// action touched.
const MaxJobIDs = 500

// Config sets up the stream.
type Config struct {
	Replicas int
	MaxAge   time.Duration
}

// DefaultConfig is the stream of a single-node deployment.
func DefaultConfig() Config { return Config{Replicas: 1, MaxAge: DefaultMaxAge} }

// Provision creates or updates MFA_AUDIT; idempotent. Zero fields take
// DefaultConfig's.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	d := DefaultConfig()
	cfg.Replicas = cmp.Or(cfg.Replicas, d.Replicas)
	cfg.MaxAge = cmp.Or(cfg.MaxAge, d.MaxAge)
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "Operators' actions: hold releases and discards, people record clears",
		Subjects:    []string{SubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.MaxAge,
		Duplicates:  10 * time.Minute,
		DenyDelete:  true,
		DenyPurge:   true,
	})
	if err != nil {
		return fmt.Errorf("audit: provision stream %s: %w", Stream, err)
	}
	return nil
}

// Publisher stores a message in JetStream (a jetstream.JetStream).
type Publisher interface {
	PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Publish stores r on mfa.audit.<r.Action>, with Nats-Msg-Id msgID when
// not empty, and waits for JetStream to store it. A missing stream is an
// error, which the caller reports.
func Publish(ctx context.Context, js Publisher, r Record, msgID string) error {
	if len(r.JobIDs) > MaxJobIDs {
		r.JobIDs = r.JobIDs[:MaxJobIDs]
	}
	if r.At.IsZero() {
		r.At = time.Now()
	}
	r.At = r.At.UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	m := nats.NewMsg(SubjectPrefix + r.Action)
	m.Data = b
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("audit record %s (is %s provisioned? the worker creates it at start): %w", r.Action, Stream, err)
	}
	return nil
}
