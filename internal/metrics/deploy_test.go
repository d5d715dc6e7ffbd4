package metrics_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/metrics"
)

// metricToken finds names in the worker's namespaces (mfa_, go_, process_)
// in PromQL expressions, rule files and dashboards.
var metricToken = regexp.MustCompile(`\b(?:mfa|go|process)_[a-zA-Z0-9_]+\b`)

// recorder notes the name of every metric described by a collector as it
// is registered, including vectors that have no series yet.
type recorder struct {
	*prometheus.Registry
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registry.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// registered returns every metric name the worker registers.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	reg := &recorder{Registry: prometheus.NewRegistry(), names: map[string]bool{}}
	metrics.New(reg)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		reg.names[f.GetName()] = true
	}
	return reg.names
}

// announced lists metrics that deploy files may use before this package
// declares them: the contract 1.1 metrics (mfa_jobs_scheduled,
// mfa_onelogin_credentials_ok, and `worker ingest`'s mfa_hr_events_total
// and mfa_ingest_requests_total). An entry is redundant once the name is declared
// here; a misspelt entry still fails the dashboard check below.
var announced = []string{
	"mfa_jobs_scheduled",
	"mfa_onelogin_credentials_ok",
	"mfa_hr_events_total",
	"mfa_ingest_requests_total",
}

// declared returns the metric names given as `Name: "..."` in the option
// literals of this package's non-test files, including collectors that
// other commands register (`worker ingest`'s metrics).
func declared(t *testing.T) map[string]bool {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			kv, ok := n.(*ast.KeyValueExpr)
			if !ok {
				return true
			}
			key, ok := kv.Key.(*ast.Ident)
			lit, isLit := kv.Value.(*ast.BasicLit)
			if !ok || key.Name != "Name" || !isLit || lit.Kind != token.STRING {
				return true
			}
			if v, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(v, "mfa_") {
				names[v] = true
			}
			return true
		})
	}
	return names
}

// knownNames is every name deploy files may use: registered by New,
// declared in this package for other commands, or announced.
func knownNames(t *testing.T) map[string]bool {
	known := registered(t)
	for n := range declared(t) {
		known[n] = true
	}
	for _, n := range announced {
		if !known[n] {
			t.Logf("%s is announced but not declared in internal/metrics yet", n)
		}
		known[n] = true
	}
	return known
}

// unknownMetrics lists the metric names in text that the worker does not
// register, allowing the series suffixes of histograms and summaries.
func unknownMetrics(text string, known map[string]bool) []string {
	var out []string
	seen := map[string]bool{}
	for _, name := range metricToken.FindAllString(text, -1) {
		ok := known[name]
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			ok = ok || known[strings.TrimSuffix(name, suf)]
		}
		if !ok && !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func TestUnknownMetricsCatchesMisspellings(t *testing.T) {
	known := registered(t)
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum(rate(mfa_jobs_total[5m]))`, nil},
		{`histogram_quantile(0.9, sum by (le) (rate(mfa_job_duration_seconds_bucket[5m])))`, nil},
		{`go_goroutines + process_resident_memory_bytes`, nil},
		{`sum(rate(mfa_job_total[5m]))`, []string{"mfa_job_total"}},
		{`rate(mfa_jobs_totl[5m])`, []string{"mfa_jobs_totl"}},
		{`mfa_onelogin_rate_limit_remainig < 250`, []string{"mfa_onelogin_rate_limit_remainig"}},
		{`rate(mfa_job_duration_second_bucket[5m])`, []string{"mfa_job_duration_second_bucket"}},
		{`mfa_consumer_pending{consumer="x"}`, []string{"mfa_consumer_pending"}},
		{`rate(mfa_dead_letter_total[1h]) / go_gorutines`, []string{"go_gorutines", "mfa_dead_letter_total"}},
	} {
		got := unknownMetrics(tc.expr, known)
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: unknown %v, want %v", tc.expr, got, tc.want)
		}
	}
	for _, n := range metrics.Names {
		if !known[n] {
			t.Errorf("metrics.Names lists %s, which is not registered", n)
		}
	}
}

func TestDeployFilesUseOnlyRegisteredMetrics(t *testing.T) {
	known := knownNames(t)
	root := filepath.Join("..", "..", "deploy")
	files := map[string]string{}
	// The promtool tests are included: an input series with a misspelt
	// name would test nothing.
	for _, pattern := range []string{"grafana/dashboards/*.json", "prometheus/*.yml"} {
		matches, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err != nil {
				t.Fatal(err)
			}
			files[m] = string(b)
		}
	}
	if len(files) < 5 {
		t.Fatalf("found only %d deploy files", len(files))
	}
	used := map[string]bool{}
	for path, text := range files {
		if bad := unknownMetrics(text, known); len(bad) > 0 {
			t.Errorf("%s uses metrics the worker does not register: %v", path, bad)
		}
		for _, n := range metricToken.FindAllString(text, -1) {
			used[n] = true
		}
	}
	// The dashboard must show every contract metric.
	dash := files[filepath.Join(root, "grafana/dashboards/mfa-worker.json")]
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(dash), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs strings.Builder
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs.WriteString(tg.Expr + "\n")
		}
	}
	// And every metric of the worker and of `worker ingest`.
	all := append([]string{}, metrics.Names...)
	for n := range declared(t) {
		all = append(all, n)
	}
	all = append(all, announced...)
	for _, n := range all {
		if !regexp.MustCompile(`\b` + n + `(_bucket)?\b`).MatchString(exprs.String()) {
			t.Errorf("the dashboard shows no panel of %s", n)
		}
	}
}

func TestDeclaredFindsTheRegisteredNames(t *testing.T) {
	// The source scan must see at least what New registers, or it would
	// miss the ingest metrics too.
	d := declared(t)
	for _, n := range metrics.Names {
		if !d[n] {
			t.Errorf("declared() misses %s, which New registers", n)
		}
	}
}
