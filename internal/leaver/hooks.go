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
	if json.Unmarshal(body, &j) != nil || j.Type != "offboard" || j.ID == "" {
		return Acceptance{}, false
	}
	a = Acceptance{JobID: j.ID, UserID: j.UserID, User: j.User, Source: j.Source, EffectiveAt: j.RequestedAt}
	if !j.NotBefore.IsZero() {
		a.EffectiveAt, a.DueAt = j.NotBefore, j.NotBefore
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
// body is given; a job that is not an offboard is ignored. It is the one
// line the door (with the HR event) and the job path (with a zero HREvent)
// call.
func (s *Store) NoteJob(ctx context.Context, st State, body []byte, ev HREvent) error {
	if st != Scheduled && st != Held && st != Running {
		return fmt.Errorf("leaver: %s is not a step of a job", st)
	}
	a, ok := JobAcceptance(body)
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
