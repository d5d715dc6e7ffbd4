package pause_test

import (
	"context"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/pause"
)

func TestFor(t *testing.T) {
	if !pause.For(context.Background(), time.Millisecond) {
		t.Error("a wait that ran out reported false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if pause.For(ctx, time.Hour) {
		t.Error("a wait on an ended context reported true")
	}
	stop := make(chan struct{})
	close(stop)
	if pause.Unless(context.Background(), stop, time.Hour) {
		t.Error("a wait with stop closed reported true")
	}
}
