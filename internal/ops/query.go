package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
type QueryService struct {
	svc micro.Service
	ctx context.Context
	wg  sync.WaitGroup
	sem chan struct{}
	// users resolves a request's "user" at query priority.
	users *Resolver
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

// StartQueryService registers the service on nc. version must be semver.
// Answers in progress are cut short when ctx ends (shutdown); Stop waits
// for them.
func StartQueryService(ctx context.Context, nc *nats.Conn, ol *onelogin.Client, version string, log *slog.Logger) (*QueryService, error) {
	q := &QueryService{ctx: ctx, sem: make(chan struct{}, 8), users: &Resolver{ol: ol}}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        "mfa",
		Version:     version,
		Description: "Read-only MFA questions, answered from OneLogin",
	})
	if err != nil {
		return nil, err
	}
	q.svc = svc
	g := svc.AddGroup("mfa.query")
	endpoints := map[string]func(ctx context.Context, user int64) (any, error){
		"available_factors": func(ctx context.Context, user int64) (any, error) {
			f, _, err := ol.AvailableFactors(ctx, user)
			if f == nil {
				f = []onelogin.Factor{}
			}
			return f, err
		},
		"enrolled_factors": func(ctx context.Context, user int64) (any, error) {
			d, _, err := ol.EnrolledFactors(ctx, user)
			if d == nil {
				d = []onelogin.Device{}
			}
			return d, err
		},
	}
	for name, fn := range endpoints {
		if err := g.AddEndpoint(name, micro.HandlerFunc(func(req micro.Request) { q.serve(req, name, fn, log) })); err != nil {
			_ = svc.Stop()
			return nil, err
		}
	}
	return q, nil
}

// serve answers off the subscription's goroutine, a few at a time, so that
// one slow OneLogin call does not hold the others up.
func (q *QueryService) serve(req micro.Request, name string, fn func(context.Context, int64) (any, error), log *slog.Logger) {
	q.sem <- struct{}{}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		defer func() { <-q.sem }()
		var r queryRequest
		if err := json.Unmarshal(req.Data(), &r); err != nil || (r.UserID <= 0) == (r.User == nil) || (r.User != nil && r.User.Kind() == "") {
			_ = req.RespondJSON(queryReply{Error: &job.ErrorInfo{Code: job.CodeInvalidUserID, Message: `request must be {"user_id": N} with N a positive integer, or {"user": {"email"|"username"|"external_id": "..."}}`}})
			return
		}
		ctx, cancel := context.WithTimeout(q.ctx, queryTimeout)
		defer cancel()
		user := r.UserID
		if r.User != nil {
			id, err := q.resolve(ctx, r.User)
			if err != nil {
				info := errorInfo("resolve user", err)
				log.Info("query failed", "endpoint", name, "code", info.Code, "http_status", info.HTTPStatus)
				_ = req.RespondJSON(queryReply{Error: info})
				return
			}
			user = id
		}
		data, err := fn(ctx, user)
		if err != nil {
			info := errorInfo(name, err)
			log.Info("query failed", "endpoint", name, "code", info.Code, "http_status", info.HTTPStatus)
			_ = req.RespondJSON(queryReply{Error: info})
			return
		}
		_ = req.RespondJSON(queryReply{Data: data})
	}()
}

// Stop unregisters the service and waits for answers in progress.
func (q *QueryService) Stop() error {
	err := q.svc.Stop()
	q.wg.Wait()
	return err
}

// errorInfo is the error object of a query reply, built as for results.
func errorInfo(op string, err error) *job.ErrorInfo {
	var le *onelogin.UserLookupError
	if errors.As(err, &le) {
		msg := "no OneLogin user has this " + le.Field
		if le.Code == onelogin.CodeIdentityAmbiguous {
			msg = fmt.Sprintf("%d OneLogin users have this %s", le.Matches, le.Field)
		}
		return &job.ErrorInfo{Code: le.Code, Message: op + ": " + msg}
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
