//go:build dev

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// submit --wait tells a job accepted and scheduled for later (exit 3, at
// once, with the due time on stderr) from a job nobody runs (exit 1, "no
// worker").
func TestSubmitWaitTellsScheduledFromNoWorker(t *testing.T) {
	clearEnv(t)
	_, nurl := startDev(t)
	t.Setenv("NATS_URL", nurl)
	later := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	var out, errb bytes.Buffer
	start := time.Now()
	code := run([]string{"submit", "offboard", "--user", "43", "--id", "wait-later", "--not-before", later.Format(time.RFC3339), "--wait", "--timeout", "30s"}, &out, &errb)
	if code != exitAccepted || !strings.Contains(errb.String(), "scheduled until "+later.Format(time.RFC3339)+"\n") ||
		!strings.Contains(errb.String(), "accepted and scheduled until") || out.Len() != 0 {
		t.Fatalf("submit --wait on a job for later: exit %d\nstdout %s\nstderr %s", code, out.String(), errb.String())
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("submit --wait waited %v for a job due after its timeout", d)
	}

	// A NATS server with the streams and no worker.
	srv, _, js := testenv.JetStream(t)
	if _, err := topology.Provision(context.Background(), js, topology.DefaultConfig(), jobs.DefaultConfig().Consumers()); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_URL", srv.ClientURL())
	out.Reset()
	errb.Reset()
	code = run([]string{"submit", "offboard", "--user", "43", "--id", "wait-nobody", "--wait", "--timeout", "3s"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "no worker answered") {
		t.Fatalf("submit --wait with no worker: exit %d\n%s", code, errb.String())
	}
}
