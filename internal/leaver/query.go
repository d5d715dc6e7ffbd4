package leaver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/micro"
)

// Limits of a mfa.query.leavers answer.
const (
	DefaultQueryLimit = 100
	MaxQueryLimit     = 1000
)

// QueryRequest is the body of a mfa.query.leavers request. State is one of
// States ("" any); Since (RFC 3339) keeps records that entered their state
// at or after it; Limit (default 100, at most 1000) caps the list.
type QueryRequest struct {
	State string `json:"state,omitempty"`
	Since string `json:"since,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// QueryData is the data of a mfa.query.leavers reply: the records longest
// in their state first, how many matched (Total; more than len(Leavers)
// when the limit cut them) and how many records are in each state.
type QueryData struct {
	Leavers []Summary     `json:"leavers"`
	Total   int           `json:"total"`
	Counts  map[State]int `json:"counts"`
}

// QueryError is a reply's error object, shaped as a result's.
type QueryError struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	HTTPStatus int    `json:"http_status,omitempty"`
	Retryable  bool   `json:"retryable"`
}

// QueryReply is the body of a reply: data or error.
type QueryReply struct {
	Data  *QueryData  `json:"data,omitempty"`
	Error *QueryError `json:"error,omitempty"`
}

// Handler answers mfa.query.leavers from a View.
type Handler struct{ view *View }

// NewHandler returns a handler on view.
func NewHandler(view *View) *Handler { return &Handler{view: view} }

// Handle implements micro.Handler: register it as the endpoint "leavers"
// of the group "mfa.query". It reads memory only, so it answers on the
// calling goroutine.
func (h *Handler) Handle(req micro.Request) {
	rep := h.Answer(req.Data())
	b, _ := json.Marshal(rep)
	if rep.Error != nil {
		_ = req.Error(fmt.Sprint(rep.Error.HTTPStatus), rep.Error.Code, b)
		return
	}
	_ = req.Respond(b)
}

// Answer answers one request body.
func (h *Handler) Answer(body []byte) QueryReply {
	var q QueryRequest
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			return qerr("invalid_request", `request must be {"state": "...", "since": "<RFC 3339>", "limit": N}, every field optional`, 400, false)
		}
	}
	var f Filter
	if q.State != "" {
		if !State(q.State).Valid() {
			return qerr("invalid_value", fmt.Sprintf("state must be one of %v", States), 400, false)
		}
		f.State = State(q.State)
	}
	if q.Since != "" {
		t, err := time.Parse(time.RFC3339, q.Since)
		if err != nil {
			return qerr("invalid_format", "since must be an RFC 3339 time", 400, false)
		}
		f.SinceFrom = t
	}
	if q.Limit < 0 || q.Limit > MaxQueryLimit {
		return qerr("out_of_range", fmt.Sprintf("limit must be between 1 and %d", MaxQueryLimit), 400, false)
	}
	if q.Limit == 0 {
		q.Limit = DefaultQueryLimit
	}
	select {
	case <-h.view.Ready():
	default:
		return qerr("unavailable", "the leaver registry is still loading; retry", 503, true)
	}
	list, total := h.view.List(f, q.Limit)
	counts := h.view.StateTotals()
	for _, s := range States {
		counts[s] += 0
	}
	return QueryReply{Data: &QueryData{Leavers: list, Total: total, Counts: counts}}
}

func qerr(code, msg string, status int, retryable bool) QueryReply {
	return QueryReply{Error: &QueryError{Code: code, Message: msg, HTTPStatus: status, Retryable: retryable}}
}
