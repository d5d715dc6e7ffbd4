package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// Runner consumes both lanes of MFA_JOBS and runs the jobs.
type Runner struct {
	cfg   Config
	log   *slog.Logger
	objs  *topology.Objects
	m     *metrics.Metrics
	x     *executor
	sem   *prioritySem
	order *keyedQueue
	wg    sync.WaitGroup
}

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
	r := &Runner{cfg: cfg, log: log, objs: objs, m: m, sem: newPrioritySem(cfg.Concurrency), order: newKeyedQueue()}
	r.x = &executor{
		cfg: &r.cfg, budgets: newBudgets(&r.cfg), log: log, pub: js, m: m, owner: cfg.Owner, parser: parser,
		policy: policy{maxDeliver: cfg.MaxDeliver, nakBase: cfg.NakBase, nakMax: cfg.NakMax},
		ledger: ledger.New(objs.Ledger),
		locks:  ledger.NewLocks(objs.Locks, cfg.Owner),
		h:      &handlers{ol: ol, factors: newFactorCache(cfg.FactorCacheTTL)},
	}
	return r, nil
}

// Concurrency is how many jobs run at once in this replica.
func (r *Runner) Concurrency() int { return r.cfg.Concurrency }

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
	errc := make(chan error, len(lanes))
	for _, l := range lanes {
		it, err := l.cons.Messages(
			// A small buffer: a message waiting in it has its ack timer
			// running and nobody sending InProgress for it.
			jetstream.PullMaxMessages(max(1, r.cfg.Concurrency/4)),
			jetstream.PullExpiry(5*time.Second),
		)
		if err != nil {
			return fmt.Errorf("consume %s: %w", l.name, err)
		}
		fetchers.Add(1)
		go func() {
			defer fetchers.Done()
			if err := r.fetch(ctx, work, l, it); err != nil {
				errc <- err
			}
		}()
		context.AfterFunc(ctx, it.Stop)
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
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// fetch takes messages from one lane: it takes a message, starts its
// heartbeat, waits for a slot (urgent first), and hands it to the user's
// queue so that one user's jobs run in arrival order.
func (r *Runner) fetch(ctx, work context.Context, l lane, it jetstream.MessagesContext) error {
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			r.log.Warn("fetching jobs failed; retrying", "consumer", l.name, "err", err)
			if !sleep(ctx, time.Second) {
				return nil
			}
			continue
		}
		t := r.x.newTask(msg)
		r.x.heartbeat(t)
		if err := r.sem.acquire(ctx, l.prio); err != nil {
			r.x.giveBack(t) // shutting down before it started
			return nil
		}
		r.wg.Add(1)
		r.order.submit(t.userKey(), func() {
			defer r.wg.Done()
			defer r.sem.release()
			r.x.process(work, t)
		})
	}
}

// watchPending refreshes the backlog gauge from consumer info.
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
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// prioritySem is a counting semaphore that serves urgent waiters first.
type prioritySem struct {
	mu      sync.Mutex
	free    int
	waiters [3][]chan struct{} // by onelogin.Priority
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
