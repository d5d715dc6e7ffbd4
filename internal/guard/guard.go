package guard

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/pause"
)

// Bucket is the guard's KV bucket.
const Bucket = job.GuardBucket

// Defaults, chosen for a company of about 10,000 people with about 10
// leavers a day: a normal hour has a handful of offboards, a busy one (an
// HR batch after a holiday) a few dozen. 50 in one hour from one source
// is well above that and far below the whole company.
const (
	DefaultLimit  = 50
	DefaultWindow = time.Hour
	// MaxLimit bounds WORKER_GUARD_LIMIT so that a window (about 40 bytes
	// an admitted job) stays well inside a KV value.
	MaxLimit = 10000
)

// HeaderGuard marks a job re-published by Release or Discard (value
// "released" or "discarded"). It is for people reading the stream: the
// worker decides from the guard's record, never from this header.
const HeaderGuard = job.HeaderGuard

// Config is the guard's configuration.
type Config struct {
	// Limit is how many offboards and removes of one source run per
	// Window (WORKER_GUARD_LIMIT); 0 turns counting off.
	Limit int
	// Window is the sliding window they are counted over
	// (WORKER_GUARD_WINDOW).
	Window time.Duration
}

// DefaultConfig is the guard as shipped.
func DefaultConfig() Config { return Config{Limit: DefaultLimit, Window: DefaultWindow} }

// WithDefaults returns c with a zero Window set to DefaultWindow. A zero
// Limit stays 0 (off): only DefaultConfig turns the guard on.
func (c Config) WithDefaults() Config {
	c.Window = cmp.Or(c.Window, DefaultConfig().Window)
	return c
}

// Validate reports every problem of c with its defaults applied, each
// naming its setting.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p config.Problems
	if c.Limit < 0 || c.Limit > MaxLimit {
		p.Add("WORKER_GUARD_LIMIT", "must be 0 (off) to %d, got %d", MaxLimit, c.Limit)
	}
	if c.Window < time.Minute || c.Window > 7*24*time.Hour {
		p.Add("WORKER_GUARD_WINDOW", "must be between 1m and 168h, got %v", c.Window)
	}
	return p.Err()
}

// Guarded reports whether the guard counts jobs of type t: offboards and
// removes, the jobs that take MFA away.
func Guarded(t job.Type) bool { return t == job.TypeOffboard || t == job.TypeRemove }

// Provision creates or updates MFA_GUARD: file storage, no TTL (a hold
// waits for an operator however long it takes), one revision per key.
func Provision(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	if replicas == 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Blast-radius guard: offboards and removes counted per source, and held jobs",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("guard: provision bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// Decision is Admit's answer.
type Decision int

// Decisions.
const (
	// Undecided comes with an error: nothing was decided; the job must
	// not run now (give its message back and try later).
	Undecided Decision = iota
	// Run: execute the job.
	Run
	// Hold: the job is stored as held; mark its ledger record held and
	// acknowledge the message, publishing no result.
	Hold
	// Released: an operator released the held job; execute it.
	Released
	// Discarded: an operator discarded the held job; end it cancelled
	// with code discarded (job.CodeDiscarded).
	Discarded
)

func (d Decision) String() string {
	switch d {
	case Undecided:
		return "undecided"
	case Run:
		return "run"
	case Hold:
		return "hold"
	case Released:
		return "released"
	case Discarded:
		return "discarded"
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// State is a held job's state.
type State string

// States of a held job.
const (
	StateHeld      State = "held"
	StateReleased  State = "released"
	StateDiscarded State = "discarded"
	// StateCancelled: a cancel job ended the job while it was held.
	StateCancelled State = "cancelled"
)

// Job is what Admit needs of a job: who it is, and, should it be held,
// what it takes to run it later.
type Job struct {
	ID            string
	Type          job.Type
	Source        string
	UserID        int64
	CorrelationID string
	// Body is the job message's body as it arrived.
	Body []byte
	// Header holds the message headers to hand on when the job is released
	// (Nats-* headers are dropped; Mfa-Job-Time is set from Time).
	Header nats.Header
	// Time is the job's time (bounded as the contract says); it travels in
	// Mfa-Job-Time when the job is re-published.
	Time time.Time
	// Unseen says that no earlier delivery of the job id can have reached
	// the guard: the delivery created the job's ledger record, and the
	// message is not one the guard re-published (HeaderGuard). Admit then
	// does not look for a held record first: a held job's redelivery finds
	// its ledger record, a released or discarded one carries HeaderGuard,
	// and past the limit the held record's create still finds one.
	Unseen bool
}

// Held is a held job as stored in MFA_GUARD.
type Held struct {
	JobID         string              `json:"job_id"`
	Type          job.Type            `json:"type"`
	Source        string              `json:"source"`
	UserID        int64               `json:"user_id,omitempty"`
	CorrelationID string              `json:"correlation_id,omitempty"`
	Body          []byte              `json:"body"`
	Header        map[string][]string `json:"header,omitempty"`
	JobTime       time.Time           `json:"job_time"`
	HeldAt        time.Time           `json:"held_at"`
	State         State               `json:"state"`
	// DecidedAt, DecidedBy and Reason say who released, discarded or
	// cancelled it; Published that its message was re-published.
	DecidedAt time.Time `json:"decided_at,omitzero"`
	DecidedBy string    `json:"decided_by,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Published bool      `json:"published,omitempty"`
	// Revision is the record's KV revision (not stored).
	Revision uint64 `json:"-"`
}

// Publisher stores a message in JetStream (a jetstream.JetStream).
type Publisher interface {
	PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Guard is the blast-radius guard on MFA_GUARD.
type Guard struct {
	kv  jetstream.KeyValue
	pub Publisher
	cfg Config
}

// New returns a guard on kv; pub re-publishes released and discarded jobs
// and audit records.
func New(kv jetstream.KeyValue, pub Publisher, cfg Config) *Guard {
	return &Guard{kv: kv, pub: pub, cfg: cfg.WithDefaults()}
}

// Open returns a guard on the provisioned bucket, for the operators'
// commands.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Guard, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("open %s (the worker creates it at start): %w", Bucket, err)
	}
	return New(kv, js, cfg), nil
}

// SourceToken is the key token of a source: base64url without padding, or
// "_" for no source ("_" is no base64url encoding of anything).
func SourceToken(source string) string {
	if source == "" {
		return "_"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(source))
}

// WindowKey is the KV key of a source's window.
func WindowKey(source string) string { return "window." + SourceToken(source) }

// HeldKey is the KV key of a held job.
func HeldKey(source, jobID string) string {
	return "held." + SourceToken(source) + "." + job.IDToken(jobID)
}

// casTries bounds the compare-and-set loops; each retry follows another
// writer's success, so running out means the key is changing constantly.
const casTries = 100

var errBusy = errors.New("guard: the record keeps changing; try again")

// backoff pauses after a lost compare-and-set, a little longer each time
// and at random, so that replicas holding a burst of jobs at once do not
// retry in lockstep. It reports false when ctx ended.
func backoff(ctx context.Context, try int) bool {
	return pause.For(ctx, time.Duration(rand.Int64N(int64(min(try+1, 20))*int64(time.Millisecond))))
}

func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

func isMissing(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}

// window is a source's admissions over the last Window, and whether the
// source is tripped. Its revision changes with every hold, which lets a
// trip be cleared only when no hold happened meanwhile.
type window struct {
	Source   string      `json:"source"`
	Admitted []admission `json:"admitted"`
	// TrippedAt is when the source's first undecided hold happened; zero
	// when it has none.
	TrippedAt  time.Time `json:"tripped_at,omitzero"`
	LastHeldAt time.Time `json:"last_held_at,omitzero"`
}

// admission is one admitted job: when (Unix milliseconds) and a hash of
// its id (job ids are up to 128 characters; 16 suffice to tell the jobs of
// one window apart).
type admission struct {
	At int64  `json:"t"`
	ID string `json:"j"`
}

func idHash(jobID string) string {
	s := sha256.Sum256([]byte(jobID))
	return base64.RawURLEncoding.EncodeToString(s[:12])
}

func (w *window) prune(since time.Time) {
	cut := since.UnixMilli()
	kept := w.Admitted[:0]
	for _, a := range w.Admitted {
		if a.At > cut {
			kept = append(kept, a)
		}
	}
	w.Admitted = kept
}

func (w *window) has(h string) bool {
	for _, a := range w.Admitted {
		if a.ID == h {
			return true
		}
	}
	return false
}

func (g *Guard) window(ctx context.Context, source string) (*window, uint64, error) {
	e, err := g.kv.Get(ctx, WindowKey(source))
	if isMissing(err) {
		return &window{Source: source}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("guard: read the window: %w", err)
	}
	var w window
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		// A window nobody can read (written by hand) counts as tripped:
		// the source's jobs are held, which pages, rather than run
		// uncounted or fail. The next write replaces it.
		return &window{Source: source, TrippedAt: time.Now().UTC()}, e.Revision(), nil
	}
	w.Source = source
	return &w, e.Revision(), nil
}

// putWindow writes w at revision rev (0: create).
func (g *Guard) putWindow(ctx context.Context, w *window, rev uint64) error {
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = g.kv.Create(ctx, WindowKey(w.Source), b)
	} else {
		_, err = g.kv.Update(ctx, WindowKey(w.Source), b, rev)
	}
	return err
}

// Admit decides whether an offboard or a remove runs now (see the package
// documentation). Jobs of other types always Run. An error comes with
// Undecided: the job must not run; give its message back and try later.
// now is the worker's clock at the decision; admissions are counted at it.
func (g *Guard) Admit(ctx context.Context, j Job, now time.Time) (Decision, error) {
	if !Guarded(j.Type) {
		return Run, nil
	}
	if !j.Unseen {
		h, err := g.get(ctx, HeldKey(j.Source, j.ID))
		if err != nil {
			return Undecided, err
		}
		if h != nil {
			// Held before: decided by an operator, or a redelivery after a
			// worker died between the hold and the ack.
			return g.decided(ctx, h, now)
		}
	}
	if g.cfg.Limit <= 0 {
		return Run, nil
	}
	ih := idHash(j.ID)
	for i := 0; ; i++ {
		if i == casTries {
			return Undecided, errBusy
		}
		w, rev, err := g.window(ctx, j.Source)
		if err != nil {
			return Undecided, err
		}
		w.prune(now.Add(-g.cfg.Window))
		if w.has(ih) {
			return Run, nil // admitted before: a redelivery or a retry
		}
		if !w.TrippedAt.IsZero() || len(w.Admitted) >= g.cfg.Limit {
			break
		}
		w.Admitted = append(w.Admitted, admission{At: now.UnixMilli(), ID: ih})
		err = g.putWindow(ctx, w, rev)
		if err == nil {
			return Run, nil
		}
		if !isConflict(err) {
			return Undecided, fmt.Errorf("guard: count the job: %w", err)
		}
		if !backoff(ctx, i) {
			return Undecided, ctx.Err()
		}
	}
	// Past the limit or tripped: store the job first, then trip the
	// source, so that a trip is cleared only once no held job is left.
	h, err := g.store(ctx, j, now)
	if err != nil {
		return Undecided, err
	}
	return g.decided(ctx, h, now)
}

// decided answers for a job the guard has a record of: an operator's
// decision, or Hold, making sure the source is tripped.
func (g *Guard) decided(ctx context.Context, h *Held, now time.Time) (Decision, error) {
	switch h.State {
	case StateReleased:
		return Released, nil
	case StateDiscarded, StateCancelled:
		return Discarded, nil
	}
	if err := g.trip(ctx, h.Source, now); err != nil {
		return Undecided, err
	}
	return Hold, nil
}

// store creates the held record of j and returns it; one that exists
// already (a redelivery, or one an operator decided on meanwhile) is left as
// it is and returned.
func (g *Guard) store(ctx context.Context, j Job, now time.Time) (*Held, error) {
	hdr := map[string][]string{}
	for k, vs := range j.Header {
		if len(k) >= 5 && (k[:5] == "Nats-" || k[:5] == "nats-") || k == HeaderGuard || k == job.HeaderJobTime {
			continue
		}
		hdr[k] = append([]string(nil), vs...)
	}
	h := Held{
		JobID: j.ID, Type: j.Type, Source: j.Source, UserID: j.UserID, CorrelationID: j.CorrelationID,
		Body: j.Body, Header: hdr, JobTime: j.Time.UTC(), HeldAt: now.UTC(), State: StateHeld,
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	rev, err := g.kv.Create(ctx, HeldKey(j.Source, j.ID), b)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		old, err := g.get(ctx, HeldKey(j.Source, j.ID))
		if err == nil && old == nil {
			err = errors.New("guard: the held record vanished")
		}
		return old, err
	case err != nil:
		return nil, fmt.Errorf("guard: store the held job: %w", err)
	}
	h.Revision = rev
	return &h, nil
}

// trip marks the source tripped (if it is not) and records a hold; the
// write always changes the window's revision.
func (g *Guard) trip(ctx context.Context, source string, now time.Time) error {
	for i := 0; i < casTries; i++ {
		w, rev, err := g.window(ctx, source)
		if err != nil {
			return err
		}
		if w.TrippedAt.IsZero() {
			w.TrippedAt = now.UTC()
		}
		w.LastHeldAt = now.UTC()
		err = g.putWindow(ctx, w, rev)
		if err == nil {
			return nil
		}
		if !isConflict(err) {
			return fmt.Errorf("guard: trip the source: %w", err)
		}
		if !backoff(ctx, i) {
			return ctx.Err()
		}
	}
	return errBusy
}

// Tripped reports since when a source has been tripped (zero: it is not).
func (g *Guard) Tripped(ctx context.Context, source string) (time.Time, error) {
	w, _, err := g.window(ctx, source)
	if err != nil {
		return time.Time{}, err
	}
	return w.TrippedAt, nil
}

// Admitted reports how many jobs of the source the window holds at now.
func (g *Guard) Admitted(ctx context.Context, source string, now time.Time) (int, error) {
	w, _, err := g.window(ctx, source)
	if err != nil {
		return 0, err
	}
	w.prune(now.Add(-g.cfg.Window))
	return len(w.Admitted), nil
}

func (g *Guard) get(ctx context.Context, key string) (*Held, error) {
	e, err := g.kv.Get(ctx, key)
	if isMissing(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("guard: read %s: %w", key, err)
	}
	return decodeHeld(e)
}

func decodeHeld(e jetstream.KeyValueEntry) (*Held, error) {
	var h Held
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return nil, fmt.Errorf("guard: corrupt held job under %s: %w", e.Key(), err)
	}
	h.Revision = e.Revision()
	return &h, nil
}

func (g *Guard) put(ctx context.Context, h *Held) (uint64, error) {
	b, err := json.Marshal(h)
	if err != nil {
		return 0, err
	}
	return g.kv.Update(ctx, HeldKey(h.Source, h.JobID), b, h.Revision)
}

// Lookup returns the guard's record of a job id, whatever its source, or
// nil when the guard never held it. The job query shows a record in state
// held as the job's state "held".
func (g *Guard) Lookup(ctx context.Context, jobID string) (*Held, error) {
	hs, err := g.List(ctx, Filter{JobID: jobID, AllStates: true})
	if err != nil || len(hs) == 0 {
		return nil, err
	}
	return &hs[0], nil
}

// Ended records that a cancel job ended a held job (the cancel wrote its
// result); the job is no longer held. by is the cancel's job id. A job that
// is not held is left alone.
func (g *Guard) Ended(ctx context.Context, source, jobID, by string, now time.Time) error {
	for i := 0; i < casTries; i++ {
		h, err := g.get(ctx, HeldKey(source, jobID))
		if err != nil || h == nil || h.State != StateHeld {
			return err
		}
		h.State, h.DecidedAt, h.DecidedBy, h.Reason = StateCancelled, now.UTC(), by, "cancelled by job "+by
		_, err = g.put(ctx, h)
		if err == nil {
			return g.clearTrip(ctx, source)
		}
		if !isConflict(err) {
			return fmt.Errorf("guard: end the held job: %w", err)
		}
		if !backoff(ctx, i) {
			return ctx.Err()
		}
	}
	return errBusy
}
