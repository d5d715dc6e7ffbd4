package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// Names of the JetStream objects the worker owns.
const (
	StreamJobs     = "MFA_JOBS"
	StreamResults  = "MFA_RESULTS"
	StreamDLQ      = "MFA_DLQ"
	BucketLedger   = "MFA_LEDGER"
	BucketLocks    = "MFA_LOCKS"
	ConsumerUrgent = "mfa-worker-urgent"
	ConsumerNormal = "mfa-worker"
)

// Topology configures the JetStream objects. Zero fields take the defaults
// noted.
type Topology struct {
	Replicas        int           // 1; 3 in a cluster
	DuplicateWindow time.Duration // 10m, for jobs and results
	ResultsMaxAge   time.Duration // 7 days
	DLQMaxAge       time.Duration // 30 days
	LedgerTTL       time.Duration // 7 days
}

func (t *Topology) setDefaults() {
	if t.Replicas == 0 {
		t.Replicas = 1
	}
	if t.DuplicateWindow == 0 {
		t.DuplicateWindow = 10 * time.Minute
	}
	if t.ResultsMaxAge == 0 {
		t.ResultsMaxAge = 7 * 24 * time.Hour
	}
	if t.DLQMaxAge == 0 {
		t.DLQMaxAge = 30 * 24 * time.Hour
	}
	if t.LedgerTTL == 0 {
		t.LedgerTTL = 7 * 24 * time.Hour
	}
}

// Validate checks the topology after defaults and returns the first problem
// as a *SettingError.
func (t Topology) Validate() error {
	t.setDefaults()
	switch {
	case t.Replicas != 1 && t.Replicas != 3 && t.Replicas != 5:
		return &SettingError{"WORKER_STREAM_REPLICAS", fmt.Sprintf("must be 1, 3 or 5, got %d", t.Replicas)}
	case t.DuplicateWindow < 10*time.Minute:
		return &SettingError{"WORKER_DUPLICATE_WINDOW", fmt.Sprintf("must be at least 10m, got %v", t.DuplicateWindow)}
	case t.ResultsMaxAge < time.Hour:
		return &SettingError{"WORKER_RESULTS_MAX_AGE", fmt.Sprintf("must be at least 1h, got %v", t.ResultsMaxAge)}
	case t.DLQMaxAge < time.Hour:
		return &SettingError{"WORKER_DLQ_MAX_AGE", fmt.Sprintf("must be at least 1h, got %v", t.DLQMaxAge)}
	case t.LedgerTTL < time.Hour:
		return &SettingError{"WORKER_LEDGER_TTL", fmt.Sprintf("must be at least 1h, got %v", t.LedgerTTL)}
	}
	return nil
}

func urgentSubjects() []string {
	return []string{job.TypeOffboard.Subject(), job.TypeRemove.Subject()}
}

func normalSubjects() []string {
	var s []string
	for _, t := range job.Types {
		if !t.Urgent() {
			s = append(s, t.Subject())
		}
	}
	return s
}

// Objects are the provisioned JetStream objects the pipeline uses.
type Objects struct {
	Urgent, Normal jetstream.Consumer
	Ledger, Locks  jetstream.KeyValue
}

// Provision creates or updates the streams, buckets and consumers. It is
// idempotent and safe to run from every replica at once.
func Provision(ctx context.Context, js jetstream.JetStream, topo Topology, cfg Config) (*Objects, error) {
	topo.setDefaults()
	cfg.setDefaults()
	if err := topo.Validate(); err != nil {
		return nil, err
	}
	var subjects []string
	for _, t := range job.Types {
		subjects = append(subjects, t.Subject())
	}
	streams := []jetstream.StreamConfig{{
		Name:        StreamJobs,
		Description: "MFA jobs; only the six job subjects are accepted, so nothing unhandled sits here",
		Subjects:    subjects,
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    topo.Replicas,
		Duplicates:  topo.DuplicateWindow,
	}, {
		Name:        StreamResults,
		Description: "One result event per job",
		Subjects:    []string{job.ResultSubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    topo.Replicas,
		MaxAge:      topo.ResultsMaxAge,
		Duplicates:  topo.DuplicateWindow,
	}, {
		Name:        StreamDLQ,
		Description: "Failed, rejected and expired jobs; body is the original job",
		Subjects:    []string{job.DLQSubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    topo.Replicas,
		MaxAge:      topo.DLQMaxAge,
		Duplicates:  topo.DuplicateWindow,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("provision stream %s: %w", sc.Name, err)
		}
	}
	objs := &Objects{}
	var err error
	objs.Ledger, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketLedger, Description: "Idempotency record per job id",
		TTL: topo.LedgerTTL, History: 1, Storage: jetstream.FileStorage, Replicas: topo.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", BucketLedger, err)
	}
	objs.Locks, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketLocks, Description: "Per-user locks; the age limit is the lease",
		TTL: cfg.Lease, History: 1, Storage: jetstream.FileStorage, Replicas: topo.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", BucketLocks, err)
	}
	consumer := func(name, desc string, filters []string) (jetstream.Consumer, error) {
		c, err := js.CreateOrUpdateConsumer(ctx, StreamJobs, jetstream.ConsumerConfig{
			Durable:        name,
			Description:    desc,
			FilterSubjects: filters,
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        cfg.AckWait,
			// The worker decides failure itself at MaxDeliver; the server's
			// limit is a backstop for a worker that never settles.
			MaxDeliver:    cfg.MaxDeliver + 2,
			MaxAckPending: 1000,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			Replicas:      topo.Replicas,
		})
		if err != nil {
			return nil, fmt.Errorf("provision consumer %s: %w", name, err)
		}
		return c, nil
	}
	if objs.Urgent, err = consumer(ConsumerUrgent, "Offboard and remove jobs, served first", urgentSubjects()); err != nil {
		return nil, err
	}
	if objs.Normal, err = consumer(ConsumerNormal, "Enroll, activate, verify and generate_token jobs", normalSubjects()); err != nil {
		return nil, err
	}
	return objs, nil
}
