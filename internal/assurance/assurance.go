// Package assurance re-verifies leavers: every leaver offboarded in the
// last WORKER_ASSURANCE_DAYS has their enrolled factors read again once
// every WORKER_ASSURANCE_INTERVAL, to find a factor re-enrolled after the
// offboard (by a help desk, or by the person through self-service).
//
// # Spread, shared, once
//
// Time is cut into slots of one interval. Each leaver is due at a fixed
// offset into every slot (a hash of its registry key), so the checks of
// many leavers spread evenly over the interval instead of bunching at its
// start. Before reading, a replica claims the leaver for the slot with a
// compare-and-set on its record (leaver.Store.Claim): whichever replica
// wins checks it, the others skip it, so each leaver is read once per
// interval however many replicas run. A claim whose read could not be made
// (OneLogin busy or failing) is handed back, so another tick or replica
// tries again within the slot.
//
// # Lowest priority, bounded share
//
// Reads go through the OneLogin client's pacer at background priority,
// the lowest: every waiting job and query is granted first, and while
// OneLogin's remaining budget is below the query reserve the read is
// refused at once (onelogin.ErrBusy) and the checker waits for the next
// window. On top of
// that the checker spends at most WORKER_ASSURANCE_BUDGET of the limit of
// each rate-limit window (as OneLogin's headers report it), per replica.
//
// # Drift
//
// A factor found again is drift: the record is opened with reason drift,
// mfa_assurance_drift_total counts it, an event goes out on
// mfa.assurance.drift (device ids and factor types, never phone numbers),
// and with WORKER_ASSURANCE_ACTION=offboard a new offboard job is published
// with the id assurance:<user id>:<slot>, the same on every replica, so
// JetStream's duplicate window and the ledger make it run once. Its result
// closes the record again (verified).
package assurance

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
)

// Actions on drift.
const (
	ActionAlert    = "alert"
	ActionOffboard = "offboard"
)

// DriftSubject is where drift events go.
const DriftSubject = job.AssuranceDriftSubject

// JobSource is the source of the offboards the checker publishes.
const JobSource = job.AssuranceSource

// Config configures re-verification. Zero fields take the defaults noted.
type Config struct {
	Days     int           // WORKER_ASSURANCE_DAYS: 30
	Interval time.Duration // WORKER_ASSURANCE_INTERVAL: 24h
	Budget   float64       // WORKER_ASSURANCE_BUDGET: 0.05 of each window's limit
	Action   string        // WORKER_ASSURANCE_ACTION: alert (or offboard)
	// Tick is how often due leavers are looked for: Interval/1000, between
	// 100ms and 1m.
	Tick time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// DefaultConfig is re-verification as shipped. Tick and Now are left to
// setDefaults: the tick follows the interval.
func DefaultConfig() Config {
	return Config{Days: 30, Interval: 24 * time.Hour, Budget: 0.05, Action: ActionAlert}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	c.Days = cmp.Or(c.Days, d.Days)
	c.Interval = cmp.Or(c.Interval, d.Interval)
	c.Budget = cmp.Or(c.Budget, d.Budget)
	c.Action = cmp.Or(c.Action, d.Action)
	c.Tick = cmp.Or(c.Tick, min(max(c.Interval/1000, 100*time.Millisecond), time.Minute))
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks the configuration after defaults; each message names the
// setting.
func (c Config) Validate() error {
	c.setDefaults()
	var p config.Problems
	if c.Days < 1 || c.Days > 400 {
		p.Add("WORKER_ASSURANCE_DAYS", "must be between 1 and 400, got %d", c.Days)
	}
	if c.Interval < time.Second {
		p.Add("WORKER_ASSURANCE_INTERVAL", "must be at least 1s, got %v", c.Interval)
	}
	if c.Budget <= 0 || c.Budget > 0.5 {
		p.Add("WORKER_ASSURANCE_BUDGET", "must be a share of OneLogin's limit above 0 and at most 0.5, got %g", c.Budget)
	}
	if c.Action != ActionAlert && c.Action != ActionOffboard {
		p.Add("WORKER_ASSURANCE_ACTION", "must be alert or offboard, got %q", c.Action)
	}
	return p.Err()
}

// Factors reads a user's enrolled factors; *onelogin.Client implements it.
type Factors interface {
	EnrolledFactors(ctx context.Context, userID int64) ([]onelogin.Device, *onelogin.Response, error)
}

// Metrics count checks and drift; *metrics.Leavers implements it.
type Metrics interface {
	Drift()
	Check(result string)
}

// Checker re-verifies leavers.
type Checker struct {
	cfg   Config
	store *leaver.Store
	view  *leaver.View
	ol    Factors
	js    jetstream.JetStream
	nc    *nats.Conn
	m     metricsOrNil
	log   *slog.Logger

	mu     sync.Mutex
	budget budget
}

// New returns a checker; m may be nil.
func New(cfg Config, store *leaver.Store, view *leaver.View, ol Factors, js jetstream.JetStream, m Metrics, log *slog.Logger) (*Checker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Checker{cfg: cfg, store: store, view: view, ol: ol, js: js, nc: js.Conn(), m: metricsOrNil{m}, log: log, budget: budget{share: cfg.Budget}}, nil
}

// Slot returns the interval slot t falls in.
func (c *Checker) Slot(t time.Time) int64 { return t.UnixNano() / int64(c.cfg.Interval) }

// dueAt is when key is due in slot.
func (c *Checker) dueAt(key string, slot int64) time.Time {
	h := fnv.New64a()
	h.Write([]byte(key))
	off := time.Duration(h.Sum64() % uint64(c.cfg.Interval))
	return time.Unix(0, slot*int64(c.cfg.Interval)).Add(off)
}

// Run checks due leavers until ctx ends.
func (c *Checker) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-c.view.Ready():
	}
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	for {
		c.Pass(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type candidate struct {
	key    string
	userID int64
	due    time.Time
}

// due lists the leavers due now and not yet checked in this slot.
func (c *Checker) due(now time.Time) ([]candidate, int64) {
	slot := c.Slot(now)
	horizon := now.Add(-time.Duration(c.cfg.Days) * 24 * time.Hour)
	var out []candidate
	c.view.Each(func(s leaver.Summary) {
		if (s.State != leaver.Offboarded && s.State != leaver.Verified) || s.UserID <= 0 || s.CheckSlot >= slot {
			return
		}
		if s.OffboardedAt.IsZero() || s.OffboardedAt.Before(horizon) {
			return
		}
		d := c.dueAt(s.Key, slot)
		// An offboard finished after its due time this slot was just
		// verified by the offboard itself: the next slot checks it.
		if d.After(now) || s.OffboardedAt.After(d) {
			return
		}
		out = append(out, candidate{key: s.Key, userID: s.UserID, due: d})
	})
	slices.SortFunc(out, func(a, b candidate) int { return a.due.Compare(b.due) })
	return out, slot
}

// workers is how many leavers one replica checks at once: a check is two
// KV round trips and one OneLogin read, so a few in parallel keep the
// share of the budget, not the round trips, the limit.
const workers = 4

// Pass checks every leaver due now, as far as the budget allows, and
// returns how many it checked.
func (c *Checker) Pass(ctx context.Context) int {
	cands, slot := c.due(c.cfg.Now())
	if len(cands) == 0 {
		return 0
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var checked atomic.Int64
	one := func(cd candidate) {
		switch err := c.check(ctx, cd, slot); {
		case errors.Is(err, errTaken):
			// Another replica checks this one in this slot.
		case errors.Is(err, onelogin.ErrBusy):
			c.m.check("deferred")
			c.pause(c.cfg.Now())
			stop()
		case err != nil && ctx.Err() != nil:
		case err != nil:
			c.m.check("error")
			c.log.Warn("re-verification failed; it will be tried again", "key", cd.key, "err", err)
		default:
			checked.Add(1)
		}
	}
	// Until an answer told OneLogin's limit, one read at a time: the
	// first one learns it.
	for len(cands) > 0 && !c.limitKnown() && ctx.Err() == nil {
		if !c.take(c.cfg.Now()) {
			c.m.check("deferred")
			return int(checked.Load())
		}
		one(cands[0])
		cands = cands[1:]
	}
	next := make(chan candidate)
	var wg sync.WaitGroup
	for range min(workers, len(cands)) {
		wg.Go(func() {
			for cd := range next {
				one(cd)
			}
		})
	}
feed:
	for _, cd := range cands {
		if ctx.Err() != nil {
			break
		}
		if !c.take(c.cfg.Now()) {
			c.m.check("deferred")
			break // the share of this window is spent
		}
		select {
		case next <- cd:
		case <-ctx.Done():
			c.refund()
			break feed
		}
	}
	close(next)
	wg.Wait()
	return int(checked.Load())
}

func (c *Checker) limitKnown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.budget.limit > 0
}

func (c *Checker) refund() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.budget.refund()
}

func (c *Checker) take(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.budget.take(now)
}

func (c *Checker) pause(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.budget.pause(now)
}

func (c *Checker) observe(r onelogin.RateLimit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.budget.observe(r)
}

// Spent returns the calls made in the current rate-limit window and the
// share's allowance for it (0 while the limit is unknown).
func (c *Checker) Spent() (spent, allowance int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.budget.spent, c.budget.allowance()
}

// check claims, reads and records one leaver.
func (c *Checker) check(ctx context.Context, cd candidate, slot int64) error {
	prev, ok, err := c.store.Claim(ctx, cd.key, slot)
	if err != nil || !ok {
		c.refund()
		if err == nil {
			err = errTaken
		}
		return err
	}
	rctx, cancel := context.WithTimeout(onelogin.WithPriority(ctx, onelogin.PriorityBackground), 30*time.Second)
	devices, resp, err := c.ol.EnrolledFactors(rctx, cd.userID)
	cancel()
	if resp != nil {
		c.observe(resp.Rate)
	}
	var rle *onelogin.RateLimitError
	if errors.As(err, &rle) {
		c.observe(rle.Rate)
		c.pause(c.cfg.Now())
	}
	if err != nil && onelogin.IsUserNotFound(err) {
		devices, err = nil, nil // the user is gone, and their factors with them
	}
	if err != nil {
		if uerr := c.store.Unclaim(context.WithoutCancel(ctx), cd.key, slot, prev); uerr != nil {
			c.log.Warn("handing back a re-verification claim failed; the leaver waits for the next interval", "key", cd.key, "err", uerr)
		}
		if errors.Is(err, onelogin.ErrBusy) {
			return err
		}
		return fmt.Errorf("read enrolled factors: %w", err)
	}
	if len(devices) == 0 {
		c.m.check("clean") // the claim noted the check
		return nil
	}
	return c.drift(ctx, cd, slot, devices)
}

// errTaken: the leaver was claimed for the slot elsewhere, or is no
// longer offboarded.
var errTaken = errors.New("claimed elsewhere")

// DriftEvent is the body of an event on mfa.assurance.drift.
type DriftEvent struct {
	Key          string    `json:"key"`
	UserID       int64     `json:"user_id"`
	DeviceIDs    []int64   `json:"device_ids"`
	FactorTypes  []string  `json:"factor_types"`
	FoundAt      time.Time `json:"found_at"`
	OffboardedAt time.Time `json:"offboarded_at,omitzero"`
	Action       string    `json:"action"`
	// JobID is the offboard published to remove the factors again
	// (action offboard).
	JobID string `json:"job_id,omitempty"`
}

// JobID is the id of the offboard that removes the drift found for
// userID in slot: the same on every replica.
func JobID(userID int64, slot int64) string {
	return "assurance:" + strconv.FormatInt(userID, 10) + ":" + strconv.FormatInt(slot, 10)
}

func (c *Checker) drift(ctx context.Context, cd candidate, slot int64, devices []onelogin.Device) error {
	ev := DriftEvent{Key: cd.key, UserID: cd.userID, Action: c.cfg.Action}
	for _, d := range devices {
		ev.DeviceIDs = append(ev.DeviceIDs, int64(d.ID))
		t := d.AuthFactorName
		if t == "" {
			t = d.TypeDisplayName
		}
		if t != "" && !slices.Contains(ev.FactorTypes, t) {
			ev.FactorTypes = append(ev.FactorTypes, t)
		}
	}
	rec, err := c.store.Drift(ctx, cd.key, ev.FactorTypes)
	if err != nil {
		return fmt.Errorf("record drift: %w", err)
	}
	c.m.check("drift")
	c.m.drift()
	ev.FoundAt, ev.OffboardedAt = rec.LastDriftAt, rec.OffboardedAt
	if c.cfg.Action == ActionOffboard {
		ev.JobID = JobID(cd.userID, slot)
		if err := c.offboard(ctx, ev); err != nil {
			return err
		}
	}
	c.log.Warn("a leaver has factors again after the offboard", "key", cd.key, "factors", len(devices), "action", c.cfg.Action, "job_id", ev.JobID)
	return c.publishDrift(ctx, ev, slot)
}

func (c *Checker) offboard(ctx context.Context, ev DriftEvent) error {
	body, _ := json.Marshal(map[string]any{
		"id": ev.JobID, "type": "offboard", "user_id": ev.UserID, "source": JobSource,
		"requested_at": ev.FoundAt.UTC().Format(time.RFC3339Nano),
	})
	m := nats.NewMsg(job.SubjectPrefix + "offboard")
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, ev.JobID)
	if _, err := c.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish offboard %s: %w", ev.JobID, err)
	}
	return nil
}

// publishDrift sends the event to JetStream when a stream takes
// mfa.assurance.>, else on core NATS. The record keeps the drift either way.
func (c *Checker) publishDrift(ctx context.Context, ev DriftEvent, slot int64) error {
	b, _ := json.Marshal(ev)
	m := nats.NewMsg(DriftSubject)
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, "drift:"+ev.Key+":"+strconv.FormatInt(slot, 10))
	_, err := leaver.PublishEvent(ctx, c.js, m)
	return err
}

type metricsOrNil struct{ Metrics }

func (m metricsOrNil) drift() {
	if m.Metrics != nil {
		m.Metrics.Drift()
	}
}

func (m metricsOrNil) check(r string) {
	if m.Metrics != nil {
		m.Metrics.Check(r)
	}
}
