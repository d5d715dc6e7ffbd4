package jobs_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/jobs"
)

func TestDLQUsage(t *testing.T) {
	info := func(bytes, msgs uint64, maxBytes, maxMsgs int64) *jetstream.StreamInfo {
		return &jetstream.StreamInfo{
			Config: jetstream.StreamConfig{MaxBytes: maxBytes, MaxMsgs: maxMsgs},
			State:  jetstream.StreamState{Bytes: bytes, Msgs: msgs},
		}
	}
	cases := []struct {
		in   *jetstream.StreamInfo
		want float64
	}{
		{info(0, 0, 1000, 10), 0},
		{info(500, 1, 1000, 10), 0.5},
		{info(100, 9, 1000, 10), 0.9},
		{info(100, 9, -1, -1), 0},
		{info(2000, 1, 1000, 10), 1},
	}
	for _, c := range cases {
		if got := jobs.DLQUsage(c.in); got != c.want {
			t.Errorf("%+v: %v, want %v", c.in.State, got, c.want)
		}
	}
}
