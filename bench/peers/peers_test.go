package peers

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/bench"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

var (
	reportPath  = flag.String("report", "", "splice the peers section into this markdown file (docs/benchmarks.md) after the benchmark")
	jobsN       = flag.Int("jobs", 10_000, "offboard jobs per run")
	concurrency = flag.Int("concurrency", 16, "concurrency of every system")
	rounds      = flag.Int("rounds", 3, "rounds; each runs the floor, Watermill and the worker once")
)

func TestMain(m *testing.M) {
	if os.Getenv(StandinEnv) != "" {
		if err := ServeStandin(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "stand-in:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	flag.Parse()
	os.Exit(m.Run())
}

// results reads a stream from its first message to its last and counts
// the results of each job id, with their outcomes.
func results(t *testing.T, b *Bed, stream string) map[string][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := b.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	n := b.Count(stream)
	out := map[string][]string{}
	for i := 0; i < n; i++ {
		m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("%s: message %d of %d: %v", stream, i+1, n, err)
		}
		var r struct {
			JobID   string `json:"job_id"`
			Outcome string `json:"outcome"`
		}
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			t.Fatalf("%s: %v: %s", stream, err, m.Data())
		}
		out[r.JobID] = append(out[r.JobID], r.Outcome)
	}
	return out
}

// Every system gives each job exactly one result, and those that call
// OneLogin find the stand-in's user without devices ("noop").
func TestEachSystemGivesOneResultPerJob(t *testing.T) {
	st, err := StartStandin()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const n = 300
	for _, tc := range []struct {
		name   string
		run    func(*Bed) (Run, error)
		stream string
	}{
		{"transport", func(b *Bed) (Run, error) { return Floor(b, nil, n, 16) }, "FLOOR_RESULTS"},
		{"floor", func(b *Bed) (Run, error) {
			return Floor(b, bench.NewOneLogin(st.URL, ClientID, ClientSecret, 16), n, 16)
		}, "FLOOR_RESULTS"},
		{"watermill", func(b *Bed) (Run, error) { return Watermill(b, st, n, 16) }, wmResults},
		{"worker", func(b *Bed) (Run, error) { return Worker(b, st, n, 16) }, topology.StreamResults},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := NewBed()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			r, err := tc.run(b)
			if err != nil {
				t.Fatal(err)
			}
			if r.Jobs != n || r.Elapsed <= 0 || r.CPU <= 0 {
				t.Errorf("run = %+v", r)
			}
			if tc.name == "transport" {
				return // the transport echoes the job as its result
			}
			got := results(t, b, tc.stream)
			for _, j := range Offboards(n) {
				if o := got[j.ID]; len(o) != 1 || o[0] != "noop" {
					t.Errorf("job %s: results %v, want one noop", j.ID, o)
				}
			}
			if len(got) != n {
				t.Errorf("%d job ids have results, want %d", len(got), n)
			}
		})
	}
}

// BenchmarkPeers runs the floor, Watermill and the worker in turn, rounds
// times, each on a fresh server, and splices its section into -report.
func BenchmarkPeers(b *testing.B) {
	st, err := StartStandin()
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	systems := []struct {
		name string
		run  func(*Bed) (Run, error)
	}{
		{"transport", func(bed *Bed) (Run, error) { return Floor(bed, nil, *jobsN, *concurrency) }},
		{"floor", func(bed *Bed) (Run, error) {
			return Floor(bed, bench.NewOneLogin(st.URL, ClientID, ClientSecret, *concurrency), *jobsN, *concurrency)
		}},
		{"watermill", func(bed *Bed) (Run, error) { return Watermill(bed, st, *jobsN, *concurrency) }},
		{"worker", func(bed *Bed) (Run, error) { return Worker(bed, st, *jobsN, *concurrency) }},
	}
	var runs []Run
	for i := 0; i < b.N; i++ {
		for round := 0; round < *rounds; round++ {
			for _, s := range systems {
				bed, err := NewBed()
				if err != nil {
					b.Fatal(err)
				}
				r, err := s.run(bed)
				bed.Close()
				if err != nil {
					b.Fatalf("%s: %v", s.name, err)
				}
				runs = append(runs, r)
			}
		}
	}
	sum := Summarise(runs)
	for _, s := range sum {
		b.ReportMetric(s.PerSecond, s.System+"_jobs/s")
		b.ReportMetric(s.CPUPer1000, s.System+"_cpu_s/1000")
	}
	if *reportPath != "" {
		if err := Splice(*reportPath, Section(sum, *jobsN, *concurrency, *rounds, environment())); err != nil {
			b.Fatal(err)
		}
	}
}

// environment describes the sitting: date, commit, machine, versions.
func environment() string {
	commit := "unknown"
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	deps := "module versions unknown"
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.Version}}",
		"github.com/ThreeDotsLabs/watermill", "github.com/ThreeDotsLabs/watermill-nats/v2", "github.com/nats-io/nats-server/v2", "github.com/nats-io/nats.go").Output()
	if err == nil {
		deps = strings.ReplaceAll(strings.TrimSpace(strings.ReplaceAll(string(out), "github.com/", "")), "\n", ", ")
	}
	return fmt.Sprintf("on %s at commit %s; %d CPUs, %s, %s/%s; %s",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), commit, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, deps)
}
