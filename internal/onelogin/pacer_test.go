package onelogin_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// The pacer's tests run on a settable clock: a window passes when the test
// says so, never by waiting for it.

// resetMargin is the pacer's allowance after a reported reset.
const resetMargin = 250 * time.Millisecond

func TestPacerKeepsConcurrentCallsUnderBudget(t *testing.T) {
	const window = 2 * time.Second
	clk := newClock()
	p := onelogin.NewPacerWithClock(0, clk)
	sim, c := simClient(t, simulator.Config{RateLimit: 50, RateWindow: window, Now: clk.Now}, func(oc *onelogin.Config) {
		oc.Pacer, oc.Now = p, clk.Now
	})
	ctx := context.Background()
	t0 := clk.Now()
	var wg sync.WaitGroup
	var done atomic.Int32
	errs := make(chan error, 100)
	at := make(chan time.Time, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, _, err := c.EnrolledFactors(ctx, int64(i+1))
			at <- clk.Now()
			done.Add(1)
			if err != nil {
				errs <- err
			}
		}(i)
	}
	// The first window's 50 calls go; the other 50 wait for its reset.
	testenv.Eventually(t, 5*time.Second, func() bool { return done.Load() == 50 && p.Waiting() == 50 }, func() string {
		return fmt.Sprintf("%d calls done and %d waiting, want 50 and 50", done.Load(), p.Waiting())
	})
	if n := sim.Stats().Requests["enrolled_factors"]; n != 50 {
		t.Fatalf("%d calls sent in the first window, want 50", n)
	}
	if clk.Armed() == 0 {
		t.Fatal("callers wait for the reset, but no wake-up is set")
	}
	clk.Advance(window - time.Millisecond)
	if p.Waiting() != 50 {
		t.Fatalf("%d callers granted before the reset", 50-p.Waiting())
	}
	clk.Advance(time.Millisecond + resetMargin)
	wg.Wait()
	close(errs)
	close(at)
	for err := range errs {
		t.Errorf("call failed: %v", err)
	}
	var early, late int
	for a := range at {
		switch {
		case a.Equal(t0):
			early++
		case !a.Before(t0.Add(window)):
			late++
		}
	}
	if early != 50 || late != 50 {
		t.Errorf("calls done in the first window %d, after its reset %d; want 50 and 50", early, late)
	}
	st := sim.Stats()
	if st.TooMany != 0 || st.Requests["enrolled_factors"] != 100 {
		t.Errorf("saw %d 429s in %d calls; the pacer should wait instead", st.TooMany, st.Requests["enrolled_factors"])
	}
}

// grantOrder learns a budget spent until 300 ms from now, queues waiters
// batch by batch (each batch waiting before the next is queued), then
// advances the clock past the reset and returns the order of the grants.
// Each grant spends the budget again for a moment, so grants come one per
// window and their order is the pacer's alone. early reports a grant
// before the reset.
func grantOrder(t *testing.T, batches ...[]onelogin.Priority) (got []onelogin.Priority, early bool) {
	t.Helper()
	clk := newClock()
	p := onelogin.NewPacerWithClock(0, clk)
	reset := clk.Now().Add(300 * time.Millisecond)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	p.Observe(onelogin.RateLimit{Limit: 10, Remaining: 0, Reset: reset}, true)

	order := make(chan onelogin.Priority, 16)
	var observed atomic.Int32
	var grantedEarly atomic.Bool
	var wg sync.WaitGroup
	queued := 0
	for _, batch := range batches {
		for _, prio := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.Wait(context.Background(), prio); err != nil {
					t.Error(err)
					return
				}
				if clk.Now().Before(reset) {
					grantedEarly.Store(true)
				}
				order <- prio
				p.Observe(onelogin.RateLimit{Limit: 10, Remaining: 0, Reset: clk.Now().Add(20 * time.Millisecond)}, true)
				observed.Add(1)
			}()
		}
		queued += len(batch)
		waitQueued(t, p, queued)
	}
	clk.Advance(300*time.Millisecond + resetMargin)
	for i := int32(1); i <= int32(queued); i++ {
		testenv.Eventually(t, 5*time.Second, func() bool { return observed.Load() == i }, func() string {
			return fmt.Sprintf("%d grants observed, want %d", observed.Load(), i)
		})
		if p.Waiting() != queued-int(i) {
			t.Fatalf("after grant %d, %d waiting; grants must come one per window", i, p.Waiting())
		}
		clk.Advance(20*time.Millisecond + resetMargin)
	}
	wg.Wait()
	close(order)
	for o := range order {
		got = append(got, o)
	}
	return got, grantedEarly.Load()
}

func TestPacerServesUrgentFirst(t *testing.T) {
	n, u := onelogin.PriorityNormal, onelogin.PriorityUrgent
	got, early := grantOrder(t, []onelogin.Priority{n, n}, []onelogin.Priority{u, u})
	want := []onelogin.Priority{u, u, n, n}
	if len(got) != len(want) {
		t.Fatalf("grant order = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("grant order = %v, want urgent first", got)
		}
	}
	if early {
		t.Fatal("granted before the reset")
	}
}

func TestPacerWaitGivesUpWithContext(t *testing.T) {
	clk := newClock()
	p := onelogin.NewPacerWithClock(0, clk)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	p.Observe(onelogin.RateLimit{Limit: 10, Remaining: 0, Reset: clk.Now().Add(time.Hour)}, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- p.Wait(ctx, onelogin.PriorityUrgent) }()
	waitQueued(t, p, 1)
	cancel()
	if err := <-res; err == nil {
		t.Fatal("Wait returned without budget")
	}
	if p.Waiting() != 0 {
		t.Fatalf("a cancelled waiter is still queued")
	}
}

func TestPacerUnpacedWithoutHeaders(t *testing.T) {
	clk := newClock()
	p := onelogin.NewPacerWithClock(0, clk)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	p.Observe(onelogin.RateLimit{}, true) // an answer with no headers
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	granted := make(chan error, 1)
	go func() {
		for i := 0; i < 10; i++ { // all at once, none observed
			if err := p.Wait(ctx, onelogin.PriorityNormal); err != nil {
				granted <- err
				return
			}
		}
		granted <- nil
	}()
	testenv.Eventually(t, 5*time.Second, func() bool { return len(granted) == 1 || p.Waiting() > 0 }, func() string {
		return "the ten calls neither went nor waited"
	})
	if p.Waiting() > 0 {
		cancel()
		t.Fatalf("a call waits with nothing to pace by: %v", <-granted)
	}
	if err := <-granted; err != nil {
		t.Fatal(err)
	}
}

// waitQueued waits until n calls wait in p.
func waitQueued(t *testing.T, p *onelogin.Pacer, n int) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() bool { return p.Waiting() == n }, func() string {
		return fmt.Sprintf("%d calls waiting, want %d", p.Waiting(), n)
	})
}

func TestPacerTrustsAnEarlierResetFromA429(t *testing.T) {
	clk := newClock()
	p := onelogin.NewPacerWithClock(0, clk)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	// An hour-long window with plenty left...
	p.Observe(onelogin.RateLimit{Limit: 5000, Remaining: 4000, Reset: clk.Now().Add(time.Hour)}, true)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	// ...then a 429 saying the limit clears in 200 ms.
	p.Observe(onelogin.RateLimit{Limit: 5000, Remaining: 0, Reset: clk.Now().Add(200 * time.Millisecond)}, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- p.Wait(ctx, onelogin.PriorityNormal) }()
	waitQueued(t, p, 1)
	clk.Advance(150 * time.Millisecond)
	if p.Waiting() != 1 {
		t.Fatal("granted before the reset")
	}
	clk.Advance(50*time.Millisecond + resetMargin)
	if p.Waiting() != 0 {
		cancel()
		t.Fatalf("still waiting past the reset: the short reset was ignored (%v)", <-res)
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

func TestPacerLeavesTheReserveUnspent(t *testing.T) {
	clk := newClock()
	p := onelogin.NewPacerWithClock(0, clk)
	p.SetReserve(2)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	p.Observe(onelogin.RateLimit{Limit: 100, Remaining: 3, Reset: clk.Now().Add(time.Hour)}, true)
	if err := p.Wait(context.Background(), onelogin.PriorityNormal); err != nil {
		t.Fatal(err) // the third-to-last call may go
	}
	p.Observe(onelogin.RateLimit{Limit: 100, Remaining: 2, Reset: clk.Now().Add(time.Hour)}, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- p.Wait(ctx, onelogin.PriorityUrgent) }()
	waitQueued(t, p, 1)
	clk.Advance(59 * time.Minute)
	if p.Waiting() != 1 {
		t.Fatal("the pacer spent a reserved call")
	}
	// The next window's budget is spendable again.
	clk.Advance(time.Minute + resetMargin)
	if err := <-res; err != nil {
		t.Fatalf("no grant in the next window: %v", err)
	}
}

func TestBudgetResetsAtFollowsTheAnswers(t *testing.T) {
	const window = 10 * time.Second
	_, c := newSim(t, simulator.Config{RateLimit: 50, RateWindow: window})
	if got := c.BudgetResetsAt(); !got.IsZero() {
		t.Fatalf("reset known before any answer: %v", got)
	}
	before := time.Now()
	if _, _, err := c.EnrolledFactors(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	got := c.BudgetResetsAt()
	if got.Before(before) || got.After(time.Now().Add(window+2*time.Second)) {
		t.Fatalf("reset at %v, want within the %v window after %v", got, window, before)
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
	refusedOnceQueued(t, onelogin.PriorityQuery)
}

// refusedOnceQueued queues a call of priority prio behind a job's probe of
// the budget (query reserve 0.5) and checks that the answer showing the
// budget down to the reserve refuses it. It returns the pacer.
func refusedOnceQueued(t *testing.T, prio onelogin.Priority) *onelogin.Pacer {
	t.Helper()
	p := onelogin.NewPacer(0)
	p.SetQueryReserve(0.5)
	ctx := context.Background()
	// The first call probes the budget; the call queues behind it.
	if err := p.Wait(ctx, onelogin.PriorityNormal); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Wait(ctx, prio) }()
	waitQueued(t, p, 1)
	p.Observe(onelogin.RateLimit{Limit: 10, Remaining: 4, Reset: time.Now().Add(time.Hour)}, true)
	select {
	case err := <-errc:
		if !errors.Is(err, onelogin.ErrBusy) {
			t.Fatalf("queued call of priority %v: err = %v, want ErrBusy", prio, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("queued call of priority %v neither granted nor refused", prio)
	}
	return p
}

// Queries queue behind every job: queued first, granted last.
func TestPacerServesQueriesLast(t *testing.T) {
	q, n, u := onelogin.PriorityQuery, onelogin.PriorityNormal, onelogin.PriorityUrgent
	got, _ := grantOrder(t, []onelogin.Priority{q}, []onelogin.Priority{n, u})
	if want := []onelogin.Priority{u, n, q}; !slices.Equal(got, want) {
		t.Fatalf("grant order = %v, want urgent, normal, query", got)
	}
}

// Re-verification yields to queries too: background calls queued first
// are granted after every query and job.
func TestPacerServesBackgroundAfterQueries(t *testing.T) {
	b, q, n := onelogin.PriorityBackground, onelogin.PriorityQuery, onelogin.PriorityNormal
	got, _ := grantOrder(t, []onelogin.Priority{b}, []onelogin.Priority{q, n})
	if want := []onelogin.Priority{n, q, b}; !slices.Equal(got, want) {
		t.Fatalf("grant order = %v, want normal, query, background", got)
	}
}

// Below the query reserve a background call is refused like a query.
func TestPacerBackgroundRefusedAtReserve(t *testing.T) {
	p := refusedOnceQueued(t, onelogin.PriorityBackground)
	if err := p.Wait(context.Background(), onelogin.PriorityBackground); !errors.Is(err, onelogin.ErrBusy) {
		t.Fatalf("background call below the reserve: err = %v, want ErrBusy", err)
	}
}
