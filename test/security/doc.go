// Package security is the worker's security test suite: each test
// reproduces an attack on the trust boundary (a forged header, a flood of
// queries, a busy person, a refused credential, ...) against a real NATS
// server and the OneLogin simulator, and shows that it no longer works.
package security
