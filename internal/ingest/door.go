package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// MaxFuture is how far ahead of now an event's own time may be: beyond it
// the event is refused (422), so that a clock running ahead can never date
// a leaver's job in the future.
const MaxFuture = 5 * time.Minute

// hibobMaxAge is how old a HiBob event's triggeredAt may be: HiBob signs no
// timestamp, so a body older than the duplicate window (24 h) could be
// replayed as new.
const hibobMaxAge = 24 * time.Hour

// problemType is the RFC 9457 type of a refusal at the door.
const problemType = "https://github.com/mfa-worker/mfa-worker/blob/main/docs/hr-sources.md#refused-at-the-door"

// Refusal is an event refused at the door: nothing is stored. Its fields
// name the rule and the field at fault, never a value.
type Refusal struct {
	Status int
	Title  string
	Detail string
	// Rule, Field and Code are empty when they do not apply.
	Rule, Field, Code string
}

func (r *Refusal) Error() string { return r.Detail }

// decide reads an event as the mapper will, refuses one that is dated in the
// future (or, from HiBob, older than 24 h), and applies the rules with the
// job model's validation: a rule error or an invalid job is a Refusal, so
// that a sender is never told 2xx for an event whose job cannot run.
func (s *Server) decide(source, id string, body []byte, extra ...nats.Header) *Refusal {
	now := s.now()
	h := nats.Header{HeaderSource: {source}, HeaderEventID: {id}, HeaderReceivedAt: {now.UTC().Format(time.RFC3339Nano)}}
	for _, x := range extra {
		for k, v := range x {
			h[k] = v
		}
	}
	ev, err := DecodeWith(h, body, s.cfg.Rules.Times())
	if err != nil {
		return &Refusal{Status: http.StatusUnprocessableEntity, Title: "The event cannot be read", Detail: err.Error(), Field: "event"}
	}
	if ev.Time.After(now.Add(MaxFuture)) {
		return &Refusal{Status: http.StatusUnprocessableEntity, Title: "The event is dated in the future",
			Detail: "event time is more than 5 minutes ahead of the receiver's clock", Field: "event.time"}
	}
	if source == SourceHiBob && ev.Time.Before(now.Add(-hibobMaxAge)) {
		return &Refusal{Status: http.StatusUnprocessableEntity, Title: "The event is too old",
			Detail: "triggeredAt is more than 24 hours old: HiBob signs no timestamp, so an old body is not taken as new", Field: "triggeredAt"}
	}
	_, errs := s.applyRules(ev)
	if len(errs) == 0 {
		return nil
	}
	e := errs[0]
	r := &Refusal{Status: http.StatusUnprocessableEntity, Title: "A rule cannot make a valid job of this event",
		Detail: e.Error(), Rule: e.Rule, Field: e.Field, Code: e.Code}
	if e.Rule == "" {
		r.Title = "The event is outside the bounds rules are given"
	}
	if len(errs) > 1 {
		r.Detail += fmt.Sprintf(" (and %d more rule errors)", len(errs)-1)
	}
	return r
}

// applyRules applies the rules; a panic in a rule's evaluation is a rule
// error, never a dead process.
func (s *Server) applyRules(ev rules.Event) (jobs []rules.Job, errs []*rules.RuleError) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("rule evaluation panicked", "source", ev.Source, "event_id", ev.ID)
			jobs, errs = nil, []*rules.RuleError{{Err: errors.New("rule evaluation failed unexpectedly")}}
		}
	}()
	return s.cfg.Rules.Apply(ev)
}

// writeProblem answers an RFC 9457 problem+json body.
func writeProblem(w http.ResponseWriter, r *Refusal) {
	body := map[string]any{"type": problemType, "title": r.Title, "status": r.Status, "detail": r.Detail}
	if r.Rule != "" {
		body["rule"] = r.Rule
	}
	if r.Field != "" {
		body["field"] = r.Field
	}
	if r.Code != "" {
		body["code"] = r.Code
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(r.Status)
	_, _ = w.Write(append(b, '\n'))
}

// SCIMError is the SCIM form of a refusal at the door: 400 with scimType
// invalidValue, detail naming the rule and the field.
func (r *Refusal) SCIMError() error {
	return scimFail(http.StatusBadRequest, "invalidValue", "%s", r.Detail)
}
