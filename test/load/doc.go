// Package load measures `worker ingest` under hostile load, in a process
// of its own: BenchmarkIngestUnderLoad opens thousands of idle connections
// and hundreds of concurrent unauthenticated 1 MiB uploads against the
// receiver, sends a valid signed event meanwhile, and reports the
// receiver's peak resident memory (VmHWM) and the signed event's latency.
//
//	go test -run '^$' -bench IngestUnderLoad -benchtime 1x ./test/load/
package load
