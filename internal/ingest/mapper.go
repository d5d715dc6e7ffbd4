package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/job"
	registry "github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// mapBatch is the most events one mapper goroutine takes at once. The
// jobs of a batch are published together and each event is acknowledged
// as soon as all of its own jobs are stored, so that a busy mapper pays one
// network write for many publishes and many acks instead of one each.
const mapBatch = 64

// jobPublishTimeout bounds the wait for JetStream's ack of a job.
const jobPublishTimeout = 10 * time.Second

// RunMapper consumes mfa-ingest and turns each stored event into jobs by
// the rules, until ctx ends. Events in hand when ctx ends are finished (or
// left unacknowledged, to be redelivered) before it returns.
func (s *Server) RunMapper(ctx context.Context) error {
	var wg sync.WaitGroup
	// Events wait here for a mapper goroutine; what has queued up while
	// one was busy is its next batch.
	work := make(chan jetstream.Msg, mapBatch)
	// In-flight events get a few seconds to finish after ctx ends, so
	// that a shutdown does not cut a job publish in half (harmless, but
	// it would cost a redelivery).
	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	quit := make(chan struct{})
	for range s.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([]jetstream.Msg, 0, mapBatch)
			for {
				select {
				case msg := <-work:
					batch = append(batch[:0], msg)
				fill:
					for len(batch) < mapBatch {
						select {
						case msg := <-work:
							batch = append(batch, msg)
						default:
							break fill
						}
					}
					s.mapEvents(hctx, batch)
					clear(batch)
				case <-quit:
					return
				}
			}
		}()
	}
	cc, err := s.mcons.Consume(func(msg jetstream.Msg) {
		select {
		case work <- msg:
		case <-ctx.Done():
		}
	},
		// At most a batch buffered here and one in work: each one's ack
		// timer runs while it waits.
		jetstream.PullMaxMessages(mapBatch),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if ctx.Err() == nil {
				s.log.Warn("mfa-ingest consumer", "err", err)
			}
		}))
	if err != nil {
		close(quit)
		wg.Wait()
		return fmt.Errorf("consume %s: %w", ConsumerIngest, err)
	}
	<-ctx.Done()
	cc.Stop()
	close(quit)
	t := time.AfterFunc(10*time.Second, stop)
	wg.Wait()
	t.Stop()
	select {
	case <-cc.Closed():
	case <-time.After(5 * time.Second):
	}
	return nil
}

// retryDelay grows with the deliveries of an event whose jobs could not be
// stored: 1s, 2s, 4s ... up to a minute.
func retryDelay(deliveries uint64) time.Duration {
	d := time.Second
	for i := uint64(1); i < deliveries && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// mapping is one event of a batch on its way through the mapper.
type mapping struct {
	msg        jetstream.Msg
	ev         rules.Event
	deliveries uint64
	jobs       []rules.Job
	errs       []*rules.RuleError
	// futures are the publishes of jobs, in order; a publish that could
	// not even be sent ends the list and is failed/failedJob.
	futures   []jetstream.PubAckFuture
	failed    error
	failedJob string
	done      bool // decided: acknowledged, refused or left to retry
	// attempt is the event's MFA_INGEST_ATTEMPTS key while its mapping
	// runs (redeliveries only).
	attempt string
}

// mapEvents maps a batch of stored events: it applies the rules to each,
// publishes all their jobs without waiting in between, then, event by
// event, waits for the acks of its jobs and acknowledges it (or asks for
// it again later). An event is never acknowledged before all its jobs are
// stored.
func (s *Server) mapEvents(ctx context.Context, msgs []jetstream.Msg) {
	ms := make([]mapping, len(msgs))
	redelivered := 0
	for i, msg := range msgs {
		m := &ms[i]
		m.msg, m.deliveries = msg, 1
		if md, err := msg.Metadata(); err == nil {
			m.deliveries = md.NumDelivered
		}
		ev, err := DecodeWith(msg.Headers(), msg.Data(), s.cfg.Rules.Times())
		if ev.Source == "" {
			ev.Source = strings.TrimPrefix(msg.Subject(), EventSubjectPrefix)
		}
		m.ev = ev
		if err != nil {
			s.refuse(ctx, m, err)
			continue
		}
		if m.deliveries > 1 {
			redelivered++
		}
	}
	// Redelivered events record their attempt first, all at once: a
	// backlog being retried (NATS trouble) must not pay the records one
	// round trip after the other.
	if redelivered > 0 {
		var wg sync.WaitGroup
		for i := range ms {
			if m := &ms[i]; !m.done && m.deliveries > 1 {
				wg.Go(func() {
					if s.beginAttempt(ctx, m) && s.crash != nil && s.crash(m.ev) {
						m.done, m.attempt = true, "" // abandoned, as by a killed mapper
					}
				})
			}
		}
		wg.Wait()
		defer s.endAttempts(ctx, ms)
	}
	for i := range ms {
		m := &ms[i]
		if m.done {
			continue
		}
		ev := m.ev
		m.jobs, m.errs = s.applyRules(ev)
		for _, j := range m.jobs {
			f, err := s.publishJobAsync(j)
			if err != nil {
				m.failed, m.failedJob = err, j.ID
				break
			}
			m.futures = append(m.futures, f)
		}
		if len(m.futures) == 0 {
			// Nothing to wait for: its ack timer need not run on while
			// the rest of the batch is stored.
			s.settle(ctx, m)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, jobPublishTimeout)
	defer cancel()
	for i := range ms {
		m := &ms[i]
		if m.done {
			continue
		}
		for k, f := range m.futures {
			if err := awaitAck(wctx, f); err != nil {
				m.failed, m.failedJob = err, m.jobs[k].ID
				break
			}
		}
		s.settle(ctx, m)
	}
}

// awaitAck waits for JetStream's answer to a publish.
func awaitAck(ctx context.Context, f jetstream.PubAckFuture) error {
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retry leaves an event to be delivered again after a delay that grows
// with its deliveries.
func (s *Server) retry(m *mapping, what string, err error) {
	s.log.Warn("HR event not mapped yet; will retry", "what", what, "source", m.ev.Source, "event_id", m.ev.ID,
		"deliveries", m.deliveries, "err", err)
	_ = m.msg.NakWithDelay(retryDelay(m.deliveries))
	m.done = true
}

// refuse copies an event that cannot be read to the dead-letter subject
// and terminates it. Only a stored event the receiver did not write can
// get here.
func (s *Server) refuse(ctx context.Context, m *mapping, err error) {
	if derr := s.deadLetter(ctx, m.msg, m.ev, "bad_event", "event cannot be read: "+err.Error(), m.deliveries); derr != nil {
		s.retry(m, "dead letter", derr)
		return
	}
	s.log.Error("HR event cannot be read; copied to "+DLQSubject, "source", m.ev.Source, "event_id", m.ev.ID, "err", err)
	s.m.Event(m.ev.Source, "rule_error")
	_ = m.msg.Term()
	m.done = true
}

// maxDeaths is how many mappings of one event may die (begun on a
// redelivery, never ended) before the event is dead-lettered.
const maxDeaths = 2

// attemptKey is an event's key in MFA_INGEST_ATTEMPTS: its stream
// sequence.
func attemptKey(m *mapping) string {
	md, err := m.msg.Metadata()
	if err != nil {
		return ""
	}
	return "seq." + strconv.FormatUint(md.Sequence.Stream, 10)
}

// beginAttempt records that a redelivered event's mapping begins, and
// dead-letters an event whose mapping already died maxDeaths times (a
// mapping that ends, however, removes the record in settle). false means
// the event is decided (dead-lettered, or left to retry).
func (s *Server) beginAttempt(ctx context.Context, m *mapping) bool {
	key := attemptKey(m)
	if key == "" || s.attempts == nil {
		return true
	}
	// The common case, no record (a first redelivery, or one after a
	// retry that ended), is one round trip.
	if _, err := s.attempts.Create(ctx, key, []byte("1")); err == nil {
		m.attempt = key
		return true
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		s.retry(m, "attempt record", err)
		return false
	}
	e, err := s.attempts.Get(ctx, key)
	if err != nil {
		s.retry(m, "attempt record", err)
		return false
	}
	deaths, _ := strconv.Atoi(string(e.Value()))
	if deaths >= maxDeaths {
		reason := fmt.Sprintf("the mapper died %d times while mapping this event; it is not mapped again", deaths)
		if err := s.deadLetter(ctx, m.msg, m.ev, "mapper_died", reason, m.deliveries); err != nil {
			s.retry(m, "dead letter", err)
			return false
		}
		s.log.Error("HR event killed the mapper; copied to "+DLQSubject, "source", m.ev.Source, "event_id", m.ev.ID, "deaths", deaths)
		s.m.Event(m.ev.Source, "rule_error")
		_ = m.msg.Term()
		_ = s.attempts.Delete(ctx, key)
		m.done = true
		return false
	}
	if _, err := s.attempts.Update(ctx, key, []byte(strconv.Itoa(deaths+1)), e.Revision()); err != nil {
		s.retry(m, "attempt record", err)
		return false
	}
	m.attempt = key
	return true
}

// endAttempts removes the records of the batch's mappings that ended (all
// at once, after their events were decided: a record outliving its acked
// event is harmless and expires).
func (s *Server) endAttempts(ctx context.Context, ms []mapping) {
	var wg sync.WaitGroup
	for i := range ms {
		if key := ms[i].attempt; key != "" && ms[i].done {
			wg.Go(func() { _ = s.attempts.Delete(ctx, key) })
		}
	}
	wg.Wait()
}

// settle finishes an event whose job publishes have all been answered.
func (s *Server) settle(ctx context.Context, m *mapping) {
	if m.failed != nil {
		s.retry(m, "job "+m.failedJob, m.failed)
		return
	}
	ev, errs := m.ev, m.errs
	if len(errs) > 0 {
		var msgs, names []string
		for _, e := range errs {
			msgs = append(msgs, e.Error())
			names = append(names, e.Rule)
		}
		if err := s.deadLetter(ctx, m.msg, ev, "rule_error", strings.Join(msgs, "; "), m.deliveries); err != nil {
			s.retry(m, "dead letter", err)
			return
		}
		s.log.Warn("rule failed on an HR event; event copied to "+DLQSubject, "source", ev.Source, "event_id", ev.ID,
			"rules", strings.Join(names, ","), "err", strings.Join(msgs, "; "))
	}
	m.done = true
	if s.beforeAck != nil && !s.beforeAck(ev) {
		return
	}
	result := "ignored"
	switch {
	case len(errs) > 0:
		result = "rule_error"
	case len(m.jobs) > 0:
		result = "mapped"
	}
	for _, j := range m.jobs {
		s.log.Info("HR event mapped", "source", ev.Source, "event_id", ev.ID, "job_id", j.ID, "type", j.Type)
	}
	s.noteLeavers(ctx, m)
	s.m.Event(ev.Source, result)
	_ = m.msg.Ack()
}

// noteLeavers tells the leaver registry of each offboard the event was
// mapped to, once the job is stored and before the event is acknowledged.
// The registry stays off the door's path: a failure is logged, and the
// worker's steps and the offboard's result fill the record in later
// (without the HR event's id).
func (s *Server) noteLeavers(ctx context.Context, m *mapping) {
	if s.leavers == nil {
		return
	}
	ev := registry.HREvent{Source: m.ev.Source, ID: m.ev.ID}
	if md, err := m.msg.Metadata(); err == nil {
		ev.ReceivedAt = md.Timestamp
	}
	for _, j := range m.jobs {
		if j.Type != "offboard" {
			continue
		}
		body, err := json.Marshal(j)
		if err == nil {
			nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = s.leavers.NoteJob(nctx, registry.Scheduled, body, ev)
			cancel()
		}
		if err != nil {
			s.log.Warn("telling the leaver registry of an HR leaver failed; the offboard's result records the leaver", "source", m.ev.Source, "event_id", m.ev.ID, "job_id", j.ID, "err", err)
		}
	}
}

// publishJobAsync sends a job to mfa.jobs.<type> with Nats-Msg-Id = its id
// and returns the future of JetStream's ack; mapping the same event again
// publishes the same id, which JetStream (and beyond its window the
// worker's ledger) turns into one job.
func (s *Server) publishJobAsync(j rules.Job) (jetstream.PubAckFuture, error) {
	body, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(j.Subject())
	m.Header.Set(jetstream.MsgIDHeader, j.ID)
	m.Data = body
	return s.mjs.PublishMsgAsync(m)
}

// deadLetter copies an event to mfa.dlq.ingest with the contract's headers.
func (s *Server) deadLetter(ctx context.Context, msg jetstream.Msg, ev rules.Event, code, reason string, deliveries uint64) error {
	// The job model's scrubbing: secret keys blanked at any depth, any
	// case, escapes included; cut at 64 KiB on a character boundary.
	d := job.ForDLQ(msg.Data())
	m := nats.NewMsg(DLQSubject)
	if len(reason) > 1000 {
		reason = reason[:1000] + "..."
	}
	m.Header.Set(job.HeaderReason, reason)
	m.Header.Set(job.HeaderErrorCode, code)
	m.Header.Set(job.HeaderDeliveries, strconv.FormatUint(deliveries, 10))
	m.Header.Set(job.HeaderOriginalSubject, msg.Subject())
	m.Header.Set(HeaderSource, ev.Source)
	if ev.ID != "" {
		m.Header.Set(HeaderEventID, ev.ID)
		m.Header.Set(jetstream.MsgIDHeader, "hr:"+ev.Source+":"+ev.ID+":"+code)
	}
	d.Header(m.Header.Set)
	m.Data = d.Body
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := s.mjs.PublishMsg(ctx, m)
	return err
}
