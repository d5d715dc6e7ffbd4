package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/audit"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/pause"
)

// Filter selects held jobs: by source, by job id, or all of them.
type Filter struct {
	// Source selects one source's jobs when BySource is set ("" is the
	// jobs without source).
	Source   string
	BySource bool
	// JobID selects one job, whatever its source.
	JobID string
	// AllStates lists released, discarded and cancelled records too;
	// otherwise only jobs still held.
	AllStates bool
}

func (f Filter) keys() string {
	switch {
	case f.JobID != "":
		return "held.*." + job.IDToken(f.JobID)
	case f.BySource:
		return "held." + SourceToken(f.Source) + ".>"
	}
	return "held.>"
}

// List returns the selected records, oldest hold first. It reads the
// bucket's current values in one pass (a KV watch up to its end).
func (g *Guard) List(ctx context.Context, f Filter) ([]Held, error) {
	w, err := g.kv.Watch(ctx, f.keys(), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("guard: list held jobs: %w", err)
	}
	defer w.Stop()
	var out []Held
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("guard: list held jobs: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("guard: list held jobs: the watch ended early")
			}
			if e == nil {
				sort.SliceStable(out, func(i, j int) bool { return out[i].HeldAt.Before(out[j].HeldAt) })
				return out, nil
			}
			h, err := decodeHeld(e)
			if err != nil {
				return nil, err
			}
			if f.AllStates || h.State == StateHeld {
				out = append(out, *h)
			}
		}
	}
}

// Operator names who acts and why, for the records and the audit trail.
type Operator struct {
	By     string
	Reason string
}

// Report is what Release or Discard did.
type Report struct {
	// Done are the job ids re-published as released or discarded.
	Done []string
	// Skipped are selected jobs left alone, with why (already decided).
	Skipped []string
}

// Release lets the selected held jobs run: each is marked released and its
// stored message re-published; the job then runs whatever the count. A
// job released before whose message was never published (the command
// died) is published now.
func (g *Guard) Release(ctx context.Context, f Filter, op Operator, now time.Time) (Report, error) {
	return g.decide(ctx, f, StateReleased, op, now)
}

// Discard ends the selected held jobs: each is marked discarded and its
// stored message re-published, so that the worker ends it cancelled with
// code discarded through its normal path (one result, ledger finished).
func (g *Guard) Discard(ctx context.Context, f Filter, op Operator, now time.Time) (Report, error) {
	return g.decide(ctx, f, StateDiscarded, op, now)
}

func (g *Guard) decide(ctx context.Context, f Filter, to State, op Operator, now time.Time) (Report, error) {
	var rep Report
	if f.JobID == "" && !f.BySource {
		return rep, errors.New("guard: select held jobs by source or by job id")
	}
	f.AllStates = true
	hs, err := g.List(ctx, f)
	if err != nil {
		return rep, err
	}
	sources := map[string]bool{}
	for i := range hs {
		h := &hs[i]
		done, skip, err := g.decideOne(ctx, h, to, op, now)
		if err != nil {
			return rep, g.finish(ctx, &rep, sources, to, f, op, now, err)
		}
		switch {
		case done:
			rep.Done = append(rep.Done, h.JobID)
			sources[h.Source] = true
		case skip != "" && f.JobID != "":
			rep.Skipped = append(rep.Skipped, h.JobID+": "+skip)
		}
	}
	return rep, g.finish(ctx, &rep, sources, to, f, op, now, nil)
}

// finish clears the trips of the sources left without held jobs and
// leaves the audit record, also after a failure part-way.
func (g *Guard) finish(ctx context.Context, rep *Report, sources map[string]bool, to State, f Filter, op Operator, now time.Time, failed error) error {
	errs := []error{failed}
	for s := range sources {
		errs = append(errs, g.clearTrip(ctx, s))
	}
	if len(rep.Done) > 0 {
		action := audit.ActionHoldRelease
		if to == StateDiscarded {
			action = audit.ActionHoldDiscard
		}
		r := audit.Record{Action: action, At: now, By: op.By, Reason: op.Reason, JobIDs: rep.Done, Count: len(rep.Done)}
		if f.BySource {
			r.Source = f.Source
		}
		if err := audit.Publish(ctx, g.pub, r, ""); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// decideOne moves one record to state to and publishes its message. done
// reports a publish; skip why a record was left alone.
func (g *Guard) decideOne(ctx context.Context, h *Held, to State, op Operator, now time.Time) (done bool, skip string, err error) {
	for i := 0; ; i++ {
		if i == casTries {
			return false, "", errBusy
		}
		switch {
		case h.State == StateHeld:
			h.State, h.DecidedAt, h.DecidedBy, h.Reason, h.Published = to, now.UTC(), op.By, op.Reason, false
			rev, err := g.put(ctx, h)
			if isConflict(err) {
				if h, err = g.get(ctx, HeldKey(h.Source, h.JobID)); err != nil || h == nil {
					return false, "", err
				}
				continue
			}
			if err != nil {
				return false, "", fmt.Errorf("guard: mark %s %s: %w", h.JobID, to, err)
			}
			h.Revision = rev
		case h.State == to && !h.Published:
			// Decided by a command that died before publishing.
		default:
			return false, "already " + string(h.State), nil
		}
		break
	}
	if !Guarded(h.Type) {
		return false, "", fmt.Errorf("guard: held job %s has type %q, which the guard never holds", h.JobID, h.Type)
	}
	if err := g.publish(ctx, h, to); err != nil {
		return false, "", err
	}
	h.Published = true
	if _, err := g.put(ctx, h); err != nil && !isConflict(err) {
		// Published; a later command publishes it again under the same
		// message id, which JetStream drops within its window and the
		// ledger answers beyond it.
		return true, "", fmt.Errorf("guard: mark %s published: %w", h.JobID, err)
	}
	return true, "", nil
}

// MsgID is the Nats-Msg-Id of a held job re-published as released or
// discarded, at the revision of the record that decided it.
func MsgID(jobID string, s State, rev uint64) string {
	return jobID + ":guard:" + string(s) + ":" + strconv.FormatUint(rev, 10)
}

func (g *Guard) publish(ctx context.Context, h *Held, to State) error {
	m := nats.NewMsg(h.Type.Subject())
	m.Data = h.Body
	for k, vs := range h.Header {
		for _, v := range vs {
			m.Header.Add(k, v)
		}
	}
	if !h.JobTime.IsZero() {
		m.Header.Set(job.HeaderJobTime, h.JobTime.UTC().Format(time.RFC3339Nano))
	}
	m.Header.Set(HeaderGuard, string(to))
	m.Header.Set(jetstream.MsgIDHeader, MsgID(h.JobID, to, h.Revision))
	if _, err := g.pub.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("guard: re-publish %s: %w", h.JobID, err)
	}
	return nil
}

// clearTrip clears a source's trip when it has no held job left. A hold
// that happens meanwhile changes the window's revision, and the check runs
// again.
func (g *Guard) clearTrip(ctx context.Context, source string) error {
	for i := 0; i < casTries; i++ {
		w, rev, err := g.window(ctx, source)
		if err != nil {
			return err
		}
		if w.TrippedAt.IsZero() || rev == 0 {
			return nil
		}
		hs, err := g.List(ctx, Filter{Source: source, BySource: true})
		if err != nil {
			return err
		}
		if len(hs) > 0 {
			return nil
		}
		w.TrippedAt = time.Time{}
		err = g.putWindow(ctx, w, rev)
		if err == nil {
			return nil
		}
		if !isConflict(err) {
			return fmt.Errorf("guard: clear the trip: %w", err)
		}
		if !backoff(ctx, i) {
			return ctx.Err()
		}
	}
	return errBusy
}

// WatchHeld calls fn with the number of held jobs per source (sources with
// none left out) once it has read the bucket, then after every change,
// until ctx ends. Every replica runs it, so each exports the same
// mfa_jobs_held. It returns nil when ctx ends, and an error when the watch
// ends otherwise; the caller starts it again.
func (g *Guard) WatchHeld(ctx context.Context, fn func(map[string]int)) error {
	w, err := g.kv.Watch(ctx, "held.>")
	if err != nil {
		return fmt.Errorf("guard: watch held jobs: %w", err)
	}
	defer w.Stop()
	held := map[string]string{} // key -> source, for jobs still held
	ready := false
	report := func() {
		n := map[string]int{}
		for _, s := range held {
			n[s]++
		}
		fn(n)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("guard: the watch of held jobs ended")
			}
			if e == nil {
				ready = true
				report()
				continue
			}
			if h, err := decodeHeld(e); e.Operation() == jetstream.KeyValuePut && err == nil && h.State == StateHeld {
				held[e.Key()] = h.Source
			} else {
				delete(held, e.Key())
			}
			if ready {
				report()
			}
		}
	}
}

// TrippedSources returns every tripped source with the time it tripped.
// A tripped source holds all of its offboards and removes until an
// operator has decided on its held jobs.
func (g *Guard) TrippedSources(ctx context.Context) (map[string]time.Time, error) {
	w, err := g.kv.Watch(ctx, "window.>", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("guard: list windows: %w", err)
	}
	defer w.Stop()
	out := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("guard: list windows: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("guard: list windows: the watch ended early")
			}
			if e == nil {
				return out, nil
			}
			var win window
			if err := json.Unmarshal(e.Value(), &win); err != nil {
				return nil, fmt.Errorf("guard: corrupt window under %s: %w", e.Key(), err)
			}
			if !win.TrippedAt.IsZero() {
				out[win.Source] = win.TrippedAt
			}
		}
	}
}

// RunHeldGauge keeps calling set with the held jobs per source (see
// WatchHeld) until ctx ends, watching again after a pause whenever the
// watch ends. After a NATS restart the watch resumes by itself once its
// consumer notices the missed heartbeats (about 20 s), so the gauge lags
// by that much. It returns when ctx ends; run it in a goroutine that the
// worker waits for.
func (g *Guard) RunHeldGauge(ctx context.Context, set func(map[string]int), log *slog.Logger) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := g.WatchHeld(ctx, set)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			wait = 100 * time.Millisecond
		}
		log.Warn("watching the held jobs failed; watching again", "err", err, "in", wait)
		if !pause.For(ctx, wait) {
			return
		}
		wait = min(2*wait, 10*time.Second)
	}
}
