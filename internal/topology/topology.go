// Package topology names the JetStream objects of the worker (streams,
// buckets, consumers) and provisions them idempotently.
package topology

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/audit"
	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
)

// Names of the JetStream objects the worker owns.
const (
	StreamJobs     = "MFA_JOBS"
	StreamResults  = "MFA_RESULTS"
	StreamDLQ      = "MFA_DLQ"
	BucketLedger   = "MFA_LEDGER"
	BucketLocks    = "MFA_LOCKS"
	BucketPeople   = "MFA_PEOPLE"
	ConsumerUrgent = "mfa-worker-urgent"
	ConsumerNormal = "mfa-worker"
	// StreamHistory is the per-person index of results (package history).
	StreamHistory = job.HistoryStream
	// ConsumerHistory reads MFA_RESULTS into MFA_HISTORY, shared by every
	// replica.
	ConsumerHistory = "mfa-history"
	// BucketSCIM holds the SCIM users `worker ingest` serves.
	BucketSCIM = "MFA_SCIM_USERS"
	// StreamEvents holds the HR events `worker ingest` accepted, on
	// job.EventSubjectPrefix + source; BucketIngestAttempts its mapper's
	// attempts.
	StreamEvents = "HR_EVENTS"
	// BucketLeavers is the leaver registry (package leaver).
	BucketLeavers        = "MFA_LEAVERS"
	BucketIngestAttempts = "MFA_INGEST_ATTEMPTS"
)

// Config configures the JetStream objects.
type Config struct {
	Replicas        int           // WORKER_STREAM_REPLICAS: 1; 3 in a cluster
	DuplicateWindow time.Duration // WORKER_DUPLICATE_WINDOW, for jobs and results
	ResultsMaxAge   time.Duration // WORKER_RESULTS_MAX_AGE
	DLQMaxAge       time.Duration // WORKER_DLQ_MAX_AGE
	// DLQMaxBytes and DLQMaxMsgs bound MFA_DLQ (WORKER_DLQ_MAX_BYTES,
	// WORKER_DLQ_MAX_MSGS); the oldest dead letters go first when either
	// is reached, and mfa_dlq_usage_ratio warns before that.
	DLQMaxBytes int
	DLQMaxMsgs  int
	// JobsMaxBytes and JobsMaxMsgs bound MFA_JOBS (WORKER_JOBS_MAX_BYTES,
	// WORKER_JOBS_MAX_MSGS). They are the worker's, not the stream's:
	// message schedules rule out discard-new, and a stream limit with
	// discard-old would drop the oldest jobs silently. What accumulates in
	// MFA_JOBS is schedules, so the worker parks no more schedules once
	// either is reached (such a job fails, jobs_stream_full, and is
	// dead-lettered, so it can be replayed), and mfa_jobs_stream_usage_ratio
	// warns before that.
	JobsMaxBytes int
	JobsMaxMsgs  int
	LedgerTTL    time.Duration // WORKER_LEDGER_TTL
}

// DefaultConfig is the topology of a single-node deployment.
func DefaultConfig() Config {
	return Config{
		Replicas:        1,
		DuplicateWindow: 10 * time.Minute,
		ResultsMaxAge:   7 * 24 * time.Hour,
		DLQMaxAge:       30 * 24 * time.Hour,
		DLQMaxBytes:     1 << 30,
		DLQMaxMsgs:      1_000_000,
		JobsMaxBytes:    1 << 30,
		JobsMaxMsgs:     1_000_000,
		LedgerTTL:       7 * 24 * time.Hour,
	}
}

// WithDefaults returns c with its zero fields set from DefaultConfig.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	c.Replicas = cmp.Or(c.Replicas, d.Replicas)
	c.DuplicateWindow = cmp.Or(c.DuplicateWindow, d.DuplicateWindow)
	c.ResultsMaxAge = cmp.Or(c.ResultsMaxAge, d.ResultsMaxAge)
	c.DLQMaxAge = cmp.Or(c.DLQMaxAge, d.DLQMaxAge)
	c.LedgerTTL = cmp.Or(c.LedgerTTL, d.LedgerTTL)
	c.DLQMaxBytes = cmp.Or(c.DLQMaxBytes, d.DLQMaxBytes)
	c.DLQMaxMsgs = cmp.Or(c.DLQMaxMsgs, d.DLQMaxMsgs)
	c.JobsMaxBytes = cmp.Or(c.JobsMaxBytes, d.JobsMaxBytes)
	c.JobsMaxMsgs = cmp.Or(c.JobsMaxMsgs, d.JobsMaxMsgs)
	return c
}

// Validate checks the topology with its defaults applied, with no I/O, and
// reports every problem (a *config.Error or *config.Errors).
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p config.Problems
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		p.Add("WORKER_STREAM_REPLICAS", "must be 1, 3 or 5, got %d", c.Replicas)
	}
	if c.DuplicateWindow < 10*time.Minute {
		p.Add("WORKER_DUPLICATE_WINDOW", "must be at least 10m, got %v", c.DuplicateWindow)
	}
	if c.ResultsMaxAge < time.Hour {
		p.Add("WORKER_RESULTS_MAX_AGE", "must be at least 1h, got %v", c.ResultsMaxAge)
	}
	if c.DLQMaxAge < time.Hour {
		p.Add("WORKER_DLQ_MAX_AGE", "must be at least 1h, got %v", c.DLQMaxAge)
	}
	if c.DLQMaxBytes < 1<<20 {
		p.Add("WORKER_DLQ_MAX_BYTES", "must be at least 1048576 (1 MiB), got %d", c.DLQMaxBytes)
	}
	if c.DLQMaxMsgs < 100 {
		p.Add("WORKER_DLQ_MAX_MSGS", "must be at least 100, got %d", c.DLQMaxMsgs)
	}
	if c.JobsMaxBytes < 1<<20 {
		p.Add("WORKER_JOBS_MAX_BYTES", "must be at least 1048576 (1 MiB), got %d", c.JobsMaxBytes)
	}
	if c.JobsMaxMsgs < 100 {
		p.Add("WORKER_JOBS_MAX_MSGS", "must be at least 100, got %d", c.JobsMaxMsgs)
	}
	if c.LedgerTTL < time.Hour {
		p.Add("WORKER_LEDGER_TTL", "must be at least 1h, got %v", c.LedgerTTL)
	}
	return p.Err()
}

// Consumers are the settings of the job consumers and the lock bucket,
// which belong to the job pipeline's configuration.
type Consumers struct {
	AckWait time.Duration // the consumers' ack wait
	Lease   time.Duration // the age limit of the user locks
	// MaxDeliver is the pipeline's; the consumers get a little more, as
	// a backstop for a worker that never settles.
	MaxDeliver int
}

// ScopedCancels is the subject filter of the scoped cancels,
// mfa.jobs.cancel.<scope> (see job.Job.CancelScope).
var ScopedCancels = job.CancelSubject(">")

// Subjects returns the job subjects of a lane (the urgent lane's include
// the scoped cancels).
func Subjects(l job.Lane) []string {
	var s []string
	for _, t := range job.TypesOf(l) {
		s = append(s, t.Subject())
		if t == job.TypeCancel {
			s = append(s, ScopedCancels)
		}
	}
	return s
}

// Consumer returns the durable consumer name of a lane.
func Consumer(l job.Lane) string {
	if l == job.LaneUrgent {
		return ConsumerUrgent
	}
	return ConsumerNormal
}

// ScheduledConsumer names the counting consumer of the jobs of type t that
// wait as schedules. It is never pulled from: its pending count is the
// number of such jobs (mfa_jobs_scheduled), kept by the server across
// restarts of the worker and of NATS.
func ScheduledConsumer(t job.Type) string { return "mfa-scheduled-" + string(t) }

// Schedulable lists the types a not_before can park (every type but cancel).
func Schedulable() []job.Type {
	var out []job.Type
	for _, t := range job.Types {
		if t != job.TypeCancel {
			out = append(out, t)
		}
	}
	return out
}

// Objects are the provisioned JetStream objects the pipeline uses.
type Objects struct {
	Urgent, Normal jetstream.Consumer
	Ledger, Locks  jetstream.KeyValue
	// History is the consumer on MFA_RESULTS that indexes each result
	// into MFA_HISTORY.
	History jetstream.Consumer
	// People holds per OneLogin user the time of the latest offboard.
	People jetstream.KeyValue
	// Jobs is the job stream (schedules are purged through it).
	Jobs jetstream.Stream
	// Scheduled are the counting consumers, by type.
	Scheduled map[job.Type]jetstream.Consumer
	// DLQ is MFA_DLQ, whose usage against its limits the worker exports.
	DLQ jetstream.Stream
	// JobsMaxBytes and JobsMaxMsgs are the worker's limits of MFA_JOBS
	// (Config.JobsMaxBytes, JobsMaxMsgs).
	JobsMaxBytes, JobsMaxMsgs int64
	// Guard is MFA_GUARD, the blast-radius guard's bucket (package guard).
	Guard jetstream.KeyValue
}

// Provision creates or updates the streams, buckets and consumers. It is
// idempotent and safe to run from every replica at once.
func Provision(ctx context.Context, js jetstream.JetStream, topo Config, cfg Consumers) (*Objects, error) {
	topo = topo.WithDefaults()
	if err := topo.Validate(); err != nil {
		return nil, err
	}
	if cfg.AckWait <= 0 || cfg.Lease <= 0 || cfg.MaxDeliver <= 0 {
		return nil, fmt.Errorf("provision: consumer settings must be positive, got %+v", cfg)
	}
	var subjects []string
	for _, t := range job.Types {
		subjects = append(subjects, t.Subject())
	}
	// The scoped cancels (mfa.jobs.cancel.<scope>): an existing stream
	// takes them when it is updated at start.
	subjects = append(subjects, ScopedCancels, job.ScheduledSubjectPrefix+">")
	streams := []jetstream.StreamConfig{{
		Name:        StreamJobs,
		Description: "MFA jobs; only the job subjects and the schedules of future jobs are accepted, so nothing unhandled sits here",
		Subjects:    subjects,
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    topo.Replicas,
		Duplicates:  topo.DuplicateWindow,
		// Jobs with a future not_before wait as message schedules on
		// mfa.scheduled.<type>.<id token>, targeting mfa.jobs.<type>.
		// Schedules need roll-ups (each schedule rolls up its own
		// subject), purges (a fired or cancelled schedule is purged) and
		// discard-old (the default).
		AllowMsgSchedules: true,
		AllowRollup:       true,
		DenyPurge:         false,
		Discard:           jetstream.DiscardOld,
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
		MaxBytes:    int64(topo.DLQMaxBytes),
		MaxMsgs:     int64(topo.DLQMaxMsgs),
		Discard:     jetstream.DiscardOld,
		Duplicates:  topo.DuplicateWindow,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("provision stream %s: %w", sc.Name, err)
		}
	}
	if err := history.Provision(ctx, js, history.Config{Replicas: topo.Replicas, DuplicateWindow: topo.DuplicateWindow}); err != nil {
		return nil, err
	}
	objs := &Objects{JobsMaxBytes: int64(topo.JobsMaxBytes), JobsMaxMsgs: int64(topo.JobsMaxMsgs)}
	var err error
	if objs.Guard, err = guard.Provision(ctx, js, topo.Replicas); err != nil {
		return nil, err
	}
	if err := audit.Provision(ctx, js, audit.Config{Replicas: topo.Replicas}); err != nil {
		return nil, err
	}
	if objs.DLQ, err = js.Stream(ctx, StreamDLQ); err != nil {
		return nil, fmt.Errorf("provision stream %s: %w", StreamDLQ, err)
	}
	objs.History, err = js.CreateOrUpdateConsumer(ctx, StreamResults, jetstream.ConsumerConfig{
		Durable:     ConsumerHistory,
		Description: "Indexes every result into MFA_HISTORY by person",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     30 * time.Second,
		// New deployments index from the start of the stream; an entry
		// appended twice is dropped by its message id.
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 1000,
		Replicas:      topo.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("provision consumer %s: %w", ConsumerHistory, err)
	}
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
	objs.People, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketPeople, Description: "Per OneLogin user id: the job time of the latest offboard (the resurrection guard); no TTL",
		History: 1, Storage: jetstream.FileStorage, Replicas: topo.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", BucketPeople, err)
	}
	if objs.Jobs, err = js.Stream(ctx, StreamJobs); err != nil {
		return nil, fmt.Errorf("provision stream %s: %w", StreamJobs, err)
	}
	objs.Scheduled = map[job.Type]jetstream.Consumer{}
	for _, t := range Schedulable() {
		c, err := js.CreateOrUpdateConsumer(ctx, StreamJobs, jetstream.ConsumerConfig{
			Durable:       ScheduledConsumer(t),
			Description:   "Counts " + string(t) + " jobs waiting for their not_before; never pulled",
			FilterSubject: job.ScheduledSubjectPrefix + string(t) + ".>",
			AckPolicy:     jetstream.AckExplicitPolicy,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			Replicas:      topo.Replicas,
		})
		if err != nil {
			return nil, fmt.Errorf("provision consumer %s: %w", ScheduledConsumer(t), err)
		}
		objs.Scheduled[t] = c
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
	if objs.Urgent, err = consumer(ConsumerUrgent, "Offboard, remove and cancel jobs, served first", Subjects(job.LaneUrgent)); err != nil {
		return nil, err
	}
	if objs.Normal, err = consumer(ConsumerNormal, "Enroll, activate, verify and generate_token jobs", Subjects(job.LaneNormal)); err != nil {
		return nil, err
	}
	return objs, nil
}
