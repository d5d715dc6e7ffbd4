package assurance_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/assurance"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// windowCounter wraps the OneLogin client and counts the checker's reads
// per rate-limit window (windows told apart by their reset instant).
type windowCounter struct {
	assurance.Factors
	mu     sync.Mutex
	resets []time.Time
	limit  int
}

func (w *windowCounter) EnrolledFactors(ctx context.Context, userID int64) ([]onelogin.Device, *onelogin.Response, error) {
	ds, resp, err := w.Factors.EnrolledFactors(ctx, userID)
	if resp != nil && resp.Rate.Limit > 0 {
		w.mu.Lock()
		w.resets = append(w.resets, resp.Rate.Reset)
		w.limit = resp.Rate.Limit
		w.mu.Unlock()
	}
	return ds, resp, err
}

// maxPerWindow returns the most reads counted in one window.
func (w *windowCounter) maxPerWindow() (int, int) {
	w.mu.Lock()
	rs := slices.Clone(w.resets)
	limit := w.limit
	w.mu.Unlock()
	slices.SortFunc(rs, func(a, b time.Time) int { return a.Compare(b) })
	best, n := 0, 0
	var first time.Time
	for _, r := range rs {
		if n == 0 || r.Sub(first) > 1500*time.Millisecond {
			first, n = r, 0
		}
		n++
		best = max(best, n)
	}
	return best, limit
}

// BenchmarkReverify10000: 10,000 offboarded leavers re-verified within one
// interval while the worker runs a mix of jobs on the same OneLogin
// account. Reports how long until every leaver was read, the checker's
// largest share of one rate-limit window (it must stay within
// WORKER_ASSURANCE_BUDGET, 0.05) and the jobs finished meanwhile.
func BenchmarkReverify10000(b *testing.B) {
	const leavers = 10_000
	const limit = 20_000
	const window = 2 * time.Second
	for b.Loop() {
		bed, err := testenv.NewBed(simulator.Config{FirstUser: 1, LastUser: 100_000, RateLimit: limit, RateWindow: window})
		if err != nil {
			b.Fatal(err)
		}
		w, err := bed.StartWorker(jobs.DefaultConfig(), testenv.WorkerOptions{Log: testenv.Quiet()})
		if err != nil {
			b.Fatal(err)
		}
		svc := registry(b, bed.JS)
		off := time.Now().Add(-time.Hour).UTC()
		for i := range leavers {
			r := leaver.Record{Key: leaver.UserKey(int64(i + 1)), State: leaver.Verified, Since: off, UserID: int64(i + 1),
				OffboardedAt: off, VerifiedAt: off, JobID: fmt.Sprintf("off-%d", i), CreatedAt: off, UpdatedAt: off}
			body, _ := json.Marshal(r)
			if _, err := bed.JS.PublishAsync("$KV."+leaver.Bucket+"."+r.Key, body); err != nil {
				b.Fatal(err)
			}
		}
		<-bed.JS.PublishAsyncComplete()
		waitView(b, svc, leavers)
		mix, err := testenv.Mix(bed.Sim, 4000, 50_000)
		if err != nil {
			b.Fatal(err)
		}
		wc := &windowCounter{Factors: client(b, bed.SimURL, bed.Sim)}
		m := &counts{n: map[string]int{}}
		c, err := assurance.New(assurance.Config{Interval: 20 * time.Second, Tick: 50 * time.Millisecond, Budget: 0.05},
			svc.Store, svc.View, wc, bed.JS, m, testenv.Quiet())
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := bed.Publish(mix, ""); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		testenv.Eventually(b, 5*time.Minute, func() bool { return claimed(svc) == leavers }, func() string {
			return fmt.Sprintf("%d of %d leavers checked", claimed(svc), leavers)
		})
		took := time.Since(start)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		results := testenv.Count(bed.JS, "MFA_RESULTS")
		_ = w.Stop()
		bed.Close()
		most, lim := wc.maxPerWindow()
		share := float64(most) / float64(lim)
		if share > 0.05 {
			b.Fatalf("the checker spent %d of one window's %d calls (%.3f), more than its 0.05 share", most, lim, share)
		}
		if m.get("drift") != 0 || m.get("clean") < leavers {
			b.Fatalf("checks %v", m.snapshot())
		}
		b.ReportMetric(took.Seconds(), "s/10k-leavers")
		b.ReportMetric(share, "max-window-share")
		b.ReportMetric(float64(results), "job-results")
	}
}
