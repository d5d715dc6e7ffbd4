// Package leak checks that a package's tests leave no goroutine behind,
// allowing for the few long-lived helpers an embedded NATS server and its
// clients keep until the process ends. It imports nothing of the project,
// so that the tests of any package can use it. It is for tests only.
package leak

import (
	"testing"

	"go.uber.org/goleak"
)

// VerifyTestMain runs m's tests, then fails the run if a goroutine other
// than those helpers is still alive. Call it from TestMain.
func VerifyTestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("time.Sleep"),
	)
}
