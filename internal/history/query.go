package history

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/micro"
)

// Error codes of history queries, as in result error objects.
const (
	CodeInvalidRequest    = "invalid_request"
	CodeInvalidUserID     = "invalid_user_id"
	CodeConflictingFields = "conflicting_fields"
	CodeOutOfRange        = "out_of_range"
	CodeUnavailable       = "unavailable"
	CodeLookupUnsupported = "lookup_unsupported"
)

// Request is the body of a mfa.query.history request: a user id or a
// selector, and an optional limit (default 50, at most 500).
type Request struct {
	UserID int64     `json:"user_id,omitempty"`
	User   *Selector `json:"user,omitempty"`
	Limit  int       `json:"limit,omitempty"`
}

// ErrorInfo is a reply's error object, shaped as a result's.
type ErrorInfo struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	HTTPStatus int    `json:"http_status,omitempty"`
	Retryable  bool   `json:"retryable"`
}

// Reply is the body of a mfa.query.history reply: data (entries, newest
// first) or error.
type Reply struct {
	Data  []Entry    `json:"data"`
	Error *ErrorInfo `json:"error,omitempty"`
}

// MarshalJSON leaves data out of an error reply and writes [] for an empty
// history.
func (r Reply) MarshalJSON() ([]byte, error) {
	if r.Error != nil {
		return json.Marshal(struct {
			Error *ErrorInfo `json:"error"`
		}{r.Error})
	}
	d := r.Data
	if d == nil {
		d = []Entry{}
	}
	return json.Marshal(struct {
		Data []Entry `json:"data"`
	}{d})
}

// Resolver finds the OneLogin user a selector names. It returns 0 and no
// error when no user matches.
type Resolver interface {
	ResolveUser(ctx context.Context, sel Selector) (int64, error)
}

// Handler answers mfa.query.history.
type Handler struct {
	store    *Store
	resolver Resolver
	log      *slog.Logger
	timeout  time.Duration
}

// NewHandler returns a handler reading store. resolver may be nil; then
// lookups by selector find only the entries of jobs whose user was never
// resolved, and say so in an error when there are none.
func NewHandler(store *Store, resolver Resolver, log *slog.Logger) *Handler {
	return &Handler{store: store, resolver: resolver, log: log, timeout: 10 * time.Second}
}

// Handle implements micro.Handler: register it as the endpoint "history" of
// the group "mfa.query". It answers on the calling goroutine; a resolver
// that calls OneLogin can take seconds, so a service with one should call it
// from its pool of answering goroutines.
func (h *Handler) Handle(req micro.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
	defer cancel()
	rep := h.Answer(ctx, req.Data())
	b, err := json.Marshal(rep)
	if err != nil {
		b = []byte(`{"error":{"code":"unavailable","message":"encode reply","retryable":true}}`)
	}
	if rep.Error != nil {
		status := rep.Error.HTTPStatus
		if status == 0 {
			status = 500
		}
		_ = req.Error(fmt.Sprint(status), rep.Error.Code, b)
		return
	}
	_ = req.Respond(b)
}

// Answer answers one request body.
func (h *Handler) Answer(ctx context.Context, body []byte) Reply {
	var r Request
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return errReply(CodeInvalidRequest, `request must be {"user_id": N} or {"user": {"email"|"username"|"external_id": "..."}}, with an optional "limit"`, 400, false)
	}
	switch {
	case r.Limit < 0 || r.Limit > MaxLimit:
		return errReply(CodeOutOfRange, fmt.Sprintf("limit must be between 1 and %d, got %d", MaxLimit, r.Limit), 400, false)
	case r.UserID != 0 && r.User != nil:
		return errReply(CodeConflictingFields, "give user_id or user, not both", 400, false)
	case r.UserID < 0:
		return errReply(CodeInvalidUserID, "user_id must be a positive integer", 400, false)
	case r.UserID == 0 && r.User == nil:
		return errReply(CodeInvalidUserID, "user_id or user is required", 400, false)
	}
	limit := clampLimit(r.Limit)
	if r.UserID > 0 {
		es, err := h.store.Query(ctx, r.UserID, limit)
		if err != nil {
			return h.unavailable(err)
		}
		return Reply{Data: es}
	}
	if _, _, ok := r.User.key(); !ok {
		return errReply(CodeInvalidRequest, "user must name at least one of email, username, external_id", 400, false)
	}
	unresolved, err := h.store.QuerySelector(ctx, *r.User, limit)
	if err != nil {
		return h.unavailable(err)
	}
	if h.resolver == nil {
		if len(unresolved) == 0 {
			return errReply(CodeLookupUnsupported, "this service cannot look people up by email, username or external id; ask by user_id", 501, false)
		}
		return Reply{Data: unresolved}
	}
	id, err := h.resolver.ResolveUser(ctx, *r.User)
	if err != nil {
		h.log.Info("history query: user lookup failed", "error", err)
		return errReply(CodeUnavailable, "user lookup failed: "+err.Error(), 503, true)
	}
	if id <= 0 {
		return Reply{Data: unresolved}
	}
	es, err := h.store.Query(ctx, id, limit)
	if err != nil {
		return h.unavailable(err)
	}
	return Reply{Data: combine(es, unresolved, limit)}
}

func (h *Handler) unavailable(err error) Reply {
	h.log.Warn("history query failed", "error", err)
	return errReply(CodeUnavailable, "history is unavailable: "+err.Error(), 503, true)
}

func errReply(code, msg string, status int, retryable bool) Reply {
	return Reply{Error: &ErrorInfo{Code: code, Message: msg, HTTPStatus: status, Retryable: retryable}}
}
