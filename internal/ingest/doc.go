// Package ingest is `worker ingest`: an HTTP receiver that lets HR systems
// and identity providers in (CloudEvents signed the Standard Webhooks way,
// BambooHR and HiBob webhooks, and a minimal SCIM 2.0 Users resource), stores
// each accepted event once on the JetStream stream HR_EVENTS, and a mapper,
// the durable consumer mfa-ingest, that turns stored events into MFA jobs by
// the rules of package rules.
//
// A sender gets a 2xx only after JetStream acknowledged the stored event, so
// an event is either stored or the sender retries; and only when the rules
// make of it jobs the worker's own job model accepts (or no job at all):
// the receiver decides at the door (door.go), answering 422
// application/problem+json naming rule and field, never a value, and
// storing nothing, so that no sender is told 2xx for a leaver whose job
// could not run. The mapper applies the rules again after storage; what
// fails there (a rule changed in between, an event that killed the mapper
// twice) goes to mfa.dlq.ingest.
//
// A request meets the receiver's defences in this order: the throttle of
// failed authentication per client address (package authlimit), the
// headers alone (signature present, timestamp in range, SCIM token), a share
// of the bytes in flight (small bodies have their own), the body and its
// signature, the door, and storage. Connections are capped and idle ones
// closed, so thousands of idle connections and hundreds of unauthenticated
// uploads leave the process small (test/load measures it). Events are deduplicated
// by id (Nats-Msg-Id <source>:<event id>, a 24-hour window), and jobs carry
// deterministic ids (hr:<source>:<event id>:<rule>), so a webhook delivered
// three times, or an event mapped again after a crash, makes one job.
//
// The receiver is stateless: any number of replicas can run behind a load
// balancer and share HR_EVENTS, MFA_SCIM_USERS, MFA_INGEST_ATTEMPTS and the
// mfa-ingest consumer (behind a load balancer that hides client addresses,
// the throttle sees the balancer's).
package ingest
