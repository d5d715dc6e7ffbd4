package onelogin_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

func TestPacerKeepsConcurrentCallsUnderBudget(t *testing.T) {
	const window = 2 * time.Second
	sim, c := newSim(t, simulator.Config{RateLimit: 50, RateWindow: window})
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	waits := make(chan time.Duration, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t0 := time.Now()
			_, _, err := c.EnrolledFactors(ctx, int64(i+1))
			waits <- time.Since(t0)
			if err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	close(waits)
	for err := range errs {
		t.Errorf("call failed: %v", err)
	}
	var longest time.Duration
	for w := range waits {
		longest = max(longest, w)
	}
	st := sim.Stats()
	t.Logf("100 calls in %v, longest %v, 429s %d, calls %d", time.Since(start).Round(time.Millisecond), longest.Round(time.Millisecond), st.TooMany, st.Requests["enrolled_factors"])
	if st.TooMany > 3 {
		t.Errorf("saw %d 429s; the pacer should wait instead", st.TooMany)
	}
	// 100 calls need two windows: one reset to wait for, never more.
	if longest > window+window/2 {
		t.Errorf("a call waited %v, longer than the reset (%v)", longest, window)
	}
}

func TestPacerServesUrgentFirst(t *testing.T) {
	p := onelogin.NewPacer(0)
	reset := time.Now().Add(300 * time.Millisecond)
	// Learn a spent budget: everyone must wait for the reset.
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	p.Observe(onelogin.RateLimit{Limit: 10, Remaining: 0, Reset: reset}, true)

	order := make(chan onelogin.Priority, 4)
	var wg sync.WaitGroup
	start := func(prio onelogin.Priority) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Wait(context.Background(), prio); err != nil {
				t.Error(err)
				return
			}
			order <- prio
			// Each answer spends the budget again for a moment, so grants
			// come one at a time and their order is the pacer's alone.
			p.Observe(onelogin.RateLimit{Limit: 10, Remaining: 0, Reset: time.Now().Add(20 * time.Millisecond)}, true)
		}()
	}
	start(onelogin.PriorityNormal)
	start(onelogin.PriorityNormal)
	waitFor(t, func() bool { return p.Waiting() == 2 })
	start(onelogin.PriorityUrgent)
	start(onelogin.PriorityUrgent)
	waitFor(t, func() bool { return p.Waiting() == 4 })
	wg.Wait()
	close(order)
	var got []onelogin.Priority
	for o := range order {
		got = append(got, o)
	}
	want := []onelogin.Priority{onelogin.PriorityUrgent, onelogin.PriorityUrgent, onelogin.PriorityNormal, onelogin.PriorityNormal}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("grant order = %v, want urgent first", got)
		}
	}
	if time.Now().Before(reset) {
		t.Fatal("granted before the reset")
	}
}

func TestPacerWaitGivesUpWithContext(t *testing.T) {
	p := onelogin.NewPacer(0)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	p.Observe(onelogin.RateLimit{Limit: 10, Remaining: 0, Reset: time.Now().Add(time.Hour)}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Wait(ctx, onelogin.PriorityUrgent); err == nil {
		t.Fatal("Wait returned without budget")
	}
	if p.Waiting() != 0 {
		t.Fatalf("a cancelled waiter is still queued")
	}
}

func TestPacerUnpacedWithoutHeaders(t *testing.T) {
	p := onelogin.NewPacer(0)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	p.Observe(onelogin.RateLimit{}, true) // an answer with no headers
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for i := 0; i < 10; i++ { // all at once, none observed
		if err := p.Wait(ctx, onelogin.PriorityNormal); err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestPacerTrustsAnEarlierResetFromA429(t *testing.T) {
	p := onelogin.NewPacer(0)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	// An hour-long window with plenty left...
	p.Observe(onelogin.RateLimit{Limit: 5000, Remaining: 4000, Reset: time.Now().Add(time.Hour)}, true)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	// ...then a 429 saying the limit clears in 200 ms.
	p.Observe(onelogin.RateLimit{Limit: 5000, Remaining: 0, Reset: time.Now().Add(200 * time.Millisecond)}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := p.Wait(ctx, onelogin.PriorityNormal); err != nil {
		t.Fatalf("still waiting after %v: the short reset was ignored", time.Since(start))
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("granted after %v, before the reset", d)
	}
}

func TestPacerLeavesTheReserveUnspent(t *testing.T) {
	p := onelogin.NewPacer(0)
	p.SetReserve(2)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	p.Observe(onelogin.RateLimit{Limit: 100, Remaining: 3, Reset: time.Now().Add(time.Hour)}, true)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err) // the third-to-last call may go
	}
	p.Observe(onelogin.RateLimit{Limit: 100, Remaining: 2, Reset: time.Now().Add(time.Hour)}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := p.Wait(ctx, onelogin.PriorityUrgent); err == nil {
		t.Fatal("the pacer spent a reserved call")
	}
}

// Queries queue behind every job, and while the budget is below the query
// reserve they are refused at once, queued or not.
func TestPacerQueryReserve(t *testing.T) {
	p := onelogin.NewPacer(0)
	p.SetQueryReserve(0.2)
	ctx := context.Background()
	if err := p.Wait(ctx, onelogin.PriorityQuery); err != nil {
		t.Fatalf("first query with an unknown budget: %v", err)
	}
	p.Observe(onelogin.RateLimit{Limit: 100, Remaining: 30, Reset: time.Now().Add(time.Hour)}, true)
	// 30 left, reserve 20: ten queries may go, the eleventh is refused.
	for i := 0; i < 10; i++ {
		if err := p.Wait(ctx, onelogin.PriorityQuery); err != nil {
			t.Fatalf("query %d with %d left: %v", i, 30-i, err)
		}
	}
	start := time.Now()
	if err := p.Wait(ctx, onelogin.PriorityQuery); !errors.Is(err, onelogin.ErrBusy) {
		t.Fatalf("query at the reserve: err = %v, want ErrBusy", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("refusal took %v, want at once", d)
	}
	// Jobs still spend the reserve.
	if err := p.Wait(ctx, onelogin.PriorityNormal); err != nil {
		t.Fatalf("job at the reserve: %v", err)
	}
	for i := 0; i < 11; i++ {
		p.Observe(onelogin.RateLimit{Limit: 100, Remaining: 19, Reset: time.Now().Add(time.Hour)}, true)
	}
	if err := p.Wait(ctx, onelogin.PriorityQuery); !errors.Is(err, onelogin.ErrBusy) {
		t.Fatalf("query below the reserve: err = %v, want ErrBusy", err)
	}
}

// A queued query is refused when an answer shows the budget down to the
// reserve.
func TestPacerQueuedQueryRefusedAtReserve(t *testing.T) {
	p := onelogin.NewPacer(0)
	p.SetQueryReserve(0.5)
	ctx := context.Background()
	// The first call probes the budget; the query queues behind it.
	if err := p.Wait(ctx, onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Wait(ctx, onelogin.PriorityQuery) }()
	waitFor(t, func() bool { return p.Waiting() == 1 })
	p.Observe(onelogin.RateLimit{Limit: 10, Remaining: 4, Reset: time.Now().Add(time.Hour)}, true)
	select {
	case err := <-errc:
		if !errors.Is(err, onelogin.ErrBusy) {
			t.Fatalf("queued query: err = %v, want ErrBusy", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("queued query neither granted nor refused")
	}
}
