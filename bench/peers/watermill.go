package peers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/bench"
)

// Watermill's streams and subjects in this measurement.
const (
	wmJobs          = "PEER_JOBS"
	wmResults       = "PEER_RESULTS"
	wmJobSubject    = "peer.jobs.offboard"
	wmResultSubject = "peer.results.offboard"
)

// Watermill runs n offboard jobs through Watermill's router over
// watermill-nats' JetStream subscriber and publisher, concurrency
// subscribers in one durable queue group, in the exactly-once mode of
// watermill-nats' own tests (TrackMsgId: the result carries the job id as
// Nats-Msg-Id; a synchronous ack after the result is published), with
// manual acks (Watermill acks itself). Each job lists its user's devices
// on the stand-in, once.
func Watermill(b *Bed, st *Standin, n, concurrency int) (Run, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: wmJobs, Subjects: []string{"peer.jobs.>"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		return Run{}, err
	}
	if _, err := b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: wmResults, Subjects: []string{"peer.results.>"}, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		return Run{}, err
	}
	err := b.Publish(Offboards(n), wmJobSubject, func(j Job, h nats.Header) { h.Set(wmnats.WatermillUUIDHdr, j.ID) })
	if err != nil {
		return Run{}, err
	}
	logger := watermill.NopLogger{}
	js := wmnats.JetStreamConfig{
		SubscribeOptions: []nats.SubOpt{nats.DeliverAll(), nats.AckExplicit(), nats.ManualAck()},
		TrackMsgId:       true,
		AckAsync:         false,
		DurablePrefix:    "peer",
	}
	natsOpts := []nats.Option{nats.Name("watermill-peer")}
	stop := meter("watermill", n)
	pub, err := wmnats.NewPublisher(wmnats.PublisherConfig{URL: b.URL(), NatsOptions: natsOpts, Marshaler: &wmnats.NATSMarshaler{}, JetStream: js}, logger)
	if err != nil {
		return Run{}, err
	}
	defer pub.Close()
	sub, err := wmnats.NewSubscriber(wmnats.SubscriberConfig{
		URL: b.URL(), NatsOptions: natsOpts, QueueGroupPrefix: "peer", SubscribersCount: concurrency,
		AckWaitTimeout: 30 * time.Second, CloseTimeout: 30 * time.Second, Unmarshaler: &wmnats.NATSMarshaler{}, JetStream: js,
	}, logger)
	if err != nil {
		return Run{}, err
	}
	defer sub.Close()
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, logger)
	if err != nil {
		return Run{}, err
	}
	ol := bench.NewOneLogin(st.URL, ClientID, ClientSecret, concurrency)
	router.AddHandler("offboard", wmJobSubject, sub, wmResultSubject, pub, func(msg *message.Message) ([]*message.Message, error) {
		r, err := bench.Offboard(msg.Context(), ol, msg.Payload)
		if err != nil {
			return nil, err
		}
		body, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		// The job id as the result's message id: a redelivered job's
		// second result is dropped by the stream's duplicate window.
		return []*message.Message{message.NewMessage(r.ID, body)}, nil
	})
	errc := make(chan error, 1)
	go func() { errc <- router.Run(ctx) }()
	select {
	case <-router.Running():
	case err := <-errc:
		return Run{}, fmt.Errorf("watermill router: %w", err)
	}
	werr := b.WaitCount(wmResults, n, 10*time.Minute)
	run := stop()
	_ = router.Close()
	<-errc
	if werr != nil {
		return run, fmt.Errorf("watermill: %w", werr)
	}
	if got := b.Count(wmResults); got != n {
		return run, fmt.Errorf("watermill: %d results for %d jobs", got, n)
	}
	return run, nil
}
