package leaver

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// JobAcceptance reads an offboard job's body (schemas/job.v1.json) into an
// acceptance: its id, its person, its source and its time (not_before,
// else requested_at). ok is false for any other type, or a body that names
// no one.
func JobAcceptance(body []byte) (a Acceptance, ok bool) {
	var j struct {
		ID          string    `json:"id"`
		Type        string    `json:"type"`
		UserID      int64     `json:"user_id"`
		User        *Selector `json:"user"`
		Source      string    `json:"source"`
		RequestedAt time.Time `json:"requested_at"`
		NotBefore   time.Time `json:"not_before"`
	}
	if json.Unmarshal(body, &j) != nil {
		return Acceptance{}, false
	}
	return acceptance(j.ID, j.Type, j.UserID, j.User, j.Source, j.RequestedAt, j.NotBefore)
}

// acceptance is the acceptance of an offboard with these fields; ok is
// false for any other type, or a job that names no one.
func acceptance(id, typ string, userID int64, user *Selector, source string, requestedAt, notBefore time.Time) (a Acceptance, ok bool) {
	if typ != string(job.TypeOffboard) || id == "" {
		return Acceptance{}, false
	}
	a = Acceptance{JobID: id, UserID: userID, User: user, Source: source, EffectiveAt: requestedAt}
	if !notBefore.IsZero() {
		a.EffectiveAt, a.DueAt = notBefore, notBefore
	}
	if _, ok := a.key(); !ok {
		return Acceptance{}, false
	}
	return a, true
}

// HREvent names the HR event a job was made from (for the door's hook).
type HREvent struct {
	Source     string // the HR source: bamboohr, hibob, cloudevents, scim
	ID         string
	ReceivedAt time.Time
}

// NoteJob records step st (Scheduled, Held or Running) of the job whose
// body is given; a job that is not an offboard is ignored. The door calls
// it with the HR event; the job path, which has the job parsed, calls
// NoteParsed.
func (s *Store) NoteJob(ctx context.Context, st State, body []byte, ev HREvent) error {
	a, ok := JobAcceptance(body)
	return s.note(ctx, st, a, ok, ev)
}

// NoteParsed is NoteJob for a job already parsed (the job path's), without
// reading its body again. at is the job's time as the job path bounds it
// (the time it records in MFA_PEOPLE), which becomes the record's
// effective time; zero: the job's requested_at, bounded here.
func (s *Store) NoteParsed(ctx context.Context, st State, j *job.Job, at time.Time) error {
	a, ok := acceptance(j.ID, string(j.Type), j.UserID, (*Selector)(j.User), j.Source, cmp.Or(at, j.RequestedAt), j.NotBefore)
	return s.note(ctx, st, a, ok, HREvent{})
}

func (s *Store) note(ctx context.Context, st State, a Acceptance, ok bool, ev HREvent) error {
	if st != Scheduled && st != Held && st != Running {
		return fmt.Errorf("leaver: %s is not a step of a job", st)
	}
	if !ok {
		return nil
	}
	a.HRSource, a.EventID, a.ReceivedAt = ev.Source, ev.ID, ev.ReceivedAt
	// A requested_at is bounded as the job's time is (job.BoundTime): at
	// most 5 minutes after the event was received, or after now (the job
	// was stored before it is noted). A not_before is when the job runs.
	if a.DueAt.IsZero() && !a.EffectiveAt.IsZero() {
		a.EffectiveAt = job.BoundTime(a.EffectiveAt, cmp.Or(ev.ReceivedAt, time.Now()))
	}
	return s.step(ctx, a, st)
}
