// Package containers proves the worker under faults: NATS runs in containers
// built here (make image-nats), the worker binary runs as host processes that
// are killed with SIGKILL, and the OneLogin simulator runs in the test with
// faults injected; the guard's scenario also runs `worker ingest` and
// Debian's prometheus as host processes. Every scenario checks that each job
// has exactly one result, that no job caused the same OneLogin effect twice,
// that the ledger agrees with the results, and that nothing is left
// unacknowledged.
//
// The tests carry the build tag "containers"; run them with
// `make test-containers`.
package containers
