// Package security is the worker's security suite: each test reproduces an
// attack on the trust boundary (a job publisher forging replays or colliding
// ids, a forged dead letter, bodies that cost more than they weigh or carry
// secrets where they do not belong, a flood of queries, one busy person,
// a refused credential) against a real in-process NATS server
// and the OneLogin simulator, and checks that the worker holds. The attacks
// and the permissions they assume are described in docs/security.md.
package security
