package guard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// The guard against the worker's own stream and urgent consumer, the way
// the job path uses it: a worker killed between the hold and the ack, a
// NATS restart while jobs are held, then a release whose messages the
// urgent consumer delivers and the guard lets run.
func TestHeldJobsThroughTheJobStream(t *testing.T) {
	s := startServer(t)
	js := s.connect(t)
	ctx := context.Background()
	cons := topology.Consumers{AckWait: 2 * time.Second, Lease: 2 * time.Second, MaxDeliver: 5}
	objs, err := topology.Provision(ctx, js, topology.Config{}, cons)
	if err != nil {
		t.Fatal(err)
	}
	g := guard.New(objs.Guard, js, guard.Config{Limit: 2, Window: time.Hour})
	for _, id := range []string{"a", "b", "c", "d"} {
		m := nats.NewMsg(job.TypeOffboard.Subject())
		m.Data = []byte(fmt.Sprintf(`{"id":%q,"type":"offboard","user_id":7,"source":"hr.scim"}`, id))
		m.Header.Set(jetstream.MsgIDHeader, id)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	ran := map[string]int{}
	killed := false
	// step takes one delivery through the guard, as the job path would.
	step := func(js jetstream.JetStream, g *guard.Guard) {
		t.Helper()
		c, err := js.Consumer(ctx, topology.StreamJobs, topology.ConsumerUrgent)
		if err != nil {
			t.Fatal(err)
		}
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var b struct{ ID, Source string }
			if err := json.Unmarshal(m.Data(), &b); err != nil {
				t.Fatal(err)
			}
			md, _ := m.Metadata()
			jt := md.Timestamp
			if v, err := time.Parse(time.RFC3339Nano, m.Headers().Get(job.HeaderJobTime)); err == nil {
				jt = v
			}
			d, err := g.Admit(ctx, guard.Job{ID: b.ID, Type: job.TypeOffboard, Source: b.Source, UserID: 7, Body: m.Data(), Header: m.Headers(), Time: jt}, time.Now())
			if err != nil {
				t.Fatalf("admit %s: %v", b.ID, err)
			}
			switch d {
			case guard.Run, guard.Released:
				ran[b.ID]++
			case guard.Hold:
				if b.ID == "d" && !killed {
					killed = true // the worker dies before the ack
					continue
				}
			default:
				t.Fatalf("%s: %s", b.ID, d)
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n != 1 {
			t.Fatalf("fetched %d messages (%v)", n, batch.Error())
		}
	}
	// a, b run; c is held; d is held, its worker killed; d comes back
	// after the ack wait and is held again.
	for range 5 {
		step(js, g)
	}
	if ran["a"] != 1 || ran["b"] != 1 || len(ran) != 2 || !killed {
		t.Fatalf("ran %v", ran)
	}

	s.stop()
	s.start()
	js2 := s.connect(t)
	// A fresh worker on the restarted server.
	kv, err := js2.KeyValue(ctx, guard.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	g2 := guard.New(kv, js2, guard.Config{Limit: 2, Window: time.Hour})
	hs, err := g2.List(ctx, guard.Filter{})
	if err != nil || len(hs) != 2 || hs[0].JobID != "c" || hs[1].JobID != "d" {
		t.Fatalf("held after the restart: %+v, %v", hs, err)
	}
	rep, err := g2.Release(ctx, guard.Filter{Source: "hr.scim", BySource: true}, guard.Operator{By: "ops"}, time.Now())
	if err != nil || len(rep.Done) != 2 {
		t.Fatalf("release: %+v, %v", rep, err)
	}
	step(js2, g2)
	step(js2, g2)
	if fmt.Sprint(ran) != "map[a:1 b:1 c:1 d:1]" {
		t.Fatalf("ran %v", ran)
	}
	c, err := js2.Consumer(ctx, topology.StreamJobs, topology.ConsumerUrgent)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
		t.Fatalf("consumer after the release: %+v, %v", info, err)
	}
}
