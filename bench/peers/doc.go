// Package peers measures the worker beside a peer doing the same job: the
// same number of offboard jobs, each one call to a zero-latency OneLogin
// (the simulator, whose users have no devices, so an offboard is one
// listing and a "noop" result), with the same concurrency, against a bare
// JetStream consumer as the floor.
//
//   - floor: a bare JetStream pull consumer that fetches each job, lists
//     the user's devices once with the same minimal client as Watermill's
//     handler (internal/bench.OneLogin), publishes one result (Nats-Msg-Id
//     of the job) and acks it. The same method as internal/bench's floor.
//   - transport: the floor without the call, echoing the job as its
//     result: what JetStream alone costs.
//   - watermill: Watermill's router over watermill-nats' JetStream
//     subscriber and publisher in their exactly-once mode (TrackMsgId, a
//     synchronous ack after the result is published), a handler that
//     lists the user's devices on the simulator and returns one result.
//   - worker: the worker as `worker run` wires it (app.Run).
//
// The simulator runs in a child process, so that the CPU time counted
// (this process's user and system time from the start until every job has
// its result) is the consumer's and the embedded NATS server's only.
//
// It is a module of its own so that the worker's go.mod does not carry
// Watermill. `make bench-peers` runs it and writes its section of
// docs/benchmarks.md.
package peers
