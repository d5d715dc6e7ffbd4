package ops

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// Resolver finds the OneLogin user that a query's "user" names, with the
// same rule as jobs (onelogin.Client.FindUser: every identifier by an exact
// match, and those that find someone must find the same user), at the query
// priority: behind every job, and refused (busy) while OneLogin's budget
// is below the query reserve. It caches nothing: a query is an operator's question, asked
// rarely.
type Resolver struct {
	ol *onelogin.Client
}

// NewResolver returns a resolver on ol.
func NewResolver(ol *onelogin.Client) *Resolver { return &Resolver{ol: ol} }

// resolve returns the user id sel names, or the client's error (a
// *onelogin.UserLookupError when none or several match).
func (r *Resolver) resolve(ctx context.Context, sel *job.User) (int64, error) {
	u, _, err := r.ol.FindUser(onelogin.WithPriority(ctx, onelogin.PriorityQuery), onelogin.UserSelector{Email: sel.Email, Username: sel.Username, ExternalID: sel.ExternalID}, false)
	if err != nil {
		return 0, err
	}
	return int64(u.ID), nil
}

// ResolveUser implements history.Resolver: 0 and no error when the
// selector names no single user (nobody, several people, identifiers that
// disagree, or a value holding '*' or '!'), so that the history holds the
// jobs that named the person by these identifiers and could not be
// resolved either; an error only when OneLogin could not be asked.
func (r *Resolver) ResolveUser(ctx context.Context, sel history.Selector) (int64, error) {
	id, err := r.resolve(ctx, &job.User{Email: sel.Email, Username: sel.Username, ExternalID: sel.ExternalID})
	var le *onelogin.UserLookupError
	if errors.As(err, &le) {
		return 0, nil
	}
	return id, err
}

func (q *QueryService) resolve(ctx context.Context, sel *job.User) (int64, error) {
	return q.users.resolve(ctx, sel)
}

// AddHistory registers mfa.query.history on the service, answered from
// store (package history); a request naming a person by "user" is resolved
// as the other queries' are. Like the others it is registered once per
// concurrent answer and shares their cap: past it a query is refused with
// busy at once.
func (q *QueryService) AddHistory(store *history.Store, log *slog.Logger) error {
	h := history.NewHandler(store, q.users, log)
	handler := micro.HandlerFunc(func(req micro.Request) {
		select {
		case q.sem <- struct{}{}:
		default:
			q.fail(req, "history", &job.ErrorInfo{Code: job.CodeBusy, Message: "history: too many queries in progress; retry later", Retryable: true})
			return
		}
		defer func() { <-q.sem }()
		h.Handle(req)
	})
	g := q.svc.AddGroup(job.QueryGroup)
	for i := 0; i < cap(q.sem); i++ {
		if err := g.AddEndpoint(job.QueryEndpointHistory, handler, micro.WithEndpointMetadata(map[string]string{"description": "a person's results, newest first (request {\"user_id\": N} or {\"user\": {...}}, optional \"limit\")"})); err != nil {
			return err
		}
	}
	return nil
}
