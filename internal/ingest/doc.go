// Package ingest is `worker ingest`: an HTTP receiver that lets HR systems
// and identity providers in (CloudEvents signed the Standard Webhooks way,
// BambooHR and HiBob webhooks, and a minimal SCIM 2.0 Users resource), stores
// each accepted event once on the JetStream stream HR_EVENTS, and a mapper,
// the durable consumer mfa-ingest, that turns stored events into MFA jobs by
// the rules of package rules.
//
// A sender gets a 2xx only after JetStream acknowledged the stored event, so
// an event is either stored or the sender retries. Events are deduplicated
// by id (Nats-Msg-Id <source>:<event id>, a 24-hour window), and jobs carry
// deterministic ids (hr:<source>:<event id>:<rule>), so a webhook delivered
// three times, or an event mapped again after a crash, makes one job.
//
// The receiver is stateless: any number of replicas can run behind a load
// balancer and share HR_EVENTS, MFA_SCIM_USERS and the mfa-ingest consumer.
package ingest
