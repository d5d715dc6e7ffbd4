package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/pause"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Runner consumes both lanes of MFA_JOBS and runs the jobs.
//
// A message is held from the moment it is fetched (its heartbeat keeps it
// alive with InProgress) but takes an execution slot only when its job can
// run: after its turn among the same user's jobs in this replica (the keyed
// queue) and after the user's lock in MFA_LOCKS. So one busy person cannot
// occupy the slots that everyone else's jobs need. What a replica holds is
// bounded: per lane by heldPerLane, per user by Config.MaxPerUser (more of
// one user's messages are given back with a delay).
type Runner struct {
	cfg    Config
	log    *slog.Logger
	objs   *topology.Objects
	m      *metrics.Metrics
	x      *executor
	sem    *prioritySem
	order  *keyedQueue
	gate   *credGate
	tokens tokenProver
	wg     sync.WaitGroup

	heldMu sync.Mutex
	byUser map[int64]int
}

// heldPerLane is how many messages one lane may hold per execution slot,
// running or waiting for their turn.
const heldPerLane = 2

// NewRunner builds a runner over provisioned objects.
func NewRunner(cfg Config, log *slog.Logger, js jetstream.JetStream, objs *topology.Objects, ol *onelogin.Client, m *metrics.Metrics) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if cfg.Owner == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		cfg.Owner = "worker-" + hex.EncodeToString(b)
	}
	parser, err := job.NewParser(cfg.MaxJobBytes, cfg.AllowPlainTokens)
	if err != nil {
		return nil, err
	}
	led := ledger.New(objs.Ledger)
	r := &Runner{cfg: cfg, log: log, objs: objs, m: m, sem: newPrioritySem(cfg.Concurrency), order: newKeyedQueue(), byUser: map[int64]int{}}
	r.gate = newCredGate(log, m)
	if ol != nil {
		r.tokens = ol
	}
	r.x = &executor{
		creds: r.gate,
		cfg:   &r.cfg, budgets: newBudgets(&r.cfg), log: log, pub: js, m: m, owner: cfg.Owner, parser: parser,
		policy: newPolicy(&r.cfg),
		ledger: led,
		grants: led,
		locks:  ledger.NewLocks(objs.Locks, cfg.Owner, cfg.Lease),
		finder: ol,
		users:  newUserCache(cfg.UserCacheTTL, defaultUserCacheSize),
		h:      &handlers{ol: ol, factors: newFactorCache(cfg.FactorCacheTTL)},
	}
	if objs.People != nil {
		r.x.people = ledger.NewPeople(objs.People)
	}
	if objs.Jobs != nil {
		r.x.jobs = objs.Jobs
	}
	return r, nil
}

// UseGuard puts the blast-radius guard in the job path: offboards and
// removes past its limit are held (package guard). Call it before Run;
// without it every job runs.
func (r *Runner) UseGuard(g *guard.Guard) {
	if g != nil {
		r.x.blast = g
	}
}

// UseLeavers lets the job path tell the leaver registry when an offboard
// is scheduled, held or starts running (package leaver). Call it before
// Run.
func (r *Runner) UseLeavers(s *leaver.Store) {
	if s != nil {
		r.x.leavers = s
	}
}

// Concurrency is how many jobs run at once in this replica.
func (r *Runner) Concurrency() int { return r.cfg.Concurrency }

// Credentials reports whether the runner takes jobs: false (with the cause,
// which never holds a secret) until a OneLogin token is obtained, and while
// OneLogin refuses the worker's own credentials.
func (r *Runner) Credentials() (ok bool, cause string) { return r.gate.ready() }

type lane struct {
	name string
	cons jetstream.Consumer
	prio onelogin.Priority
}

// Run consumes until ctx ends, then shuts down in two phases: it stops
// fetching and lets running jobs finish for ShutdownGrace; jobs still
// running then are cancelled, which makes them nak themselves. Run returns
// when every job goroutine has ended.
func (r *Runner) Run(ctx context.Context) error {
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	lanes := []lane{
		{name: topology.Consumer(job.LaneUrgent), cons: r.objs.Urgent, prio: onelogin.PriorityUrgent},
		{name: topology.Consumer(job.LaneNormal), cons: r.objs.Normal, prio: onelogin.PriorityNormal},
	}
	var fetchers sync.WaitGroup
	for _, l := range lanes {
		fetchers.Add(1)
		go func() {
			defer fetchers.Done()
			r.fetch(ctx, work, l)
		}()
	}
	if r.tokens != nil {
		fetchers.Add(1)
		go func() {
			defer fetchers.Done()
			r.gate.run(ctx, r.tokens, r.cfg.CredentialsRetryMin, r.cfg.CredentialsRetryMax)
		}()
	} else {
		r.gate.set(true, true, "")
	}
	fetchers.Add(1)
	go func() {
		defer fetchers.Done()
		r.watchPending(ctx, lanes)
	}()

	<-ctx.Done()
	fetchers.Wait()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(r.cfg.ShutdownGrace):
		r.log.Warn("shutdown grace over; cancelling running jobs", "grace", r.cfg.ShutdownGrace.String())
		cancelWork()
		<-done
	}
	return nil
}

// fetch takes messages from one lane while the credentials gate is open:
// the gate's closing drains the lane's pull (messages already buffered are
// given back with a delay), and its opening starts a new one.
func (r *Runner) fetch(ctx, work context.Context, l lane) {
	held := make(chan struct{}, heldPerLane*r.cfg.Concurrency)
	for r.gate.wait(ctx) {
		it, err := l.cons.Messages(
			// A buffer close to the concurrency: a message waiting in it
			// has its ack timer running and nobody sending InProgress for
			// it, so it holds no more than the slots can start soon; a
			// smaller one makes the client ask again every few messages,
			// a pull request (and its reply) for every two jobs at a
			// quarter of the concurrency.
			jetstream.PullMaxMessages(max(1, r.cfg.Concurrency)),
			jetstream.PullExpiry(5*time.Second),
		)
		if err != nil {
			r.log.Warn("consuming jobs failed; retrying", "consumer", l.name, "err", err)
			if !pause.For(ctx, time.Second) {
				return
			}
			continue
		}
		stop := context.AfterFunc(ctx, it.Stop)
		undrain := r.gate.onClose(it.Drain)
		if open, _ := r.gate.state(); !open {
			it.Drain() // closed before the hook was in place
		}
		r.take(ctx, work, l, it, held)
		undrain()
		stop()
		it.Stop()
	}
}

// take runs one pull until it ends: it takes a message when the lane holds
// fewer than its bound, starts its heartbeat, and hands it to the user's
// queue, so that one user's jobs run in arrival order; the job takes an
// execution slot only when it can run (executor.process).
func (r *Runner) take(ctx, work context.Context, l lane, it jetstream.MessagesContext, held chan struct{}) {
	for ctx.Err() == nil {
		select {
		case held <- struct{}{}:
		case <-ctx.Done():
			return
		}
		msg, err := it.Next()
		if err != nil {
			<-held
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			r.log.Warn("fetching jobs failed; retrying", "consumer", l.name, "err", err)
			if !pause.For(ctx, time.Second) {
				return
			}
			continue
		}
		t := r.x.newTask(msg)
		r.x.heartbeat(t)
		if open, _ := r.gate.state(); !open {
			// Buffered before the gate closed: back to the stream, to be
			// run once a token is obtained; the pull ends once its buffer
			// is empty, so nothing more is fetched meanwhile.
			it.Drain()
			r.x.settle(ctx, t, ending{what: gated})
			<-held
			continue
		}
		key := t.userKey()
		if n, ok := r.admit(key, t.attempts); !ok {
			// This user holds enough of this replica already (never on a
			// job's last two deliveries, so that being busy never fails
			// a job): given back with a delay that grows with their
			// backlog.
			r.x.settle(ctx, t, ending{what: busy, held: n})
			<-held
			continue
		}
		r.wg.Add(1)
		r.order.submit(key, func() {
			defer r.wg.Done()
			defer func() { <-held }()
			defer r.leave(key)
			r.x.process(work, t, slot{sem: r.sem, prio: l.prio, stop: ctx})
		})
	}
}

// admit counts a message of user key as held, unless the user holds
// MaxPerUser already and the message has deliveries to spare; n is what
// the user holds.
func (r *Runner) admit(key int64, attempts int) (n int, ok bool) {
	if key == 0 {
		return 0, true
	}
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	n = r.byUser[key]
	if n >= r.cfg.MaxPerUser && attempts < r.cfg.MaxDeliver-1 {
		return n, false
	}
	r.byUser[key] = n + 1
	return n + 1, true
}

func (r *Runner) leave(key int64) {
	if key == 0 {
		return
	}
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	if r.byUser[key]--; r.byUser[key] <= 0 {
		delete(r.byUser, key)
	}
}

// slot is an execution slot to take once a job can run. A job still
// waiting for it when the worker is told to stop (stop ends) never starts.
type slot struct {
	sem  *prioritySem
	prio onelogin.Priority
	stop context.Context
	held bool
}

func (s *slot) acquire(ctx context.Context) error {
	if s.sem == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer context.AfterFunc(s.stop, cancel)()
	defer cancel()
	if err := s.sem.acquire(ctx, s.prio); err != nil {
		return err
	}
	s.held = true
	return nil
}

// release gives the slot back if it is held.
func (s *slot) release() {
	if s.held {
		s.held = false
		s.sem.release()
	}
}

// watchPending refreshes the backlog gauge from consumer info, and the
// DLQ usage gauge from MFA_DLQ's state and limits.
func (r *Runner) watchPending(ctx context.Context, lanes []lane) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		for _, l := range lanes {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := l.cons.Info(ictx)
			cancel()
			if err == nil {
				r.m.SetPending(l.name, info.NumPending)
			}
		}
		// Jobs waiting for their not_before: the counting consumers'
		// backlog, kept by the server across restarts.
		for t, c := range r.objs.Scheduled {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := c.Info(ictx)
			cancel()
			if err == nil {
				r.m.SetScheduled(string(t), int(info.NumPending))
			}
		}
		if r.objs.DLQ != nil {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := r.objs.DLQ.Info(ictx)
			cancel()
			if err == nil {
				r.m.SetDLQUsage(DLQUsage(info))
			}
		}
		if r.objs.Jobs != nil {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := r.objs.Jobs.Info(ictx)
			cancel()
			if err == nil {
				ratio := Usage(info.State, r.objs.JobsMaxBytes, r.objs.JobsMaxMsgs)
				r.m.SetJobsStreamUsage(ratio)
				r.x.jobsFull.Store(ratio >= 1)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// DLQUsage is how full a stream is against its limits: the larger of
// bytes/MaxBytes and messages/MaxMsgs (a limit of 0 or less is none).
func DLQUsage(info *jetstream.StreamInfo) float64 {
	return Usage(info.State, info.Config.MaxBytes, info.Config.MaxMsgs)
}

// Usage is how full a stream's state is against maxBytes and maxMsgs: the
// larger of the two ratios, at most 1 (a limit of 0 or less is none).
func Usage(st jetstream.StreamState, maxBytes, maxMsgs int64) float64 {
	ratio := 0.0
	if maxBytes > 0 {
		ratio = max(ratio, float64(st.Bytes)/float64(maxBytes))
	}
	if maxMsgs > 0 {
		ratio = max(ratio, float64(st.Msgs)/float64(maxMsgs))
	}
	return min(ratio, 1)
}

// prioritySem is a counting semaphore that serves urgent waiters first.
type prioritySem struct {
	mu      sync.Mutex
	free    int
	waiters [onelogin.PriorityUrgent + 1][]chan struct{} // by onelogin.Priority
}

func newPrioritySem(n int) *prioritySem { return &prioritySem{free: n} }

func (s *prioritySem) acquire(ctx context.Context, prio onelogin.Priority) error {
	s.mu.Lock()
	if s.free > 0 && len(s.waiters[onelogin.PriorityUrgent]) == 0 && (prio == onelogin.PriorityUrgent || len(s.waiters[onelogin.PriorityNormal]) == 0) {
		s.free--
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	s.waiters[prio] = append(s.waiters[prio], ch)
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		select {
		case <-ch:
			s.free++ // granted meanwhile: give it back
			s.grant()
		default:
			q := s.waiters[prio]
			for i, w := range q {
				if w == ch {
					s.waiters[prio] = append(q[:i:i], q[i+1:]...)
					break
				}
			}
		}
		return ctx.Err()
	}
}

func (s *prioritySem) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free++
	s.grant()
}

func (s *prioritySem) grant() {
	for s.free > 0 {
		var ch chan struct{}
		for _, p := range []onelogin.Priority{onelogin.PriorityUrgent, onelogin.PriorityNormal} {
			if len(s.waiters[p]) > 0 {
				ch = s.waiters[p][0]
				s.waiters[p] = s.waiters[p][1:]
				break
			}
		}
		if ch == nil {
			return
		}
		s.free--
		close(ch)
	}
}

// keyedQueue runs functions one at a time per key, in submission order, and
// functions of different keys concurrently. Key 0 is not ordered.
type keyedQueue struct {
	mu     sync.Mutex
	queues map[int64][]func()
}

func newKeyedQueue() *keyedQueue { return &keyedQueue{queues: map[int64][]func(){}} }

func (q *keyedQueue) submit(key int64, fn func()) {
	if key == 0 {
		go fn()
		return
	}
	q.mu.Lock()
	pending := q.queues[key]
	q.queues[key] = append(pending, fn)
	q.mu.Unlock()
	if len(pending) == 0 {
		go q.drain(key)
	}
}

func (q *keyedQueue) drain(key int64) {
	for {
		q.mu.Lock()
		fn := q.queues[key][0]
		q.mu.Unlock()
		fn()
		q.mu.Lock()
		rest := q.queues[key][1:]
		if len(rest) == 0 {
			delete(q.queues, key)
			q.mu.Unlock()
			return
		}
		q.queues[key] = rest
		q.mu.Unlock()
	}
}
