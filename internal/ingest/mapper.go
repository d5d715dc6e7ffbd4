package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// RunMapper consumes mfa-ingest and turns each stored event into jobs by
// the rules, until ctx ends. Events in hand when ctx ends are finished (or
// left unacknowledged, to be redelivered) before it returns.
func (s *Server) RunMapper(ctx context.Context) error {
	var wg sync.WaitGroup
	work := make(chan jetstream.Msg)
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
			for {
				select {
				case msg := <-work:
					s.mapEvent(hctx, msg)
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
		// Few messages buffered: each one's ack timer runs while it waits.
		jetstream.PullMaxMessages(2*s.cfg.Concurrency),
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

func (s *Server) mapEvent(ctx context.Context, msg jetstream.Msg) {
	var deliveries uint64 = 1
	if md, err := msg.Metadata(); err == nil {
		deliveries = md.NumDelivered
	}
	retry := func(what string, err error, ev rules.Event) {
		s.log.Warn("HR event not mapped yet; will retry", "what", what, "source", ev.Source, "event_id", ev.ID,
			"deliveries", deliveries, "err", err)
		_ = msg.NakWithDelay(retryDelay(deliveries))
	}
	ev, err := Decode(msg.Headers(), msg.Data())
	if ev.Source == "" {
		ev.Source = strings.TrimPrefix(msg.Subject(), EventSubjectPrefix)
	}
	if err != nil {
		// Only a stored event the receiver did not write can get here.
		if derr := s.deadLetter(ctx, msg, ev, "bad_event", "event cannot be read: "+err.Error(), deliveries); derr != nil {
			retry("dead letter", derr, ev)
			return
		}
		s.log.Error("HR event cannot be read; copied to "+DLQSubject, "source", ev.Source, "event_id", ev.ID, "err", err)
		s.m.Event(ev.Source, "rule_error")
		_ = msg.Term()
		return
	}
	jobs, errs := s.cfg.Rules.Apply(ev)
	for _, j := range jobs {
		if err := s.publishJob(ctx, j); err != nil {
			retry("job "+j.ID, err, ev)
			return
		}
	}
	if len(errs) > 0 {
		var msgs, names []string
		for _, e := range errs {
			msgs = append(msgs, e.Error())
			names = append(names, e.Rule)
		}
		if err := s.deadLetter(ctx, msg, ev, "rule_error", strings.Join(msgs, "; "), deliveries); err != nil {
			retry("dead letter", err, ev)
			return
		}
		s.log.Warn("rule failed on an HR event; event copied to "+DLQSubject, "source", ev.Source, "event_id", ev.ID,
			"rules", strings.Join(names, ","), "err", strings.Join(msgs, "; "))
	}
	if s.beforeAck != nil && !s.beforeAck(ev) {
		return
	}
	result := "ignored"
	switch {
	case len(errs) > 0:
		result = "rule_error"
	case len(jobs) > 0:
		result = "mapped"
	}
	for _, j := range jobs {
		s.log.Info("HR event mapped", "source", ev.Source, "event_id", ev.ID, "job_id", j.ID, "type", j.Type)
	}
	s.m.Event(ev.Source, result)
	_ = msg.Ack()
}

// publishJob stores a job on mfa.jobs.<type> with Nats-Msg-Id = its id;
// mapping the same event again publishes the same id, which JetStream (and
// beyond its window the worker's ledger) turns into one job.
func (s *Server) publishJob(ctx context.Context, j rules.Job) error {
	body, err := json.Marshal(j)
	if err != nil {
		return err
	}
	m := nats.NewMsg(j.Subject())
	m.Header.Set(jetstream.MsgIDHeader, j.ID)
	m.Data = body
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = s.mjs.PublishMsg(ctx, m)
	return err
}

// deadLetter copies an event to mfa.dlq.ingest with the contract's headers.
func (s *Server) deadLetter(ctx context.Context, msg jetstream.Msg, ev rules.Event, code, reason string, deliveries uint64) error {
	body, extra := dlqBody(msg.Data())
	m := nats.NewMsg(DLQSubject)
	if len(reason) > 1000 {
		reason = reason[:1000] + "..."
	}
	m.Header.Set("Mfa-Reason", reason)
	m.Header.Set("Mfa-Error-Code", code)
	m.Header.Set("Mfa-Deliveries", strconv.FormatUint(deliveries, 10))
	m.Header.Set("Mfa-Original-Subject", msg.Subject())
	m.Header.Set(HeaderSource, ev.Source)
	if ev.ID != "" {
		m.Header.Set(HeaderEventID, ev.ID)
		m.Header.Set(jetstream.MsgIDHeader, "hr:"+ev.Source+":"+ev.ID+":"+code)
	}
	for k, v := range extra {
		m.Header.Set(k, v)
	}
	m.Data = body
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := s.mjs.PublishMsg(ctx, m)
	return err
}
