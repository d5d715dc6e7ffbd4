package ops_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

type queryAnswer struct {
	Data  json.RawMessage `json:"data"`
	Error *job.ErrorInfo  `json:"error"`
}

func startQueries(t *testing.T, simCfg simulator.Config, reserve float64, o ops.QueryOptions) (*testenv.Bed, *nats.Conn, *onelogin.Client) {
	t.Helper()
	bed, err := testenv.NewBed(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bed.Close)
	ol, err := onelogin.NewClient(onelogin.Config{BaseURL: bed.SimURL, ClientID: bed.Sim.Config().ClientID, ClientSecret: bed.Sim.Config().ClientSecret, QueryReserve: reserve})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(bed.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithCancel(context.Background())
	if o.Version == "" {
		o.Version = "1.2.3"
	}
	q, err := ops.StartQueryServiceWith(ctx, nc, ol, o, testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = q.Stop()
	})
	return bed, nc, ol
}

func ask(t *testing.T, nc *nats.Conn, subject, body string) (*nats.Msg, queryAnswer) {
	t.Helper()
	m, err := nc.Request(subject, []byte(body), 10*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var a queryAnswer
	if err := json.Unmarshal(m.Data, &a); err != nil {
		t.Fatalf("%s: answer %q: %v", subject, m.Data, err)
	}
	return m, a
}

// Error replies carry the micro error headers, so that the service's own
// stats (what `nats micro stats mfa` shows) count them; the service has its
// version, description and metadata.
func TestQueryErrorsAreCountedByMicroStats(t *testing.T) {
	_, nc, _ := startQueries(t, simulator.Config{}, 0.2, ops.QueryOptions{})
	for _, body := range []string{`not json`, `{"user_id": -1}`, `{"user_id": 99999999999}`} {
		m, a := ask(t, nc, "mfa.query.enrolled_factors", body)
		if a.Error == nil {
			t.Fatalf("%s: no error in %s", body, m.Data)
		}
		if got := m.Header.Get(micro.ErrorHeader); got != a.Error.Code {
			t.Errorf("%s: %s = %q, want the reply's code %q", body, micro.ErrorHeader, got, a.Error.Code)
		}
		if got := m.Header.Get(micro.ErrorCodeHeader); got != "400" && got != "404" {
			t.Errorf("%s: %s = %q, want an HTTP-like status", body, micro.ErrorCodeHeader, got)
		}
	}
	sm, err := nc.Request("$SRV.STATS.mfa", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st micro.Stats
	if err := json.Unmarshal(sm.Data, &st); err != nil {
		t.Fatal(err)
	}
	errs := 0
	for _, e := range st.Endpoints {
		errs += e.NumErrors
	}
	if errs != 3 {
		t.Errorf("micro stats count %d errors, want 3: %s", errs, sm.Data)
	}
	im, err := nc.Request("$SRV.INFO.mfa", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(im.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Version != "1.2.3" || info.Description == "" || info.Metadata["max_concurrent"] != "8" {
		t.Errorf("service info %s", im.Data)
	}
	for _, e := range info.Endpoints {
		if e.Metadata["description"] == "" {
			t.Errorf("endpoint %s has no description", e.Name)
		}
	}
}

// Queries stop at the reserve: with 10 calls a window and a reserve of 0.5
// only the calls above it are made, then every query is refused with busy
// without reaching OneLogin.
func TestQueriesLeaveTheReserveToJobs(t *testing.T) {
	bed, nc, _ := startQueries(t, simulator.Config{RateLimit: 10, RateWindow: time.Hour}, 0.5, ops.QueryOptions{})
	ok, busy := 0, 0
	for i := 0; i < 20; i++ {
		m, a := ask(t, nc, "mfa.query.available_factors", `{"user_id": 7}`)
		switch {
		case a.Error == nil:
			ok++
		case a.Error.Code == job.CodeBusy && a.Error.Retryable && m.Header.Get(micro.ErrorHeader) == job.CodeBusy && m.Header.Get(micro.ErrorCodeHeader) == "503":
			busy++
		default:
			t.Fatalf("query %d: %s", i, m.Data)
		}
	}
	calls := bed.Sim.ResourceCalls()
	t.Logf("answered %d, busy %d, OneLogin calls %d", ok, busy, calls)
	if ok != 5 || busy != 15 || calls != 5 {
		t.Errorf("answered %d, busy %d, OneLogin calls %d; want 5, 15, 5 (the other 5 of 10 are the jobs')", ok, busy, calls)
	}
}

// At most MaxConcurrent queries are answered at once per replica: six
// queries against a OneLogin answering in 300ms take three rounds with a
// cap of two, and all are answered.
func TestQueryConcurrencyCap(t *testing.T) {
	bed, nc, _ := startQueries(t, simulator.Config{}, 0.2, ops.QueryOptions{MaxConcurrent: 2})
	// The token first, so that only the queries' own calls are slow.
	if _, a := ask(t, nc, "mfa.query.available_factors", `{"user_id": 7}`); a.Error != nil {
		t.Fatal(a.Error.Message)
	}
	const latency = 300 * time.Millisecond
	bed.Sim.SetFaults(simulator.Faults{Latency: latency})
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	start := time.Now()
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, a := ask(t, nc, "mfa.query.available_factors", `{"user_id": 7}`)
			mu.Lock()
			defer mu.Unlock()
			if a.Error == nil {
				codes["ok"]++
			} else {
				codes[a.Error.Code]++
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	t.Logf("6 queries, cap 2, OneLogin at %v: %v, answers %v", latency, took.Round(time.Millisecond), codes)
	if codes["ok"] != 6 {
		t.Errorf("answers %v: want all 6 answered", codes)
	}
	if took < 3*latency-50*time.Millisecond {
		t.Errorf("6 queries took %v: more than 2 ran at once", took)
	}
}

// Phone numbers come back masked to their last two digits, and a device's
// state token is never handed out.
func TestEnrolledFactorsMasksPhoneNumbers(t *testing.T) {
	_, nc, ol := startQueries(t, simulator.Config{}, 0.2, ops.QueryOptions{})
	if _, _, err := ol.EnrollFactor(context.Background(), 42, onelogin.EnrollRequest{FactorID: smsFactor(t, ol), DisplayName: "phone", Number: "+15551234567"}); err != nil {
		t.Fatal(err)
	}
	m, a := ask(t, nc, "mfa.query.enrolled_factors", `{"user_id": 42}`)
	if a.Error != nil {
		t.Fatalf("%s", m.Data)
	}
	if strings.Contains(string(m.Data), "5551234567") || strings.Contains(string(m.Data), "state_token") {
		t.Fatalf("answer shows the number or a state token: %s", m.Data)
	}
	if !strings.Contains(string(m.Data), `"+*********67"`) {
		t.Errorf("answer has no masked number: %s", m.Data)
	}
}

func smsFactor(t *testing.T, ol *onelogin.Client) onelogin.ID {
	t.Helper()
	fs, _, err := ol.AvailableFactors(context.Background(), 42)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if f.Name == "OneLogin SMS" {
			return f.ID
		}
	}
	t.Fatal("no SMS factor")
	return 0
}

func TestMaskPhone(t *testing.T) {
	for in, want := range map[string]string{
		"+15551234567":           "+*********67",
		"+1 555 123-4567":        "+* *** ***-**67",
		"12":                     "**",
		"":                       "",
		"+44 (20) 7946 0958 ext": "+** (**) **** **58 ***",
	} {
		if got := ops.MaskPhone(in); got != want {
			t.Errorf("MaskPhone(%q) = %q, want %q", in, got, want)
		}
	}
}
