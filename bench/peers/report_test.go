package peers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSummariseAndSplice(t *testing.T) {
	sec := func(d time.Duration) time.Duration { return d * time.Second }
	runs := []Run{
		{System: "floor", Jobs: 1000, Elapsed: sec(1), CPU: sec(1)},
		{System: "watermill", Jobs: 1000, Elapsed: sec(2), CPU: sec(1)},
		{System: "floor", Jobs: 1000, Elapsed: sec(2), CPU: sec(1)},
		{System: "watermill", Jobs: 1000, Elapsed: sec(4), CPU: sec(3)},
		{System: "floor", Jobs: 1000, Elapsed: sec(4), CPU: sec(2)},
		{System: "watermill", Jobs: 1000, Elapsed: sec(5), CPU: sec(2)},
	}
	sum := Summarise(runs)
	if len(sum) != 2 || sum[0].System != "floor" || sum[1].System != "watermill" {
		t.Fatalf("summary = %+v", sum)
	}
	if sum[0].PerSecond != 500 || sum[1].PerSecond != 250 || sum[1].OfFloor != 0.5 || sum[1].CPUPer1000 != 2 {
		t.Errorf("medians: floor %v jobs/s, watermill %v jobs/s (%v of the floor, %v CPU-s/1000)", sum[0].PerSecond, sum[1].PerSecond, sum[1].OfFloor, sum[1].CPUPer1000)
	}

	path := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nthe worker's figures\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	first := Section(sum, 1000, 16, 3, "on a test")
	if err := Splice(path, first); err != nil {
		t.Fatal(err)
	}
	second := strings.Replace(first, "on a test", "on a second test", 1)
	if err := os.WriteFile(path, append(must(os.ReadFile(path)), "\n## After\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Splice(path, second); err != nil {
		t.Fatal(err)
	}
	got := string(must(os.ReadFile(path)))
	if strings.Count(got, beginMarker) != 1 || !strings.Contains(got, "on a second test") || strings.Contains(got, "on a test.") ||
		!strings.HasPrefix(got, "# Benchmarks\n\nthe worker's figures\n\n"+beginMarker) || !strings.HasSuffix(got, endMarker+"\n\n## After\n") {
		t.Errorf("spliced file:\n%s", got)
	}
	if !strings.Contains(got, "| Watermill over JetStream | 500, 250, 200 | 250 | 0.50 | 2.00 |") {
		t.Errorf("no Watermill row in:\n%s", got)
	}
	if err := os.WriteFile(path, []byte(beginMarker+"\nhalf a section\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Splice(path, first); err == nil {
		t.Error("a file with one marker was spliced")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
