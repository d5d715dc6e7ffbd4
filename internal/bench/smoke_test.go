package bench

import (
	"testing"
	"time"
)

// TestSmoke runs every measurement of the harness at a tiny size, so that
// `make bench` cannot rot unnoticed; its numbers mean nothing.
func TestSmoke(t *testing.T) {
	f, err := FloorVsWorker(200, 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	if f.Floor <= 0 || f.Worker <= 0 {
		t.Fatalf("floor %v, worker %v", f.Floor, f.Worker)
	}
	o, err := OffboardVsFloor(100, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	if o.Floor <= 0 || o.Worker <= 0 || o.WorkerCPUMedian <= 0 || o.FloorCPUMedian <= 0 {
		t.Fatalf("offboards: %+v", o)
	}
	l, err := LatencyBound(60, 8, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if l.CallsPerJob < 1 || l.Ratio <= 0 || l.Ratio > 1.2 {
		t.Fatalf("latency-bound: %+v", l)
	}
	bb, err := BudgetBound(40, 5, 30, 2*time.Second, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(bb.Windows) != 1 || bb.Windows[0] > 30 || bb.TooMany > 2 {
		t.Fatalf("budget-bound: %+v", bb)
	}
	cs, err := CallsPerJob(5)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.PerJob <= 0 || c.PerJob > c.Naive {
			t.Errorf("%s: %.2f calls per job, naive %.0f", c.Type, c.PerJob, c.Naive)
		}
	}
	ex, err := ExpensiveInput(30, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Absurd.ValidLatency <= 0 || ex.Ordinary.CPU <= 0 || ex.Absurd.Bad != 30 {
		t.Fatalf("expensive input: %+v", ex)
	}
}
