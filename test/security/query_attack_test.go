package security

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// Queries cannot starve offboarding. mfa.query.* needs no more than a
// NATS connection, and used to call OneLogin at once: 300 queries spent a
// 300-call budget in milliseconds, and an offboard published after them
// waited for the hourly reset. Now queries wait at the lowest priority and
// are refused with busy once the budget is down to WORKER_QUERY_RESERVE
// (0.2 of the limit), so the offboard published after them finishes within
// 2 s.
func TestQueriesCannotStarveOffboarding(t *testing.T) {
	bed, err := testenv.NewBed(simulator.Config{RateLimit: 300, RateWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer bed.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := app.DefaultConfig()
	cfg.NATSURL, cfg.OneLoginBaseURL, cfg.OneLoginClientID = bed.NATSURL(), bed.SimURL, bed.Sim.Config().ClientID
	cfg.OneLoginClientSecret, cfg.HTTPAddr, cfg.Version = bed.Sim.Config().ClientSecret, "127.0.0.1:0", "1.2.3"
	w, err := app.Run(ctx, cfg, testenv.Quiet(), prometheus.NewRegistry())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = w.Wait()
	}()
	if err := testenv.WaitHTTP("http://"+w.HTTPAddr+"/readyz", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(bed.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// The attack: 300 queries at once, each a OneLogin call if answered.
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := nc.Request("mfa.query.enrolled_factors", []byte(`{"user_id": 77}`), 20*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				codes["no answer"]++
				return
			}
			var r struct {
				Error *job.ErrorInfo `json:"error"`
			}
			switch {
			case json.Unmarshal(m.Data, &r) != nil:
				codes["unreadable"]++
			case r.Error == nil:
				codes["answered"]++
			default:
				codes[r.Error.Code]++
			}
		}()
	}
	wg.Wait()
	spent := bed.Sim.ResourceCalls()
	t.Logf("300 queries: %v; OneLogin calls %d of 300", codes, spent)
	if codes["answered"]+codes[job.CodeBusy] != 300 {
		t.Errorf("answers %v: want every query answered or refused busy", codes)
	}
	if spent > 300-60 {
		t.Errorf("queries spent %d of 300 calls, into the reserve of 60", spent)
	}

	// The offboard published after them.
	if _, err := bed.Sim.EnrollDevice(5150, "Google Authenticator", "ga", true); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m, err := testenv.RoundTrip(bed.NATSURL(), "offboard", testenv.Body("q-offboard-1", "offboard", 5150, nil), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("offboard after the queries: %s in %v", m.Subject, took.Round(time.Millisecond))
	if m.Subject != "mfa.results.offboard.succeeded" {
		t.Fatalf("offboard ended on %s: %s", m.Subject, m.Data)
	}
	if took > 2*time.Second {
		t.Errorf("offboard took %v after the queries, want within 2s", took)
	}
	if len(bed.Sim.Devices(5150)) != 0 {
		t.Errorf("the leaver still has factors")
	}
}
