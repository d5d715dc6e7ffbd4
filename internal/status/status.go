package status

import (
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mfa-worker/mfa-worker/internal/authlimit"
	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
)

// Metric names the page reads, as in the wire contract.
const (
	MetricPending     = "mfa_consumer_pending_messages"
	MetricInFlight    = "mfa_jobs_in_flight"
	MetricRemaining   = "mfa_onelogin_rate_limit_remaining"
	MetricCredentials = "mfa_onelogin_credentials_ok"
	MetricDeadLetters = "mfa_dead_letters_total"
	MetricScheduled   = "mfa_jobs_scheduled"
	MetricJobs        = "mfa_jobs_total"
)

// The lanes: their consumers and the job types each serves. A type not
// listed here is counted in the normal lane.
var (
	UrgentConsumer = "mfa-worker-urgent"
	NormalConsumer = "mfa-worker"
	UrgentTypes    = []string{"offboard", "remove", "cancel"}
)

// RecentResults gives the last results, newest first.
type RecentResults interface {
	Recent(ctx context.Context, n int) ([]history.Entry, error)
}

// HistoryReader gives one person's history, newest first.
type HistoryReader interface {
	Query(ctx context.Context, userID int64, limit int) ([]history.Entry, error)
}

// DeadLetterCounter counts the dead letters held now, by job type.
type DeadLetterCounter interface {
	DeadLettersByType(ctx context.Context) (map[string]uint64, error)
}

// BudgetClock tells when OneLogin's current rate-limit window ends; the zero
// time means not known yet.
type BudgetClock interface {
	BudgetResetsAt() time.Time
}

// Config configures the page. Zero fields take the defaults noted.
type Config struct {
	Refresh      time.Duration // 15s: the page reloads itself this often
	RecentLimit  int           // 20 recent results (at most 500)
	HistoryLimit int           // 50 entries of a looked-up person (at most 500)
	// Auth, when set, makes the page ask for basic auth.
	Auth *Credentials
	// Throttle, when set, answers 429 to an address past its budget of
	// wrong credentials.
	Throttle *authlimit.Limiter
	// Version is shown in the footer.
	Version string
}

// DefaultConfig is the page as shipped.
func DefaultConfig() Config {
	return Config{Refresh: 15 * time.Second, RecentLimit: 20, HistoryLimit: history.DefaultLimit}
}

// Deps are where the page's numbers come from. Gatherer is required; a nil
// other field hides its part of the page.
type Deps struct {
	Gatherer    prometheus.Gatherer
	Results     RecentResults
	History     HistoryReader
	DeadLetters DeadLetterCounter
	Budget      BudgetClock
	// People resolves an email, username or external id in the person
	// search; without it the search takes OneLogin user ids only.
	People PersonFinder
	// Leavers and Held show the leaver registry and the guard's held
	// jobs: a person's leaver state and the work in progress.
	Leavers LeaverReader
	Held    HeldLister
	// Retries lists the jobs waiting for a retry (Streams does).
	Retries RetryLister
	Log     *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

type page struct {
	cfg  Config
	deps Deps
	tmpl *template.Template
}

//go:embed page.html
var pageHTML string

// New returns the page's handler; mount it at /status on the worker's HTTP
// address. It answers GET and HEAD only.
func New(cfg Config, deps Deps) (http.Handler, error) {
	if deps.Gatherer == nil {
		return nil, errors.New("status: a prometheus.Gatherer is required")
	}
	if deps.Log == nil {
		return nil, errors.New("status: a logger is required")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	// Zero and negative values take the defaults.
	d := DefaultConfig()
	cfg.Refresh = cmp.Or(max(cfg.Refresh, 0), d.Refresh)
	cfg.RecentLimit = min(cmp.Or(max(cfg.RecentLimit, 0), d.RecentLimit), 500)
	cfg.HistoryLimit = min(cmp.Or(max(cfg.HistoryLimit, 0), d.HistoryLimit), history.MaxLimit)
	t, err := template.New("page").Funcs(template.FuncMap{
		"num":   formatNum,
		"deref": func(p *float64) float64 { return *p },
		"stamp": func(t time.Time) string { return stampUTC(t) },
		"ms":    func(ms int64) string { return (time.Duration(ms) * time.Millisecond).String() },
		// short, dash and esc show a stored string with its control
		// characters escaped, as `worker history` prints them.
		"short": func(s string) string { return shortID(history.EscapeControls(s)) },
		"esc":   history.EscapeControls,
		// code is a result's error code and who cancelled it, as
		// `worker history` prints it (dash escapes its control characters).
		"code": func(e history.Entry) string { return e.DisplayCode() },
		"sh":   shellQuote,
		"dash": func(s string) string {
			if s == "" {
				return "–"
			}
			return history.EscapeControls(s)
		},
	}).Parse(pageHTML)
	if err != nil {
		return nil, fmt.Errorf("status: template: %w", err)
	}
	return &page{cfg: cfg, deps: deps, tmpl: t}, nil
}

// view is what the template renders.
type view struct {
	Refresh     int
	Version     string
	Now         string
	Lanes       []lane
	InFlight    []kv
	Remaining   *float64
	ResetsIn    string
	Credentials string // ok, failing, unknown
	Finished    []kv
	DeadLetters []deadLetter
	DLTotal     float64
	DLHeld      []kv
	DLHeldErr   string
	Scheduled   []kv
	SchedTotal  float64
	Recent      []history.Entry
	RecentErr   string
	HasRecent   bool
	HasHistory  bool
	Lookup      *lookup
	Errors      []string
	// Filters of the recent results (query parameters type and outcome).
	FType, FOutcome string
	Types, Outcomes []string
	Filtered        bool
	WIP             wip
	HasWIP          bool
	CanResolve      bool
}

type lane struct {
	Name     string
	Consumer string
	Pending  *float64
	InFlight float64
}

type kv struct {
	Key   string
	Value float64
}

type deadLetter struct {
	Type, Reason string
	Value        float64
}

type lookup struct {
	Input   string
	By      string
	UserID  int64
	Entries []history.Entry
	Err     string
	Person  *person
}

func (p *page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if p.cfg.Auth != nil && !p.cfg.Auth.check(w, r, p.cfg.Throttle) {
		if w.Header().Get("Retry-After") != "" {
			return // throttled: answered
		}
		h.Set("WWW-Authenticate", `Basic realm="mfa-worker status", charset="UTF-8"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "the status page is read-only", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	v, code := p.build(ctx, r)
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, v); err != nil {
		p.deps.Log.Error("status page: render", "error", err)
		http.Error(w, "the status page could not be rendered", http.StatusInternalServerError)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func (p *page) build(ctx context.Context, r *http.Request) (view, int) {
	now := p.deps.Now()
	v := view{
		Refresh:     int(math.Ceil(p.cfg.Refresh.Seconds())),
		Version:     p.cfg.Version,
		Now:         stampUTC(now),
		Credentials: "unknown",
		ResetsIn:    "unknown",
		HasRecent:   p.deps.Results != nil,
		HasHistory:  p.deps.History != nil,
	}
	code := http.StatusOK
	fams, err := p.deps.Gatherer.Gather()
	if err != nil {
		// Gather returns what it could alongside the error.
		p.deps.Log.Warn("status page: gather metrics", "error", err)
		v.Errors = append(v.Errors, "some metrics could not be gathered")
	}
	m := index(fams)

	pending := m.byLabel(MetricPending, "consumer")
	inflight := m.byLabel(MetricInFlight, "type")
	urgent := lane{Name: "urgent", Consumer: UrgentConsumer}
	normal := lane{Name: "normal", Consumer: NormalConsumer}
	if x, ok := pending[UrgentConsumer]; ok {
		urgent.Pending = &x
	}
	if x, ok := pending[NormalConsumer]; ok {
		normal.Pending = &x
	}
	for t, x := range inflight {
		if slices.Contains(UrgentTypes, t) {
			urgent.InFlight += x
		} else {
			normal.InFlight += x
		}
	}
	v.Lanes = []lane{urgent, normal}
	v.InFlight = sorted(inflight)

	if x, ok := m.single(MetricRemaining); ok {
		v.Remaining = &x
	}
	if p.deps.Budget != nil {
		if at := p.deps.Budget.BudgetResetsAt(); !at.IsZero() {
			d := max(at.Sub(now), 0).Round(time.Second)
			v.ResetsIn = d.String()
		}
	}
	if x, ok := m.single(MetricCredentials); ok {
		v.Credentials = "failing"
		if x == 1 {
			v.Credentials = "ok"
		}
	}
	v.Finished = sorted(m.byLabel(MetricJobs, "outcome"))

	for _, s := range m.series(MetricDeadLetters) {
		if s.value == 0 {
			continue
		}
		v.DeadLetters = append(v.DeadLetters, deadLetter{Type: s.labels["type"], Reason: s.labels["reason"], Value: s.value})
		v.DLTotal += s.value
	}
	slices.SortFunc(v.DeadLetters, func(a, b deadLetter) int {
		return strings.Compare(a.Type+"\x00"+a.Reason, b.Type+"\x00"+b.Reason)
	})
	if p.deps.DeadLetters != nil {
		held, err := p.deps.DeadLetters.DeadLettersByType(ctx)
		if err != nil {
			p.deps.Log.Warn("status page: count dead letters", "error", err)
			v.DLHeldErr = "unavailable"
		}
		for t, n := range held {
			v.DLHeld = append(v.DLHeld, kv{t, float64(n)})
		}
		slices.SortFunc(v.DLHeld, func(a, b kv) int { return strings.Compare(a.Key, b.Key) })
	}
	sched := m.byLabel(MetricScheduled, "type")
	v.Scheduled = sorted(sched)
	for _, x := range sched {
		v.SchedTotal += x
	}

	q := r.URL.Query()
	for _, t := range job.Types {
		v.Types = append(v.Types, string(t))
	}
	for _, o := range job.Outcomes {
		v.Outcomes = append(v.Outcomes, string(o))
	}
	v.FType, v.FOutcome = q.Get("type"), q.Get("outcome")
	if !validType(v.FType) || !validOutcome(v.FOutcome) {
		v.Errors = append(v.Errors, "unknown type or outcome in the filter: showing every result")
		v.FType, v.FOutcome = "", ""
		code = http.StatusBadRequest
	}
	v.Filtered = v.FType != "" || v.FOutcome != ""
	if p.deps.Results != nil {
		n := p.cfg.RecentLimit
		if v.Filtered {
			n = maxScan // a filter looks further back
		}
		rs, err := p.deps.Results.Recent(ctx, n)
		if err != nil {
			p.deps.Log.Warn("status page: recent results", "error", err)
			v.RecentErr = "unavailable"
		}
		if v.Filtered {
			rs = slices.DeleteFunc(rs, func(e history.Entry) bool {
				return v.FType != "" && e.Type != v.FType || v.FOutcome != "" && e.Outcome != v.FOutcome
			})
		}
		v.Recent = rs[:min(len(rs), p.cfg.RecentLimit)]
	}
	p.workInProgress(ctx, &v)

	v.CanResolve = p.deps.People != nil
	if p.deps.History != nil && q.Has("user") {
		lk, c := p.lookup(ctx, strings.TrimSpace(q.Get("user")), q.Get("by"))
		v.Lookup = lk
		if c != http.StatusOK {
			code = c
		}
	}
	return v, code
}

// maxScan is how many recent results a filtered view reads to find its
// rows.
const maxScan = 500

// lookup finds the person the search names and reads their history,
// leaver record and held jobs.
func (p *page) lookup(ctx context.Context, in, by string) (*lookup, int) {
	if by == "" {
		by = ByAuto
	}
	lk := &lookup{Input: in, By: by}
	sel, id, msg := selector(by, in)
	if msg != "" {
		lk.Err = msg
		return lk, http.StatusBadRequest
	}
	if id == 0 {
		if p.deps.People == nil {
			lk.Err = "this worker looks people up by OneLogin user id only"
			return lk, http.StatusBadRequest
		}
		got, err := p.deps.People.ResolveUser(ctx, sel)
		switch {
		case err != nil:
			p.deps.Log.Warn("status page: resolve a person", "error", err)
			lk.Err = resolveError(err)
			return lk, http.StatusServiceUnavailable
		case got == 0:
			lk.Err = "no single OneLogin user has this " + strings.ReplaceAll(by, "_", " ")
			if by == ByAuto {
				lk.Err = "no single OneLogin user matches"
			}
			return lk, http.StatusNotFound
		}
		id = got
	}
	lk.UserID = id
	es, err := p.deps.History.Query(ctx, id, p.cfg.HistoryLimit)
	if err != nil {
		p.deps.Log.Warn("status page: history lookup", "error", err)
		lk.Err = "history is unavailable"
	}
	lk.Entries = es
	pp := &person{}
	if p.deps.Leavers != nil {
		rec, err := p.deps.Leavers.Person(ctx, id)
		if err != nil {
			p.deps.Log.Warn("status page: leaver record", "error", err)
			pp.LeaverErr = "the leaver registry is unavailable"
		}
		pp.Leaver = rec
	}
	if p.deps.Held != nil {
		hs, err := p.deps.Held.List(ctx, guard.Filter{})
		if err != nil {
			p.deps.Log.Warn("status page: held jobs", "error", err)
			pp.HeldErr = "held jobs are unavailable"
		}
		pp.Held = heldRows(hs, id)
	}
	lk.Person = pp
	return lk, http.StatusOK
}

// workInProgress fills the open leavers and the held jobs.
func (p *page) workInProgress(ctx context.Context, v *view) {
	if p.deps.Leavers != nil {
		v.HasWIP, v.WIP.HasOpen = true, true
		open, n := p.deps.Leavers.List(leaver.Open, wipLimit)
		for _, s := range open {
			v.WIP.Open = append(v.WIP.Open, leaverRow{Summary: s, CloseCmd: closeCmd(s.Key)})
		}
		v.WIP.OpenTotal = n
	}
	if p.deps.Retries != nil {
		v.HasWIP, v.WIP.HasRetry = true, true
		rs, n, cut, err := p.deps.Retries.Retrying(ctx, wipLimit)
		if err != nil {
			p.deps.Log.Warn("status page: jobs waiting for a retry", "error", err)
			v.WIP.RetryErr = "unavailable"
		}
		v.WIP.Retry, v.WIP.RetryTotal, v.WIP.RetryCut = rs, n, cut
	}
	if p.deps.Held != nil {
		v.HasWIP, v.WIP.HasHeld = true, true
		hs, err := p.deps.Held.List(ctx, guard.Filter{})
		if err != nil {
			p.deps.Log.Warn("status page: held jobs", "error", err)
			v.WIP.HeldErr = "unavailable"
		}
		v.WIP.Held = heldRows(hs, 0)
	}
}

// metricIndex holds gathered families by name.
type metricIndex map[string]*dto.MetricFamily

type sample struct {
	labels map[string]string
	value  float64
}

func index(fams []*dto.MetricFamily) metricIndex {
	m := make(metricIndex, len(fams))
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return m
}

func (m metricIndex) series(name string) []sample {
	f, ok := m[name]
	if !ok {
		return nil
	}
	var out []sample
	for _, x := range f.GetMetric() {
		s := sample{labels: map[string]string{}}
		for _, l := range x.GetLabel() {
			s.labels[l.GetName()] = l.GetValue()
		}
		switch {
		case x.Gauge != nil:
			s.value = x.GetGauge().GetValue()
		case x.Counter != nil:
			s.value = x.GetCounter().GetValue()
		case x.Untyped != nil:
			s.value = x.GetUntyped().GetValue()
		default:
			continue
		}
		out = append(out, s)
	}
	return out
}

// byLabel sums a metric's series by one label.
func (m metricIndex) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m.series(name) {
		out[s.labels[label]] += s.value
	}
	return out
}

func (m metricIndex) single(name string) (float64, bool) {
	s := m.series(name)
	if len(s) != 1 {
		return 0, false
	}
	return s[0].value, true
}

func sorted(in map[string]float64) []kv {
	out := make([]kv, 0, len(in))
	for k, x := range in {
		out = append(out, kv{k, x})
	}
	slices.SortFunc(out, func(a, b kv) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// formatNum prints a number as /metrics would, without an exponent for
// whole numbers.
func formatNum(x float64) string {
	if x == math.Trunc(x) && math.Abs(x) < 1e15 {
		return strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strconv.FormatFloat(x, 'g', -1, 64)
}

func stampUTC(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
