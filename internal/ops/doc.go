// Package ops is the worker's read-only query service on the server side: a
// NATS micro service in the group mfa.query (job.QueryGroup) that answers
// what is known of a job id, a person's history and what OneLogin holds for
// a user, within its own share of the OneLogin budget. The operators'
// dead-letter tools, on the client side, are package dlq.
package ops
