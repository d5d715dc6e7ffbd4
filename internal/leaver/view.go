package leaver

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/pause"
)

// Summary is what the View keeps of a record, and what mfa.query.leavers
// answers with.
type Summary struct {
	Key          string    `json:"key"`
	State        State     `json:"state"`
	Reason       string    `json:"reason,omitempty"`
	Since        time.Time `json:"since"`
	UserID       int64     `json:"user_id,omitempty"`
	Source       string    `json:"source,omitempty"`
	EventID      string    `json:"event_id,omitempty"`
	JobID        string    `json:"job_id,omitempty"`
	EffectiveAt  time.Time `json:"effective_at,omitzero"`
	OffboardedAt time.Time `json:"offboarded_at,omitzero"`
	LastCheckAt  time.Time `json:"last_check_at,omitzero"`
	CheckSlot    int64     `json:"-"`
}

// SummaryOf summarises r.
func SummaryOf(r Record) Summary {
	return Summary{
		Key: r.Key, State: r.State, Reason: r.Reason, Since: r.Since, UserID: r.UserID,
		Source: r.Source, EventID: r.EventID, JobID: r.JobID, EffectiveAt: r.EffectiveAt,
		OffboardedAt: r.OffboardedAt, LastCheckAt: r.LastCheckAt, CheckSlot: r.CheckSlot,
	}
}

// View is an in-memory summary of every record, kept current by a watch
// on the bucket. Queries, gauges and re-verification read it.
type View struct {
	kv  jetstream.KeyValue
	log *slog.Logger

	mu   sync.RWMutex
	recs map[string]*Summary
	// byState indexes recs by state, so that a query for one state (the
	// open ones) walks only those.
	byState map[State]map[string]*Summary
	ready   chan struct{}
}

// NewView returns a view of kv; Run fills it.
func NewView(kv jetstream.KeyValue, log *slog.Logger) *View {
	return &View{kv: kv, log: log, recs: make(map[string]*Summary), byState: make(map[State]map[string]*Summary), ready: make(chan struct{})}
}

// Ready is closed once the view holds every record that existed when Run
// started.
func (v *View) Ready() <-chan struct{} { return v.ready }

// Run watches the bucket until ctx ends, re-watching after an error.
func (v *View) Run(ctx context.Context) error {
	readyOnce := sync.OnceFunc(func() { close(v.ready) })
	for {
		err := v.watch(ctx, readyOnce)
		if ctx.Err() != nil {
			return nil
		}
		v.log.Warn("watching the leaver registry failed; watching again", "err", err)
		if !pause.For(ctx, time.Second) {
			return nil
		}
	}
}

func (v *View) watch(ctx context.Context, readyOnce func()) error {
	w, err := v.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("leaver: watch %s: %w", Bucket, err)
	}
	defer func() { _ = w.Stop() }()
	fresh := make(map[string]*Summary)
	initial := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("leaver: watch ended")
			}
			if e == nil {
				// Every existing record has arrived: swap them in whole,
				// so that a re-watch drops records deleted meanwhile.
				byState := make(map[State]map[string]*Summary)
				for k, s := range fresh {
					index(byState, k, s)
				}
				v.mu.Lock()
				v.recs, v.byState, fresh = fresh, byState, nil
				v.mu.Unlock()
				initial = false
				readyOnce()
				continue
			}
			k := e.Key()
			if strings.HasPrefix(k, "alias.") {
				continue
			}
			var s *Summary
			del := e.Operation() != jetstream.KeyValuePut
			if !del {
				var r Record
				if json.Unmarshal(e.Value(), &r) != nil {
					v.log.Warn("a value in the leaver registry is not a record; not shown", "key", k)
					continue
				}
				sum := SummaryOf(r)
				s = &sum
				del = r.MovedTo != ""
			}
			if initial {
				if del {
					delete(fresh, k)
				} else {
					fresh[k] = s
				}
				continue
			}
			v.mu.Lock()
			if old, ok := v.recs[k]; ok {
				delete(v.byState[old.State], k)
			}
			if del {
				delete(v.recs, k)
			} else {
				v.recs[k] = s
				index(v.byState, k, s)
			}
			v.mu.Unlock()
		}
	}
}

func index(byState map[State]map[string]*Summary, k string, s *Summary) {
	m := byState[s.State]
	if m == nil {
		m = make(map[string]*Summary)
		byState[s.State] = m
	}
	m[k] = s
}

// Filter selects summaries: State ("" any), SinceFrom (state entered at or
// after; zero: any).
type Filter struct {
	State     State
	SinceFrom time.Time
}

// List returns up to limit summaries matching f, those longest in their
// state first, and how many matched. It keeps only the first limit in a
// heap while it walks the records, so its cost grows with the records
// (not with their sorting) and the answer's size.
func (v *View) List(f Filter, limit int) ([]Summary, int) {
	if limit <= 0 {
		limit = MaxQueryLimit
	}
	h := make(summaryHeap, 0, min(limit, 1024))
	n := 0
	v.mu.RLock()
	recs := v.recs
	if f.State != "" {
		recs = v.byState[f.State]
	}
	for _, s := range recs {
		if !f.SinceFrom.IsZero() && s.Since.Before(f.SinceFrom) {
			continue
		}
		n++
		switch {
		case len(h) < limit:
			heap.Push(&h, *s)
		case earlier(*s, h[0]):
			h[0] = *s
			heap.Fix(&h, 0)
		}
	}
	v.mu.RUnlock()
	out := []Summary(h)
	slices.SortFunc(out, func(a, b Summary) int {
		if earlier(a, b) {
			return -1
		}
		if earlier(b, a) {
			return 1
		}
		return 0
	})
	return out, n
}

func earlier(a, b Summary) bool {
	if c := a.Since.Compare(b.Since); c != 0 {
		return c < 0
	}
	return a.Key < b.Key
}

// summaryHeap is a max-heap by (Since, Key): its top is the latest of the
// earliest kept so far.
type summaryHeap []Summary

func (h summaryHeap) Len() int           { return len(h) }
func (h summaryHeap) Less(i, j int) bool { return earlier(h[j], h[i]) }
func (h summaryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *summaryHeap) Push(x any)        { *h = append(*h, x.(Summary)) }
func (h *summaryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Counts returns how many records are in each state, and since when the
// oldest open record is open (zero when none is).
func (v *View) Counts() (map[State]int, time.Time) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	c := make(map[State]int, len(v.byState))
	for s, m := range v.byState {
		c[s] = len(m)
	}
	var oldest time.Time
	for _, s := range v.byState[Open] {
		if oldest.IsZero() || s.Since.Before(oldest) {
			oldest = s.Since
		}
	}
	return c, oldest
}

// Each calls fn for every summary (under a read lock: fn must not call
// the view).
func (v *View) Each(fn func(Summary)) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, s := range v.recs {
		fn(*s)
	}
}

// Len returns how many records the view holds.
func (v *View) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.recs)
}

// StateCounts is Counts with string keys, for the metrics.
func (v *View) StateCounts() (map[string]int, time.Time) {
	c, oldest := v.Counts()
	out := make(map[string]int, len(c))
	for s, n := range c {
		out[string(s)] = n
	}
	return out, oldest
}

// StateTotals returns how many records are in each state.
func (v *View) StateTotals() map[State]int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	c := make(map[State]int, len(v.byState))
	for s, m := range v.byState {
		c[s] = len(m)
	}
	return c
}
