package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Names of the JetStream objects `worker ingest` owns.
const (
	StreamEvents   = topology.StreamEvents
	BucketSCIM     = topology.BucketSCIM
	ConsumerIngest = "mfa-ingest"
	// BucketAttempts remembers mappings begun on a redelivery that have
	// not ended, so that an event that kills the mapper is dead-lettered
	// after two deaths instead of killing every replica for ever.
	BucketAttempts = topology.BucketIngestAttempts
	// EventSubjectPrefix + source is where an accepted event is stored.
	EventSubjectPrefix = job.EventSubjectPrefix
	// DLQSubject receives events a rule failed on.
	DLQSubject = job.DLQSubjectPrefix + "ingest"
)

// Sources are the HR sources, each stored on EventSubjectPrefix + source.
var Sources = []string{SourceCloudEvents, SourceBambooHR, SourceHiBob, SourceSCIM}

// The HR sources.
const (
	SourceCloudEvents = "cloudevents"
	SourceBambooHR    = "bamboohr"
	SourceHiBob       = "hibob"
	SourceSCIM        = "scim"
)

// Topology configures HR_EVENTS, MFA_SCIM_USERS and mfa-ingest. Zero fields
// take the defaults noted.
type Topology struct {
	Replicas     int           // 1; 3 in a cluster
	EventsMaxAge time.Duration // 30 days
	// DuplicateWindow is HR_EVENTS' deduplication window: 24h, at least
	// as long as HR systems retry a webhook in a burst.
	DuplicateWindow time.Duration
	// AckWait is how long the mapper may hold an event: 30s.
	AckWait time.Duration
}

func (t *Topology) setDefaults() {
	d := DefaultConfig().Topology
	t.Replicas = cmp.Or(t.Replicas, d.Replicas)
	t.EventsMaxAge = cmp.Or(t.EventsMaxAge, d.EventsMaxAge)
	t.DuplicateWindow = cmp.Or(t.DuplicateWindow, d.DuplicateWindow)
	t.AckWait = cmp.Or(t.AckWait, d.AckWait)
}

// Provisioned are the objects Provision created or found.
type Provisioned struct {
	Events   jetstream.Stream
	Users    jetstream.KeyValue
	Consumer jetstream.Consumer
	// Attempts is MFA_INGEST_ATTEMPTS.
	Attempts jetstream.KeyValue
}

// Provision creates or updates HR_EVENTS, MFA_SCIM_USERS and the mfa-ingest
// consumer. It is idempotent and safe to run from every replica at once.
func Provision(ctx context.Context, js jetstream.JetStream, t Topology) (*Provisioned, error) {
	t.setDefaults()
	if t.DuplicateWindow > t.EventsMaxAge {
		return nil, fmt.Errorf("HR_EVENTS: duplicate window %v is longer than the max age %v", t.DuplicateWindow, t.EventsMaxAge)
	}
	subjects := make([]string, len(Sources))
	for i, s := range Sources {
		subjects[i] = EventSubjectPrefix + s
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamEvents,
		Description: "HR events accepted by worker ingest, as received; one subject per source",
		Subjects:    subjects,
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    t.Replicas,
		MaxAge:      t.EventsMaxAge,
		Duplicates:  t.DuplicateWindow,
		MaxMsgSize:  maxBody + 4096,
	})
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamEvents, err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketSCIM,
		Description: "SCIM users provisioned by identity providers: id, userName, externalId, active",
		Storage:     jetstream.FileStorage,
		Replicas:    t.Replicas,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", BucketSCIM, err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, StreamEvents, jetstream.ConsumerConfig{
		Durable:       ConsumerIngest,
		Description:   "Turns stored HR events into MFA jobs by the rules",
		FilterSubject: EventSubjectPrefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		// Never give up on an event: it waits, redelivered with a growing
		// delay, until its jobs are stored (e.g. until the worker created
		// MFA_JOBS). A rule error is decided by the mapper, not here.
		MaxDeliver:    -1,
		MaxAckPending: 1024,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", ConsumerIngest, err)
	}
	att, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketAttempts,
		Description: "HR events whose mapping began on a redelivery and has not ended: a mapper that dies on an event twice dead-letters it",
		Storage:     jetstream.FileStorage,
		Replicas:    t.Replicas,
		History:     1,
		TTL:         24 * time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", BucketAttempts, err)
	}
	return &Provisioned{Events: st, Users: kv, Consumer: cons, Attempts: att}, nil
}

// checkReady reports what is missing for the receiver to store events.
func checkReady(ctx context.Context, js jetstream.JetStream) error {
	if _, err := js.Stream(ctx, StreamEvents); err != nil {
		return errors.New("stream " + StreamEvents + " missing")
	}
	if _, err := js.KeyValue(ctx, BucketSCIM); err != nil {
		return errors.New("bucket " + BucketSCIM + " missing")
	}
	if _, err := js.KeyValue(ctx, BucketAttempts); err != nil {
		return errors.New("bucket " + BucketAttempts + " missing")
	}
	return nil
}
