package ops_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// Shutdown cuts a query in progress short: the answer comes back at once
// (an error the asker can retry), and Stop does not wait for OneLogin.
func TestQueryServiceStopsWithItsContext(t *testing.T) {
	bed, err := testenv.NewBed(simulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer bed.Close()
	bed.Sim.SetFaults(simulator.Faults{Latency: 4 * time.Second})
	ol, err := onelogin.NewClient(onelogin.Config{BaseURL: bed.SimURL, ClientID: bed.Sim.Config().ClientID, ClientSecret: bed.Sim.Config().ClientSecret})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(bed.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	q, err := ops.StartQueryService(ctx, nc, ol, "1.0.0", testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	reply := make(chan *nats.Msg, 1)
	go func() {
		m, _ := nc.Request("mfa.query.enrolled_factors", []byte(`{"user_id": 12}`), 20*time.Second)
		reply <- m
	}()
	// Wait until the service took the request (its answer then waits for
	// the slow OneLogin).
	taken := func() bool { return bed.Sim.Stats().Requests["enrolled_factors"] > 0 }
	testenv.Eventually(t, 10*time.Second, taken, func() string { return "the service took no request" })
	start := time.Now()
	cancel()
	m := <-reply
	if err := q.Stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("shutdown waited %v for a query", took)
	}
	if m == nil {
		t.Fatal("no answer")
	}
	var r struct {
		Error *job.ErrorInfo `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Error == nil || !r.Error.Retryable {
		t.Fatalf("answer %s: %v", m.Data, err)
	}
}

// Queries name a person by every identifier they have, with the jobs'
// corroboration rule: those that find someone must find the same one.
func TestQueriesByEveryIdentifier(t *testing.T) {
	bed, err := testenv.NewBed(simulator.Config{Directory: []simulator.DirectoryUser{
		{ID: 41, Email: "ada@example.com", Username: "ada", ExternalID: "E-41", Status: 1, State: 1},
		{ID: 42, Email: "eve@example.com", Username: "eve", ExternalID: "E-ADA", Status: 1, State: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer bed.Close()
	if _, err := bed.Sim.EnrollDevice(41, "Google Authenticator", "GA", true); err != nil {
		t.Fatal(err)
	}
	ol, err := onelogin.NewClient(onelogin.Config{BaseURL: bed.SimURL, ClientID: bed.Sim.Config().ClientID, ClientSecret: bed.Sim.Config().ClientSecret})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(bed.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q, err := ops.StartQueryService(ctx, nc, ol, "1.0.0", testenv.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Stop() }()
	ask := func(body string) (data []any, e *job.ErrorInfo) {
		t.Helper()
		m, err := nc.Request("mfa.query.enrolled_factors", []byte(body), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Data  []any          `json:"data"`
			Error *job.ErrorInfo `json:"error"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		return r.Data, r.Error
	}
	if d, e := ask(`{"user": {"email": "ADA@example.com", "external_id": "E-41", "username": "ada"}}`); e != nil || len(d) != 1 {
		t.Fatalf("all three identifiers: %v %+v", d, e)
	}
	if d, e := ask(`{"user": {"email": "ada@example.com", "external_id": "00u-okta"}}`); e != nil || len(d) != 1 {
		t.Fatalf("an identifier that finds nobody: %v %+v", d, e)
	}
	for body, code := range map[string]string{
		`{"user": {"email": "ada@example.com", "external_id": "E-ADA"}}`:  job.CodeIdentityAmbiguous,
		`{"user": {"email": "nobody@example.com", "username": "nobody"}}`: job.CodeUserNotFound,
		`{"user": {"email": "ada@example.com", "username": "a*"}}`:        job.CodeInvalidSelector,
	} {
		_, e := ask(body)
		if e == nil || e.Code != code || strings.Contains(e.Message, "example.com") || strings.Contains(e.Message, "E-ADA") {
			t.Errorf("%s: %+v, want %s naming no value", body, e, code)
		}
	}
	if bed.Sim.Stats().Requests["users"] == 0 {
		t.Fatal("no Users API call")
	}
	// The history's resolver: one user, or none (its unresolved entries
	// answer) when the identifiers name no single person.
	r := ops.NewResolver(ol)
	for sel, want := range map[history.Selector]int64{
		{Email: "ada@example.com", ExternalID: "E-41"}:  41,
		{Email: "ada@example.com", ExternalID: "E-ADA"}: 0,
		{Username: "nobody"}:                            0,
		{Username: "a*"}:                                0,
	} {
		if id, err := r.ResolveUser(ctx, sel); err != nil || id != want {
			t.Errorf("ResolveUser(%+v) = %d, %v; want %d", sel, id, err, want)
		}
	}
}
