package app

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// A slow consumer, which nats.go would report as a plain-text line on
// stderr, reaches the JSON log as one structured line.
func TestNATSErrorsGoToTheJSONLog(t *testing.T) {
	bed := newBed(t, simulator.Config{})
	var buf testenv.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	nc, err := Connect(Config{NATSURL: bed.NATSURL()}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	block := make(chan struct{})
	defer close(block)
	sub, err := nc.Subscribe("slow", func(*nats.Msg) { <-block })
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(1, 1024); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := nc.Publish("slow", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return strings.Contains(buf.String(), "slow consumer") }, func() string { return "no slow consumer line: " + buf.String() })
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Errorf("not a JSON line: %q", l)
		}
	}
}
