package peers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/bench"
)

// floorTimeout bounds a floor run.
const floorTimeout = 10 * time.Minute

// floorBatch is the floor's pull batch. internal/bench pulls the
// concurrency with a 5 s expiry, as the worker does; a batch of
// concurrency/4 with the default 30 s expiry, over 10,000 jobs with
// nats.go 1.55 and nats-server 2.15, at times stopped with no pull request
// waiting on the server and nothing acked pending, until the expiry. A
// batch of 100 with a 2 s expiry did not stall in repeated runs, so the
// floor stays the physical limit it is meant to be.
const floorBatch = 100

// Floor is the least any JetStream consumer doing this job pays, measured
// as internal/bench measures it: a bare pull consumer that fetches each
// job, lists the user's devices on OneLogin once (ol), publishes one result
// for it (waiting for the publish ack) and acks it, with concurrency
// goroutines, and does nothing else. With ol nil it makes no call and
// echoes the job as its result: the transport alone (system "transport").
// Only its pull batch differs from internal/bench's (see floorBatch).
func Floor(b *Bed, ol *bench.OneLogin, n, concurrency int) (Run, error) {
	system := "floor"
	if ol == nil {
		system = "transport"
	}
	ctx := context.Background()
	if _, err := b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "FLOOR", Subjects: []string{"floor.jobs.*"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		return Run{}, err
	}
	if _, err := b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "FLOOR_RESULTS", Subjects: []string{"floor.results.>"}, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		return Run{}, err
	}
	cons, err := b.JS.CreateOrUpdateConsumer(ctx, "FLOOR", jetstream.ConsumerConfig{Durable: "floor", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 1000})
	if err != nil {
		return Run{}, err
	}
	if err := b.Publish(Offboards(n), "floor.jobs.offboard", nil); err != nil {
		return Run{}, err
	}
	stop := meter(system, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done, failed := 0, 0
	var firstErr error
	finished := make(chan struct{})
	msgs := make(chan jetstream.Msg)
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range msgs {
				r, perr := bench.FloorReply(ctx, ol, m)
				if perr == nil {
					_, perr = b.JS.PublishMsg(ctx, r)
				}
				if perr == nil {
					_ = m.Ack()
				}
				mu.Lock()
				if perr != nil {
					failed++
					if firstErr == nil {
						firstErr = perr
					}
				}
				done++
				if done == n {
					close(finished)
				}
				mu.Unlock()
			}
		}()
	}
	quit := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-quit:
		}
	}, jetstream.PullMaxMessages(floorBatch), jetstream.PullExpiry(2*time.Second))
	if err != nil {
		return Run{}, err
	}
	halt := func() {
		close(quit)
		cc.Drain()
		<-cc.Closed()
		close(msgs)
		wg.Wait()
	}
	var run Run
	select {
	case <-finished:
		run = stop()
	case <-time.After(floorTimeout):
		defer halt()
		mu.Lock()
		n0, f0, e0 := done, failed, firstErr
		mu.Unlock()
		return Run{}, fmt.Errorf("floor timed out: %d of %d jobs done (%d results not published, the first: %v); FLOOR holds %d", n0, n, f0, e0, b.Count("FLOOR"))
	}
	halt()
	if got := b.Count("FLOOR_RESULTS"); got != n {
		return run, fmt.Errorf("floor: %d results for %d jobs", got, n)
	}
	return run, nil
}
