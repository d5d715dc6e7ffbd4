package ops

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// QueryService answers read-only questions over NATS request/reply, as the
// micro service "mfa" (so `nats micro ls` finds it):
// mfa.query.available_factors and mfa.query.enrolled_factors, request
// {"user_id": N}, reply {"data": [...]} or {"error": {...}}.
//
// Queries never spend the OneLogin budget that jobs need: their calls wait
// for the budget at the lowest priority (onelogin.PriorityQuery), and are
// refused at once with code busy while the remaining budget is down to the
// client's query reserve, or while this replica already answers
// MaxConcurrent queries. Error replies also carry the micro error headers
// (Nats-Service-Error-Code: an HTTP-like status, Nats-Service-Error: the
// reply's error code), so `nats micro stats mfa` counts them. Phone numbers are masked
// to their last two digits and state tokens are never handed out.
type QueryService struct {
	svc micro.Service
	ctx context.Context
	log *slog.Logger
	sem chan struct{}
	// users resolves a request's "user" at query priority.
	users *Resolver
}

// QueryOptions tune the query service.
type QueryOptions struct {
	// Version is the service's version (semver).
	Version string
	// MaxConcurrent caps the answers in progress in this replica
	// (WORKER_QUERY_CONCURRENCY, 8); a query beyond it gets busy at once.
	MaxConcurrent int
}

type queryRequest struct {
	UserID int64     `json:"user_id"`
	User   *job.User `json:"user"`
}

type queryReply struct {
	Data  any            `json:"data,omitempty"`
	Error *job.ErrorInfo `json:"error,omitempty"`
}

// queryTimeout bounds one answer.
const queryTimeout = 20 * time.Second

// DefaultQueryConcurrency is the default cap on queries answered at once.
const DefaultQueryConcurrency = 8

// StartQueryService registers the service on nc with the default options.
// version must be semver.
func StartQueryService(ctx context.Context, nc *nats.Conn, ol *onelogin.Client, version string, log *slog.Logger) (*QueryService, error) {
	return StartQueryServiceWith(ctx, nc, ol, QueryOptions{Version: version}, log)
}

// StartQueryServiceWith registers the service on nc. Answers in progress
// are cut short when ctx ends (shutdown); Stop waits for them.
func StartQueryServiceWith(ctx context.Context, nc *nats.Conn, ol *onelogin.Client, o QueryOptions, log *slog.Logger) (*QueryService, error) {
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = DefaultQueryConcurrency
	}
	q := &QueryService{ctx: ctx, log: log, sem: make(chan struct{}, o.MaxConcurrent), users: &Resolver{ol: ol}}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        "mfa",
		Version:     o.Version,
		Description: "Read-only MFA questions about OneLogin users, answered at the lowest priority so that they never spend the budget jobs need",
		Metadata: map[string]string{
			"contract":       "1.1",
			"max_concurrent": strconv.Itoa(o.MaxConcurrent),
		},
	})
	if err != nil {
		return nil, err
	}
	q.svc = svc
	g := svc.AddGroup(job.QueryGroup)
	type endpoint struct {
		name, desc string
		fn         func(ctx context.Context, user int64) (any, error)
	}
	endpoints := []endpoint{
		{"available_factors", "the factors OneLogin offers the user (request {\"user_id\": N})", func(ctx context.Context, user int64) (any, error) {
			f, _, err := ol.AvailableFactors(ctx, user)
			if f == nil {
				f = []onelogin.Factor{}
			}
			return f, err
		}},
		{"enrolled_factors", "the user's enrolled devices, phone numbers masked to their last 2 digits (request {\"user_id\": N})", func(ctx context.Context, user int64) (any, error) {
			d, _, err := ol.EnrolledFactors(ctx, user)
			return MaskDevices(d), err
		}},
	}
	for _, e := range endpoints {
		h := micro.HandlerFunc(func(req micro.Request) { q.serve(req, e.name, e.fn) })
		for i := 0; i < o.MaxConcurrent; i++ {
			if err := g.AddEndpoint(e.name, h, micro.WithEndpointMetadata(map[string]string{"description": e.desc})); err != nil {
				_ = svc.Stop()
				return nil, err
			}
		}
	}
	return q, nil
}

// serve answers one request on its subscription's goroutine: micro counts
// a request, and an error reply, only when the handler returns after
// answering. Each endpoint is registered MaxConcurrent times on the same
// subject and queue group, so that one slow OneLogin call does not hold
// the others up; the shared cap refuses a query with busy at once while
// MaxConcurrent answers are in progress.
func (q *QueryService) serve(req micro.Request, name string, fn func(context.Context, int64) (any, error)) {
	select {
	case q.sem <- struct{}{}:
	default:
		q.fail(req, name, &job.ErrorInfo{Code: job.CodeBusy, Message: name + ": too many queries in progress; retry later", Retryable: true})
		return
	}
	defer func() { <-q.sem }()
	var r queryRequest
	if err := json.Unmarshal(req.Data(), &r); err != nil || (r.UserID <= 0) == (r.User == nil) || (r.User != nil && r.User.Kind() == "") {
		q.fail(req, name, &job.ErrorInfo{Code: job.CodeInvalidUserID, Message: `request must be {"user_id": N} with N a positive integer, or {"user": {"email"|"username"|"external_id": "..."}}`})
		return
	}
	ctx, cancel := context.WithTimeout(q.ctx, queryTimeout)
	defer cancel()
	ctx = onelogin.WithPriority(ctx, onelogin.PriorityQuery)
	user := r.UserID
	if r.User != nil {
		id, err := q.resolve(ctx, r.User)
		if err != nil {
			q.fail(req, name, errorInfo("resolve user", err))
			return
		}
		user = id
	}
	data, err := fn(ctx, user)
	if err != nil {
		q.fail(req, name, errorInfo(name, err))
		return
	}
	_ = req.RespondJSON(queryReply{Data: data})
}

// fail answers with an error object and the micro error headers.
func (q *QueryService) fail(req micro.Request, name string, info *job.ErrorInfo) {
	q.log.Info("query failed", "endpoint", name, "code", info.Code, "http_status", info.HTTPStatus)
	body, err := json.Marshal(queryReply{Error: info})
	if err != nil {
		return
	}
	_ = req.Error(errorStatus(info), info.Code, body)
}

// errorStatus is the HTTP-like status that every mfa.query.* error sets in
// Nats-Service-Error-Code (Nats-Service-Error carries the reply's code):
// 400 for a bad request, 404 for a person or job nobody knows, 503 for what
// may succeed later.
func errorStatus(info *job.ErrorInfo) string {
	switch {
	case info.Code == job.CodeUserNotFound:
		return "404"
	case info.Retryable:
		return "503"
	}
	return "400"
}

// Stop unregisters the service; answers in progress end with the
// service's context.
func (q *QueryService) Stop() error { return q.svc.Stop() }

// MaskDevices returns the devices as a query may show them: phone numbers
// masked to their last two digits, state tokens left out.
func MaskDevices(ds []onelogin.Device) []onelogin.Device {
	out := make([]onelogin.Device, 0, len(ds))
	for _, d := range ds {
		d.PhoneNumber = MaskPhone(d.PhoneNumber)
		d.StateToken = ""
		out = append(out, d)
	}
	return out
}

// MaskPhone replaces every digit of a phone number but the last two with
// '*', keeping its other characters (+, spaces) so its shape stays
// recognisable. A number with two digits or fewer is masked whole.
func MaskPhone(s string) string {
	digits := 0
	for _, r := range s {
		if r >= '0' && r <= '9' {
			digits++
		}
	}
	keep := 2
	if digits <= 2 {
		keep = 0
	}
	b := []rune(s)
	seen := 0
	for i, r := range b {
		if r >= '0' && r <= '9' {
			seen++
			if seen <= digits-keep {
				b[i] = '*'
			}
		} else if r != '+' && r != ' ' && r != '-' && r != '(' && r != ')' && r != '.' {
			b[i] = '*' // letters or anything else say nothing about the number
		}
	}
	return string(b)
}

// errorInfo is the error object of a query reply, built as for results.
func errorInfo(op string, err error) *job.ErrorInfo {
	var le *onelogin.UserLookupError
	if errors.As(err, &le) {
		return &job.ErrorInfo{Code: le.Code, Message: op + ": " + le.Reason()}
	}
	switch {
	case errors.Is(err, onelogin.ErrBusy):
		return &job.ErrorInfo{Code: job.CodeBusy, Message: op + ": OneLogin's remaining budget is kept for jobs; retry later", Retryable: true}
	case errors.Is(err, onelogin.ErrCredentials):
		return &job.ErrorInfo{Code: job.CodeCredentials, Message: op + ": the worker's OneLogin credentials are refused", HTTPStatus: onelogin.StatusCode(err), Retryable: true}
	}
	if onelogin.Classify(err) == onelogin.Permanent {
		pe := jobs.Failure("", op, err)
		return &job.ErrorInfo{Code: pe.Code, Message: pe.Message, HTTPStatus: pe.HTTPStatus}
	}
	info := &job.ErrorInfo{Code: job.CodeOneLoginUnavailable, Message: op + ": " + err.Error(), HTTPStatus: onelogin.StatusCode(err), Retryable: true}
	var rl *onelogin.RateLimitError
	if errors.As(err, &rl) {
		info.Code = job.CodeRateLimited
	}
	return info
}
