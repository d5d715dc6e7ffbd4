// Package pause waits a while unless told to stop: the one timed wait of
// the worker's loops (retries, reconnects, backoff between
// compare-and-set attempts).
package pause

import (
	"context"
	"time"
)

// For waits d and reports true, or reports false at once when ctx ends
// first.
func For(ctx context.Context, d time.Duration) bool { return Unless(ctx, nil, d) }

// Unless waits d and reports true, or reports false at once when ctx ends
// or stop is closed first (a nil stop never is).
func Unless(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}
