package jobs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// scripted answers each OneLogin call with the next error of its script
// (nil: success), and counts the calls. The pipeline's end-to-end tests
// use the real client against the simulator; these test the executor's
// attempts alone, in milliseconds.
type scripted struct {
	mu      sync.Mutex
	errs    map[string][]error
	calls   map[string]int
	devices []onelogin.Device // what Get Enrolled Factors lists
}

func (s *scripted) next(op string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	q := s.errs[op]
	if len(q) == 0 {
		return nil
	}
	s.errs[op] = q[1:]
	return q[0]
}

func (s *scripted) AvailableFactors(ctx context.Context, userID int64) ([]onelogin.Factor, *onelogin.Response, error) {
	return []onelogin.Factor{{ID: 1, Name: "OneLogin SMS"}}, nil, s.next("available")
}
func (s *scripted) EnrolledFactors(ctx context.Context, userID int64) ([]onelogin.Device, *onelogin.Response, error) {
	if err := s.next("enrolled"); err != nil {
		return nil, nil, err
	}
	return s.devices, nil, nil
}
func (s *scripted) EnrollFactor(ctx context.Context, userID int64, r onelogin.EnrollRequest) (*onelogin.Device, *onelogin.Response, error) {
	if err := s.next("enroll"); err != nil {
		return nil, nil, err
	}
	return &onelogin.Device{ID: 9, AuthFactorName: "OneLogin SMS"}, nil, nil
}
func (s *scripted) ActivateFactor(ctx context.Context, userID, deviceID int64, r *onelogin.ActivateRequest) (*onelogin.Activation, *onelogin.Response, error) {
	if err := s.next("activate"); err != nil {
		return nil, nil, err
	}
	return &onelogin.Activation{DeviceID: onelogin.ID(deviceID), StateToken: "st"}, nil, nil
}
func (s *scripted) VerifyFactor(ctx context.Context, userID, deviceID int64, r onelogin.VerifyRequest) (*onelogin.Response, error) {
	return nil, s.next("verify")
}
func (s *scripted) RemoveFactor(ctx context.Context, userID, deviceID int64) (*onelogin.Response, error) {
	return nil, s.next("remove")
}
func (s *scripted) GenerateMFAToken(ctx context.Context, userID int64, r onelogin.MFATokenRequest) (*onelogin.MFAToken, *onelogin.Response, error) {
	return &onelogin.MFAToken{Token: "t"}, nil, s.next("token")
}

// memLedger is a ledger in memory, with revisions.
type memLedger struct {
	mu   sync.Mutex
	recs map[string]ledger.Entry
}

func (l *memLedger) Create(ctx context.Context, id string, rec ledger.Record) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.recs[id]; ok {
		return 0, ledger.ErrExists
	}
	l.recs[id] = ledger.Entry{Record: rec, Revision: 1}
	return 1, nil
}

func (l *memLedger) Get(ctx context.Context, id string) (*ledger.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.recs[id]
	if !ok {
		return nil, ledger.ErrNotFound
	}
	return &e, nil
}

func (l *memLedger) Update(ctx context.Context, id string, rec ledger.Record, rev uint64) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.recs[id].Revision != rev {
		return 0, ledger.ErrConflict
	}
	l.recs[id] = ledger.Entry{Record: rec, Revision: rev + 1}
	return rev + 1, nil
}

func repeat(err error, n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

func status(code int, desc string) error {
	return &onelogin.ErrorResponse{Endpoint: "x", StatusCode: code, Status: onelogin.Status{Message: onelogin.StatusMessage{Description: desc}}}
}

func TestExecutorAttempts(t *testing.T) {
	notFound := status(404, "Factor could not be found")
	lost := status(504, "")       // may have taken effect
	refused := status(503, "")    // did not
	rejected := status(400, "no") // for good
	cases := []struct {
		name       string
		typ        job.Type
		script     map[string][]error
		sentBefore bool
		want       job.Outcome // "" when an error is wanted
		code       string      // the PermanentError's code
		retryLater bool
		retries    float64
		sentAfter  bool
		calls      map[string]int
		devices    []onelogin.Device
		device     int64 // the job's device_id (3 when zero)
		pending    bool  // a pending verify, left to a later delivery
		creds      bool  // the worker's credentials refused: not the job's failure
	}{
		{name: "remove after two refusals", typ: job.TypeRemove, script: map[string][]error{"remove": {refused, refused}},
			want: job.Succeeded, retries: 2, calls: map[string]int{"remove": 3}},
		{name: "remove whose lost call took effect", typ: job.TypeRemove, script: map[string][]error{"remove": {lost, notFound}},
			want: job.Succeeded, retries: 1, calls: map[string]int{"remove": 2}},
		{name: "remove of a device already gone", typ: job.TypeRemove, script: map[string][]error{"remove": {notFound}},
			want: job.Noop, calls: map[string]int{"remove": 1}},
		{name: "enroll refused for good", typ: job.TypeEnroll, script: map[string][]error{"enroll": {rejected}},
			code: job.CodeOneLoginRejected, calls: map[string]int{"enroll": 1}},
		{name: "activate whose call was lost", typ: job.TypeActivate, script: map[string][]error{"activate": {lost}},
			code: job.CodeAmbiguousEffect, sentAfter: true, calls: map[string]int{"activate": 1}},
		{name: "activate refused until the budget ends", typ: job.TypeActivate, script: map[string][]error{"activate": repeat(refused, 10_000)},
			retryLater: true, sentAfter: false},
		{name: "activate after an earlier delivery's call", typ: job.TypeActivate, sentBefore: true,
			code: job.CodeAmbiguousEffect, sentAfter: true, calls: map[string]int{"activate": 0}},
		{name: "verify whose reply was lost, read back active", typ: job.TypeVerify, script: map[string][]error{"verify": {lost}},
			devices: []onelogin.Device{{ID: 3, Active: true}}, want: job.Succeeded, sentAfter: true, calls: map[string]int{"verify": 1, "enrolled": 1}},
		{name: "verify whose reply was lost, read back inactive: not sent again now", typ: job.TypeVerify, script: map[string][]error{"verify": {lost}},
			devices: []onelogin.Device{{ID: 3}}, retryLater: true, sentAfter: false, calls: map[string]int{"verify": 1, "enrolled": 1}},
		{name: "verify whose reply was lost, read-back fails: still may have been sent", typ: job.TypeVerify, script: map[string][]error{"verify": {lost}, "enrolled": repeat(refused, 10)},
			retryLater: true, sentAfter: true, calls: map[string]int{"verify": 1, "enrolled": 1}},
		{name: "verify after an earlier delivery's call, read back active", typ: job.TypeVerify, sentBefore: true,
			devices: []onelogin.Device{{ID: 3, Active: true}}, want: job.Succeeded, sentAfter: true, calls: map[string]int{"verify": 0, "enrolled": 1}},
		{name: "verify after an earlier delivery's call, read back inactive: sent again", typ: job.TypeVerify, sentBefore: true,
			devices: []onelogin.Device{{ID: 3}}, want: job.Succeeded, sentAfter: true, calls: map[string]int{"verify": 1, "enrolled": 1}},
		{name: "verify of a temporary token (device 0) whose reply was lost", typ: job.TypeVerify, device: -1, script: map[string][]error{"verify": {lost}},
			code: job.CodeAmbiguousEffect, sentAfter: true, calls: map[string]int{"verify": 1, "enrolled": 0}},
		{name: "verify pending: never retried in the delivery", typ: job.TypeVerify, script: map[string][]error{"verify": {&onelogin.VerifyError{Code: onelogin.CodeVerificationPending, StatusCode: 200}}},
			pending: true, sentAfter: false, calls: map[string]int{"verify": 1}},
		{name: "verify with an expired state token", typ: job.TypeVerify, script: map[string][]error{"verify": {&onelogin.VerifyError{Code: onelogin.CodeStateTokenExpired, StatusCode: 400}}},
			code: job.CodeStateTokenExpired, sentAfter: true, calls: map[string]int{"verify": 1}},
		{name: "generate_token whose reply was lost is retried", typ: job.TypeGenerateToken, script: map[string][]error{"token": {lost}},
			want: job.Succeeded, retries: 1, calls: map[string]int{"token": 2}},
		{name: "offboard whose token is refused between removals", typ: job.TypeOffboard, devices: []onelogin.Device{{ID: 3}, {ID: 4}},
			script: map[string][]error{"remove": {nil, &onelogin.TokenError{StatusCode: 401, Credentials: true}}},
			creds:  true, calls: map[string]int{"remove": 2}},
		{name: "enroll whose token is refused", typ: job.TypeEnroll, script: map[string][]error{"enrolled": {&onelogin.TokenError{StatusCode: 500, Credentials: true}}},
			creds: true, calls: map[string]int{"enrolled": 1, "enroll": 0}},
		{name: "verify wrong OTP", typ: job.TypeVerify, script: map[string][]error{"verify": {status(401, "Failed authentication with this factor")}},
			code: job.CodeVerificationFailed, sentAfter: true, calls: map[string]int{"verify": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ol := &scripted{errs: c.script, calls: map[string]int{}, devices: c.devices}
			if ol.errs == nil {
				ol.errs = map[string][]error{}
			}
			cfg := Config{RetryInitial: time.Millisecond, RetryMax: 2 * time.Millisecond, RetryWithin: 30 * time.Millisecond}.WithDefaults()
			m := metrics.New(prometheus.NewRegistry())
			led := &memLedger{recs: map[string]ledger.Entry{}}
			x := &executor{cfg: &cfg, budgets: newBudgets(&cfg), log: slog.New(slog.NewTextHandler(io.Discard, nil)), ledger: led, m: m,
				h: &handlers{ol: ol, factors: newFactorCache(time.Hour)}}
			dev := int64(3)
			switch {
			case c.device < 0:
				dev = 0
			case c.device > 0:
				dev = c.device
			}
			j := &job.Job{ID: "j1", Type: c.typ, UserID: 5, Params: job.Params{DeviceID: dev, FactorName: "OneLogin SMS", DisplayName: "p", OTPToken: "1", StateToken: "s", RecipientXKey: ""}}
			rec := ledger.Record{State: ledger.Running, Sent: c.sentBefore}
			rev, _ := led.Create(context.Background(), j.ID, rec)
			tk := &task{job: j, claim: &ledger.Entry{Record: rec, Revision: rev}}
			out, err := x.run(context.Background(), tk, c.sentBefore)
			k, pe := classify(err, c.typ)
			switch {
			case c.want != "":
				if err != nil || out.Outcome != c.want {
					t.Fatalf("got %v %v, want %s", out.Outcome, err, c.want)
				}
			case c.code != "":
				if k != kindPermanent || pe.Code != c.code {
					t.Fatalf("got %v (%v), want %s", err, k, c.code)
				}
			case c.creds:
				if k != kindCredentials {
					t.Fatalf("got %v (%v), want the credentials' refusal, not the job's failure", err, k)
				}
			case c.pending:
				if k != kindPending || out.Data != nil {
					t.Fatalf("got %v (%v) data %v, want a pending verify, never active", err, k, out.Data)
				}
			case c.retryLater:
				var rl *RetryLaterError
				if !errors.As(err, &rl) {
					t.Fatalf("got %v, want a RetryLaterError", err)
				}
			}
			if got := testutil.ToFloat64(m.RetryCounter(string(c.typ))); c.retries != 0 && got != c.retries {
				t.Errorf("retries %v, want %v", got, c.retries)
			}
			if e, _ := led.Get(context.Background(), j.ID); c.typ.AtMostOnce() && e.Sent != c.sentAfter {
				t.Errorf("ledger sent = %v, want %v", e.Sent, c.sentAfter)
			}
			for op, n := range c.calls {
				if ol.calls[op] != n {
					t.Errorf("%s called %d times, want %d", op, ol.calls[op], n)
				}
			}
		})
	}
}
