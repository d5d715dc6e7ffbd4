package testenv

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond until it holds or timeout passes; what describes the
// state for the error. Tests call Eventually; WaitFor is for code that has
// no testing.TB (benchmarks' helpers).
func WaitFor(timeout time.Duration, cond func() bool, what func() string) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v: %s", timeout, what())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// Eventually polls cond until it holds and fails the test, with what
// describing the state, when timeout passes first. It is the one way tests
// wait: no fixed sleeps, no hand-written deadline loops.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, what func() string) {
	tb.Helper()
	if err := WaitFor(timeout, cond, what); err != nil {
		tb.Fatal(err)
	}
}

// WaitCount waits until a stream holds at least n messages.
func (b *Broker) WaitCount(stream string, n int, timeout time.Duration) error {
	return WaitFor(timeout, func() bool { return b.Count(stream) >= n }, func() string {
		return fmt.Sprintf("%s: %d of %d messages", stream, b.Count(stream), n)
	})
}

// SyncBuffer is a goroutine-safe log sink.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Quiet is a logger that discards everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
