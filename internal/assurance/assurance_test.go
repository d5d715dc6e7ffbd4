package assurance_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/assurance"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/testenv/leak"
)

func TestMain(m *testing.M) { leak.VerifyTestMain(m) }

type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) Drift()              { c.Check("drift_counter") }
func (c *counts) Check(result string) { c.mu.Lock(); c.n[result]++; c.mu.Unlock() }
func (c *counts) get(k string) int    { c.mu.Lock(); defer c.mu.Unlock(); return c.n[k] }
func (c *counts) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

func client(tb testing.TB, url string, sim *simulator.Server) *onelogin.Client {
	tb.Helper()
	ol, err := onelogin.NewClient(onelogin.Config{BaseURL: url, ClientID: sim.Config().ClientID, ClientSecret: sim.Config().ClientSecret, QueryReserve: 0.2})
	if err != nil {
		tb.Fatal(err)
	}
	return ol
}

// registry starts the leaver registry on js until the test ends.
func registry(tb testing.TB, js jetstream.JetStream) *leaver.Service {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := leaver.Start(ctx, js, 1, nil, testenv.Quiet())
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("registry: %v", err)
		}
	})
	<-svc.View.Ready()
	return svc
}

func runChecker(tb testing.TB, c *assurance.Checker) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("checker: %v", err)
		}
	})
}

// TestDriftIsFoundAndRemoved: a leaver is offboarded by the worker; a
// factor enrolled again afterwards (a help desk) is found by the next
// re-verification, reported as drift (record open, event, counter), and
// removed by the offboard the checker publishes; the record is closed
// again by that offboard's result.
func TestDriftIsFoundAndRemoved(t *testing.T) {
	bed := testenv.StartBed(t, simulator.Config{FirstUser: 1, LastUser: 100})
	bed.RunWorker(t, jobs.DefaultConfig(), testenv.WorkerOptions{})
	svc := registry(t, bed.JS)
	m := &counts{n: map[string]int{}}
	c, err := assurance.New(assurance.Config{Interval: time.Second, Tick: 20 * time.Millisecond, Action: assurance.ActionOffboard},
		svc.Store, svc.View, client(t, bed.SimURL, bed.Sim), bed.JS, m, testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	drifts, err := bed.JS.Conn().SubscribeSync(assurance.DriftSubject)
	if err != nil {
		t.Fatal(err)
	}
	runChecker(t, c)

	const user = 11
	if _, err := bed.Sim.EnrollDevice(user, "OneLogin SMS", "phone", true); err != nil {
		t.Fatal(err)
	}
	if err := testenv.PublishOne(context.Background(), bed.JS, "offboard", testenv.Body("leave-11", "offboard", user, nil), "leave-11"); err != nil {
		t.Fatal(err)
	}
	key := leaver.UserKey(user)
	rec := func() leaver.Record {
		r, _, _ := svc.Store.Get(context.Background(), key)
		return r
	}
	// The offboard, then a clean re-verification.
	testenv.Eventually(t, 20*time.Second, func() bool {
		r := rec()
		return (r.State == leaver.Offboarded || r.State == leaver.Verified) && !r.LastCheckAt.IsZero() && m.get("clean") > 0
	}, func() string { return fmt.Sprintf("record %+v, checks %v", rec(), m.snapshot()) })
	if m.get("clean") == 0 || m.get("drift") != 0 {
		t.Fatalf("checks %v", m.snapshot())
	}
	// Re-enrolled by the help desk.
	if _, err := bed.Sim.EnrollDevice(user, "Google Authenticator", "new phone", true); err != nil {
		t.Fatal(err)
	}
	msg, err := drifts.NextMsg(15 * time.Second)
	if err != nil {
		t.Fatalf("no drift event: %v (record %+v)", err, rec())
	}
	var ev assurance.DriftEvent
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.UserID != user || len(ev.DeviceIDs) != 1 || ev.FactorTypes[0] != "Google Authenticator" || ev.JobID == "" {
		t.Fatalf("drift event %s: %+v %v", msg.Data, ev, err)
	}
	// The record opened with reason drift: the transitions keep it even
	// if the offboard closed it since.
	sawDrift := false
	for _, tr := range rec().Transitions {
		sawDrift = sawDrift || (tr.State == leaver.Open && tr.Reason == leaver.ReasonDrift)
	}
	if !sawDrift || rec().Drifts != 1 || m.get("drift_counter") != 1 {
		t.Fatalf("drift not recorded: %+v, checks %v", rec(), m.snapshot())
	}
	// The offboard the checker published removes the factor and closes the
	// record again.
	testenv.Eventually(t, 20*time.Second, func() bool {
		r := rec()
		return len(bed.Sim.Devices(user)) == 0 && r.JobID == ev.JobID && (r.State == leaver.Offboarded || r.State == leaver.Verified)
	}, func() string { return fmt.Sprintf("devices %v, record %+v", bed.Sim.Devices(user), rec()) })
}

// TestDriftAlertOnlyLeavesTheRecordOpen: with the default action the
// factor stays and the record stays open with reason drift.
func TestDriftAlertOnlyLeavesTheRecordOpen(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	sim := simulator.New(simulator.Config{FirstUser: 1, LastUser: 100})
	hs := httptest.NewServer(sim)
	defer hs.Close()
	provisionResults(t, js)
	svc := registry(t, js)
	offboarded(t, svc, 21, time.Now().Add(-time.Hour))
	if _, err := sim.EnrollDevice(21, "OneLogin SMS", "phone", true); err != nil {
		t.Fatal(err)
	}
	// The last second of the next interval: the leaver is due whatever
	// its offset into the interval.
	at := time.Now().Truncate(time.Hour).Add(2*time.Hour - time.Second)
	c, err := assurance.New(assurance.Config{Interval: time.Hour, Now: func() time.Time { return at }},
		svc.Store, svc.View, client(t, hs.URL, sim), js, nil, testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	waitView(t, svc, 1)
	if n := c.Pass(context.Background()); n != 1 {
		t.Fatalf("checked %d", n)
	}
	r, _, err := svc.Store.Get(context.Background(), leaver.UserKey(21))
	if err != nil || r.State != leaver.Open || r.Reason != leaver.ReasonDrift || len(sim.Devices(21)) != 1 {
		t.Fatalf("record %+v, devices %v, %v", r, sim.Devices(21), err)
	}
	if s := testenv.Count(js, "MFA_JOBS"); s > 0 {
		t.Fatalf("the alert action published %d jobs", s)
	}
}

// TestEachLeaverCheckedOncePerIntervalAcrossReplicas: two checkers (two
// replicas) on the same registry read each leaver once per slot, and
// again in the next slot; leavers offboarded longer ago than the window
// are not read.
func TestEachLeaverCheckedOncePerIntervalAcrossReplicas(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	sim := simulator.New(simulator.Config{FirstUser: 1, LastUser: 1000, RateLimit: 100000})
	hs := httptest.NewServer(sim)
	defer hs.Close()
	provisionResults(t, js)
	svc := registry(t, js)
	start := time.Now()
	const n = 40
	for i := range n {
		offboarded(t, svc, int64(100+i), start.Add(-48*time.Hour))
	}
	offboarded(t, svc, 999, start.Add(-40*24*time.Hour)) // outside 30 days
	waitView(t, svc, n+1)
	var clock struct {
		sync.Mutex
		t time.Time
	}
	clock.t = start
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.t }
	cfg := assurance.Config{Interval: time.Hour, Budget: 0.5, Now: now}
	var cs []*assurance.Checker
	for range 2 {
		c, err := assurance.New(cfg, svc.Store, svc.View, client(t, hs.URL, sim), js, nil, testenv.Quiet())
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	reads := func() int { return sim.Stats().Requests["enrolled_factors"] }
	pass := func(at time.Time) int {
		clock.Lock()
		clock.t = at
		clock.Unlock()
		var wg sync.WaitGroup
		total := make([]int, len(cs))
		for i, c := range cs {
			wg.Add(1)
			go func() { defer wg.Done(); total[i] = c.Pass(context.Background()) }()
		}
		wg.Wait()
		return total[0] + total[1]
	}
	// The end of the next slot: every leaver is due.
	slotEnd := start.Truncate(time.Hour).Add(2*time.Hour - time.Second)
	got := pass(slotEnd)
	if got != n || reads() != n {
		t.Fatalf("first interval: %d checked, %d reads, want %d", got, reads(), n)
	}
	// The same slot again (both replicas, after the view caught up):
	// nothing more.
	testenv.Eventually(t, 5*time.Second, func() bool { return claimed(svc) == n }, func() string { return "claims not seen" })
	if got := pass(slotEnd); got != 0 || reads() != n {
		t.Fatalf("the same interval again: %d checked, %d reads", got, reads())
	}
	// The next interval: each once more.
	if got := pass(slotEnd.Add(time.Hour)); got != n || reads() != 2*n {
		t.Fatalf("second interval: %d checked, %d reads, want %d", got, reads(), 2*n)
	}
}

func claimed(svc *leaver.Service) int {
	n := 0
	svc.View.Each(func(s leaver.Summary) {
		if !s.LastCheckAt.IsZero() {
			n++
		}
	})
	return n
}

func provisionResults(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	ctx := context.Background()
	for _, s := range []jetstream.StreamConfig{
		{Name: "MFA_RESULTS", Subjects: []string{"mfa.results.>"}},
		{Name: "MFA_DLQ", Subjects: []string{"mfa.dlq.>"}},
		{Name: "MFA_JOBS", Subjects: []string{"mfa.jobs.>"}},
	} {
		if _, err := js.CreateOrUpdateStream(ctx, s); err != nil {
			tb.Fatal(err)
		}
	}
}

// offboarded records a finished offboard of user at t.
func offboarded(tb testing.TB, svc *leaver.Service, user int64, t time.Time) {
	tb.Helper()
	if _, _, err := svc.Store.ApplyResult(context.Background(), leaver.Result{
		JobID: fmt.Sprintf("off-%d", user), UserID: user, Outcome: "succeeded", FinishedAt: t, VerifiedAt: t,
	}); err != nil {
		tb.Fatal(err)
	}
}

func waitView(tb testing.TB, svc *leaver.Service, n int) {
	tb.Helper()
	testenv.Eventually(tb, 10*time.Second, func() bool { return svc.View.Len() >= n }, func() string {
		return fmt.Sprintf("the view holds %d records, want %d", svc.View.Len(), n)
	})
}
