package history

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// Names of the stream and its subjects.
const (
	Stream            = job.HistoryStream
	SubjectPrefix     = job.HistorySubjectPrefix
	unresolvedPrefix  = SubjectPrefix + "unresolved."
	keptPrefix        = SubjectPrefix + "kept."
	DefaultLimit      = 50
	MaxLimit          = 500
	defaultMaxAge     = 400 * 24 * time.Hour
	defaultMaxPerUser = 1000
	maxMaxPerUser     = 10000
)

// Selector names a person as HR knows them; it is a job's "user" echoed.
type Selector struct {
	Email      string `json:"email,omitempty"`
	Username   string `json:"username,omitempty"`
	ExternalID string `json:"external_id,omitempty"`
}

// IsZero reports whether no field is set.
func (s Selector) IsZero() bool { return s == Selector{} }

// key returns the selector's kind and normalised value, or false when it
// names no field. A selector with several identifiers has a kind of its own
// ("email-external_id", the kinds in the order email, username, external_id)
// and its values joined: its unresolved entries are found by the same
// identifiers.
func (s Selector) key() (kind, value string, ok bool) {
	var kinds, values []string
	for _, f := range []struct{ k, v string }{{"email", s.Email}, {"username", s.Username}, {"external_id", s.ExternalID}} {
		if v := strings.TrimSpace(f.v); v != "" {
			if f.k == "email" {
				v = strings.ToLower(v)
			}
			kinds, values = append(kinds, f.k), append(values, v)
		}
	}
	return strings.Join(kinds, "-"), strings.Join(values, "\x00"), len(kinds) > 0
}

// Entry is one result in a person's history: everything a result says except
// its data.
type Entry struct {
	JobID         string    `json:"job_id"`
	Type          string    `json:"type"`
	UserID        int64     `json:"user_id"`
	User          *Selector `json:"user,omitempty"`
	Outcome       string    `json:"outcome"`
	ErrorCode     string    `json:"error_code,omitempty"`
	StartedAt     time.Time `json:"started_at"`
	FinishedAt    time.Time `json:"finished_at"`
	DurationMS    int64     `json:"duration_ms"`
	Attempts      int       `json:"attempts"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	Source        string    `json:"source,omitempty"`
	// CancelledBy and CancelScope say who ended a cancelled job: the cancel
	// job's id and its scope (empty: the operators' bare mfa.jobs.cancel).
	CancelledBy string `json:"cancelled_by,omitempty"`
	CancelScope string `json:"cancel_scope,omitempty"`
}

// EntryFromResult builds an entry from a result message body (the JSON of
// schemas/result.v1.json), leaving its data behind.
func EntryFromResult(body []byte) (Entry, error) {
	var r struct {
		job.Result
		// Data stays raw: only a cancelled result's is read.
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return Entry{}, fmt.Errorf("history: decode result: %w", err)
	}
	if r.JobID == "" || r.Type == "" || r.Outcome == "" {
		return Entry{}, errors.New("history: result lacks job_id, type or outcome")
	}
	e := Entry{
		JobID: r.JobID, Type: string(r.Type), UserID: r.UserID, Outcome: string(r.Outcome), Attempts: r.Attempts,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, DurationMS: r.DurationMS,
		CorrelationID: r.CorrelationID, Source: r.Source,
	}
	if r.Outcome == job.Cancelled && len(r.Data) > 0 {
		var d job.CancelledData
		if json.Unmarshal(r.Data, &d) == nil {
			e.CancelledBy, e.CancelScope = d.CancelledBy, d.CancelScope
		}
	}
	if r.User != nil {
		if u := Selector(*r.User); !u.IsZero() {
			e.User = &u
		}
	}
	if r.Error != nil {
		e.ErrorCode = r.Error.Code
	}
	return e, nil
}

// Config configures the stream. Zero fields take the defaults noted.
type Config struct {
	Replicas int           // 1; 3 in a cluster
	MaxAge   time.Duration // 400 days
	// MaxPerUser is how many routine entries are kept per person, oldest
	// dropped first: 1000 (at least MaxLimit, at most 10000). Kept entries
	// (see Kept) do not count: only MaxAge removes them.
	MaxPerUser      int64
	DuplicateWindow time.Duration // 10m
}

// DefaultConfig is the stream of a single-node deployment.
func DefaultConfig() Config {
	return Config{Replicas: 1, MaxAge: defaultMaxAge, MaxPerUser: defaultMaxPerUser, DuplicateWindow: 10 * time.Minute}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	c.Replicas = cmp.Or(c.Replicas, d.Replicas)
	c.MaxAge = cmp.Or(c.MaxAge, d.MaxAge)
	c.MaxPerUser = cmp.Or(c.MaxPerUser, d.MaxPerUser)
	c.DuplicateWindow = cmp.Or(c.DuplicateWindow, d.DuplicateWindow)
}

// Validate checks the configuration after defaults.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5:
		return fmt.Errorf("history: replicas must be 1, 3 or 5, got %d", c.Replicas)
	case c.MaxAge < 24*time.Hour:
		return fmt.Errorf("history: max age must be at least 24h, got %v", c.MaxAge)
	case c.MaxPerUser < MaxLimit || c.MaxPerUser > maxMaxPerUser:
		return fmt.Errorf("history: entries per person must be between %d and %d, got %d", MaxLimit, maxMaxPerUser, c.MaxPerUser)
	}
	return nil
}

// StreamConfig returns the configuration of MFA_HISTORY.
func (c Config) StreamConfig() jetstream.StreamConfig {
	c.setDefaults()
	return jetstream.StreamConfig{
		Name:              Stream,
		Description:       "Per-person index of MFA job results, without their data",
		Subjects:          []string{SubjectPrefix + ">"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          c.Replicas,
		MaxAge:            c.MaxAge,
		MaxMsgsPerSubject: c.MaxPerUser,
		MaxMsgSize:        16 << 10,
		Discard:           jetstream.DiscardOld,
		Duplicates:        c.DuplicateWindow,
		AllowDirect:       true,
	}
}

// Provision creates MFA_HISTORY or brings its configuration up to date; it
// is safe to call from every replica at every start.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg.StreamConfig()); err != nil {
		return fmt.Errorf("history: provision stream %s: %w", Stream, err)
	}
	return nil
}

// Store appends to and reads from MFA_HISTORY.
type Store struct {
	js jetstream.JetStream
}

// New returns a store on js; the stream must have been provisioned.
func New(js jetstream.JetStream) *Store { return &Store{js: js} }

// UserSubject is the subject of one person's entries.
func UserSubject(userID int64) string {
	return SubjectPrefix + strconv.FormatInt(userID, 10)
}

// unresolvedSubject is the subject of entries whose user was not resolved,
// keyed by a hash of the selector so no email reaches a subject.
func unresolvedSubject(sel Selector) (string, bool) {
	kind, value, ok := sel.key()
	if !ok {
		return "", false
	}
	sum := sha256.Sum256([]byte(value))
	return unresolvedPrefix + kind + "." + hex.EncodeToString(sum[:]), true
}

// Kept reports whether e is kept for the stream's whole max age whatever is
// appended after it: the result of an offboard or a remove that was not
// rejected or expired (it reached OneLogin, or was cancelled by someone
// holding the authority to), and a succeeded enroll or activate (a factor
// added). Every other entry is routine: the newest MaxPerUser of a person are
// kept.
func Kept(e Entry) bool {
	switch e.Type {
	case "offboard", "remove":
		return e.Outcome != "rejected" && e.Outcome != "expired"
	case "enroll", "activate":
		return e.Outcome == "succeeded"
	}
	return false
}

// keptSubject is the subject of one kept entry whose person's routine
// subject is subj: a subject of its own per job, so that the per-subject
// limit never removes it.
func keptSubject(subj, jobID string) string {
	sum := sha256.Sum256([]byte(jobID))
	return keptPrefix + strings.TrimPrefix(subj, SubjectPrefix) + "." + hex.EncodeToString(sum[:16])
}

// keptFilter matches every kept entry of the person whose routine subject is
// subj.
func keptFilter(subj string) string {
	return keptPrefix + strings.TrimPrefix(subj, SubjectPrefix) + ".*"
}

// Append records e. msgID deduplicates within the stream's duplicate window;
// pass the result's own Nats-Msg-Id ("<job id>:result", or its replay form).
// An entry with neither a user id nor a selector that names a field
// belongs to nobody's history (for example a job rejected before its user
// could be read) and is not stored. A kept entry (see Kept) goes to a
// subject of its own, every other entry to the person's routine subject.
func (s *Store) Append(ctx context.Context, e Entry, msgID string) error {
	return s.AppendAll(ctx, []Pending{{Entry: e, MsgID: msgID}})[0]
}

// Pending is one entry to append with AppendAll, and its message id.
type Pending struct {
	Entry Entry
	MsgID string
}

// AppendAll appends every entry as Append does, sending them all before
// waiting for any acknowledgement, and says for each whether it is stored
// (nil) or why not. Sent together, the entries share the connection's
// writes and the server's replies: the index pays one round trip for a
// batch, not one per entry.
func (s *Store) AppendAll(ctx context.Context, ps []Pending) []error {
	errs := make([]error, len(ps))
	futures := make([]jetstream.PubAckFuture, len(ps))
	for i, p := range ps {
		m, err := s.entryMsg(p.Entry, p.MsgID)
		if err != nil || m == nil {
			errs[i] = err
			continue
		}
		if futures[i], err = s.js.PublishMsgAsync(m); err != nil {
			errs[i] = fmt.Errorf("history: append job %s: %w", p.Entry.JobID, err)
		}
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = fmt.Errorf("history: append job %s: %w", ps[i].Entry.JobID, err)
		case <-ctx.Done():
			errs[i] = fmt.Errorf("history: append job %s: %w", ps[i].Entry.JobID, ctx.Err())
		}
	}
	return errs
}

// entryMsg is the message that appends e, or nil when e names nobody the
// history keeps (no user id, no usable selector).
func (s *Store) entryMsg(e Entry, msgID string) (*nats.Msg, error) {
	var subj string
	switch {
	case e.UserID > 0:
		subj = UserSubject(e.UserID)
	case e.User != nil:
		var ok bool
		if subj, ok = unresolvedSubject(*e.User); !ok {
			return nil, nil
		}
	default:
		return nil, nil
	}
	if Kept(e) {
		subj = keptSubject(subj, e.JobID)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("history: encode entry of job %s: %w", e.JobID, err)
	}
	m := nats.NewMsg(subj)
	m.Data = b
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	return m, nil
}

// Query returns up to limit entries of one person, newest first. limit <= 0
// means DefaultLimit; more than MaxLimit is cut to MaxLimit.
func (s *Store) Query(ctx context.Context, userID int64, limit int) ([]Entry, error) {
	if userID <= 0 {
		return nil, fmt.Errorf("history: user id must be positive, got %d", userID)
	}
	return s.read(ctx, UserSubject(userID), clampLimit(limit))
}

// QuerySelector returns up to limit entries of jobs that named the person by
// sel and whose user could not be resolved, newest first.
func (s *Store) QuerySelector(ctx context.Context, sel Selector, limit int) ([]Entry, error) {
	subj, ok := unresolvedSubject(sel)
	if !ok {
		return nil, errors.New("history: a selector names at least one of email, username, external_id")
	}
	return s.read(ctx, subj, clampLimit(limit))
}

func clampLimit(limit int) int {
	if limit <= 0 {
		return DefaultLimit
	}
	return min(limit, MaxLimit)
}

// read fetches every entry of one person (the routine entries on subj, at
// most MaxPerUser by the stream's limit, and the kept ones on their own
// subjects) through two short-lived consumers, one per kind, read at once,
// and chooses limit of them (see choose). It holds at most a few times limit
// entries, whatever the person's history holds. (One consumer with both
// filters would do, but the server walks a multi-filter consumer's messages
// several times slower than two consumers of one filter each.)
func (s *Store) read(ctx context.Context, subj string, limit int) ([]Entry, error) {
	var (
		mu      sync.Mutex
		kept    = newTop(limit)
		routine = newTop(limit)
		seen    = map[string]bool{}
	)
	add := func(e Entry, seq uint64, _ string) {
		// A result published again for a duplicate job id (same job, same
		// finish time) appears once.
		k := e.JobID + "\x00" + e.FinishedAt.UTC().Format(time.RFC3339Nano)
		mu.Lock()
		defer mu.Unlock()
		if seen[k] {
			return
		}
		seen[k] = true
		// Entries appended before kept entries had subjects of their own
		// are ranked by what they are, not where they are.
		if Kept(e) {
			kept.add(e, seq)
		} else {
			routine.add(e, seq)
		}
	}
	errs := make(chan error, 1)
	go func() { errs <- s.readFilter(ctx, keptFilter(subj), add) }()
	err := s.readFilter(ctx, subj, add)
	if kerr := <-errs; err == nil {
		err = kerr
	}
	if err != nil {
		return nil, err
	}
	return choose(kept.newest(), routine.newest(), limit), nil
}

// readFilter passes every entry on the subjects filter matches to add, with
// its stream sequence and subject, in stream order.
func (s *Store) readFilter(ctx context.Context, filter string, add func(Entry, uint64, string)) error {
	return s.readFilterFrom(ctx, filter, 1, add)
}

// readFilterFrom is readFilter from stream sequence from on.
func (s *Store) readFilterFrom(ctx context.Context, filter string, from uint64, add func(Entry, uint64, string)) error {
	cons, err := s.js.CreateConsumer(ctx, Stream, jetstream.ConsumerConfig{
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       max(from, 1),
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: 30 * time.Second,
		Replicas:          1,
	})
	if err != nil {
		return fmt.Errorf("history: read %s: %w", Stream, err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		// The server removes it after InactiveThreshold anyway.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = s.js.DeleteConsumer(dctx, Stream, name)
	}()
	pending := cons.CachedInfo().NumPending
	for got := uint64(0); got < pending; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("history: read %s: %w", Stream, err)
		}
		wait := 5 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			wait = max(time.Until(dl), time.Millisecond)
		}
		batch, err := cons.Fetch(int(min(pending-got, 1000)), jetstream.FetchMaxWait(wait))
		if err != nil {
			return fmt.Errorf("history: read %s: %w", Stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var e Entry
			if json.Unmarshal(m.Data(), &e) != nil {
				continue // not written by Append; nothing to show
			}
			var seq uint64
			if md, err := m.Metadata(); err == nil {
				seq = md.Sequence.Stream
			}
			add(e, seq, m.Subject())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("history: read %s: %w", Stream, err)
		}
		if n == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("history: read %s: %w", Stream, err)
			}
			return fmt.Errorf("history: read %s: %d of %d entries arrived", Stream, got, pending)
		}
		got += uint64(n)
	}
	return nil
}

// top keeps the newest limit entries added to it: newest by finish time,
// and of two that finished at the same time the one appended later.
type top struct {
	limit int
	es    []ranked
}

type ranked struct {
	e   Entry
	seq uint64 // stream sequence
}

func newTop(limit int) *top { return &top{limit: limit} }

func (t *top) add(e Entry, seq uint64) {
	t.es = append(t.es, ranked{e, seq})
	if len(t.es) >= 2*t.limit+64 {
		t.trim()
	}
}

func (t *top) trim() {
	slices.SortFunc(t.es, func(x, y ranked) int {
		if c := y.e.FinishedAt.Compare(x.e.FinishedAt); c != 0 {
			return c
		}
		return cmp.Compare(y.seq, x.seq)
	})
	if len(t.es) > t.limit {
		t.es = t.es[:t.limit]
	}
}

// newest returns the kept entries, newest first.
func (t *top) newest() []Entry {
	t.trim()
	out := make([]Entry, len(t.es))
	for i, r := range t.es {
		out[i] = r.e
	}
	return out
}

// choose returns at most limit entries of a person, newest first, from the
// newest kept entries and the newest routine ones (each newest first, each
// at most limit long). It is the newest limit of them all, except that
// routine entries never take more than half of the places (rounded down)
// from kept ones: a burst of rejected jobs cannot hide an offboard from a
// query, however recent the burst.
func choose(kept, routine []Entry, limit int) []Entry {
	out := merge(kept, routine, limit)
	nKept := 0
	for _, e := range out {
		if Kept(e) {
			nKept++
		}
	}
	need := min(len(kept), (limit+1)/2)
	if nKept >= need {
		return out
	}
	return merge(kept[:need], routine[:min(len(routine), limit-need)], limit)
}

// combine returns limit entries of a and b (each newest first) as choose
// picks them.
func combine(a, b []Entry, limit int) []Entry {
	var kept, routine []Entry
	for _, e := range merge(a, b, len(a)+len(b)) {
		if Kept(e) {
			kept = append(kept, e)
		} else {
			routine = append(routine, e)
		}
	}
	return choose(kept[:min(len(kept), limit)], routine[:min(len(routine), limit)], limit)
}

// merge returns the newest limit entries of a and b, newest first.
func merge(a, b []Entry, limit int) []Entry {
	out := append(slices.Clone(a), b...)
	slices.SortStableFunc(out, newestFirst)
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

func newestFirst(x, y Entry) int { return y.FinishedAt.Compare(x.FinishedAt) }
