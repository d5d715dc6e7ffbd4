package history_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// indexer runs history.Index over a results stream of its own until the
// test ends.
func startIndexer(tb testing.TB, e *env) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "MFA_RESULTS", Subjects: []string{"mfa.results.>"}, Duplicates: 10 * time.Minute}); err != nil {
		tb.Fatal(err)
	}
	cons, err := e.js.CreateOrUpdateConsumer(ctx, "MFA_RESULTS", jetstream.ConsumerConfig{Durable: "mfa-history", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- history.Index(ctx, cons, e.store, testenv.Quiet()) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("index: %v", err)
		}
	})
}

func publishResult(tb testing.TB, e *env, jobID string, user int64, finished time.Time) {
	tb.Helper()
	body := fmt.Sprintf(`{"job_id":%q,"type":"offboard","user_id":%d,"outcome":"succeeded","attempts":1,"started_at":%q,"finished_at":%q,"duration_ms":5,"data":{"removed_device_ids":[]}}`,
		jobID, user, finished.Add(-5*time.Millisecond).Format(time.RFC3339Nano), finished.Format(time.RFC3339Nano))
	m := nats.NewMsg("mfa.results.offboard.succeeded")
	m.Data = []byte(body)
	m.Header.Set(jetstream.MsgIDHeader, jobID+":result")
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		tb.Fatal(err)
	}
}

func TestIndexReadsResultsIntoTheHistory(t *testing.T) {
	e := newEnv(t, history.Config{})
	startIndexer(t, e)
	publishResult(t, e, "a", 7, base)
	// Not a result: dropped, and it does not stop the index.
	if _, err := e.js.Publish(context.Background(), "mfa.results.offboard.succeeded", []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	publishResult(t, e, "b", 7, base.Add(time.Second))
	publishResult(t, e, "c", 8, base.Add(2*time.Second))
	var es []history.Entry
	testenv.Eventually(t, 10*time.Second, func() bool {
		var err error
		es, err = e.store.Query(context.Background(), 7, 10)
		return err == nil && len(es) == 2
	}, func() string { return fmt.Sprintf("user 7 has %d entries", len(es)) })
	if es[0].JobID != "b" || es[1].JobID != "a" {
		t.Fatalf("entries %+v, want b then a", es)
	}
	if es, err := e.store.Query(context.Background(), 8, 10); err != nil || len(es) != 1 || es[0].JobID != "c" {
		t.Fatalf("user 8: %+v, %v", es, err)
	}
}

// BenchmarkIndex measures how fast results are indexed: results published
// to MFA_RESULTS, timed until the last is in the history.
func BenchmarkIndex(b *testing.B) {
	e := newEnv(b, history.Config{})
	startIndexer(b, e)
	b.ResetTimer()
	for i := range b.N {
		publishResult(b, e, fmt.Sprintf("j%d", i), int64(1+i%1000), base.Add(time.Duration(i)*time.Millisecond))
	}
	last := int64(1 + (b.N-1)%1000)
	want := (b.N-1)/1000 + 1
	testenv.Eventually(b, 5*time.Minute, func() bool {
		es, err := e.store.Query(context.Background(), last, history.MaxLimit)
		return err == nil && len(es) >= min(want, history.MaxLimit) && es[0].JobID == fmt.Sprintf("j%d", b.N-1)
	}, func() string { return "not indexed" })
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "results/s")
}

// TestIndexKeepsTheOffboardThroughARejectedBurst runs the acceptance case
// through the index: an offboard's result, then 1,000 rejected results for
// the same person, all on MFA_RESULTS; the history still holds the
// offboard, for a user id and for a selector whose user was not resolved.
func TestIndexKeepsTheOffboardThroughARejectedBurst(t *testing.T) {
	e := newEnv(t, history.Config{})
	startIndexer(t, e)
	ctx := context.Background()
	publishResult(t, e, "leaver-off", 40, base)
	unresolved := `{"job_id":"sel-off","type":"offboard","user_id":0,"user":{"email":"Gone@Example.com"},"outcome":"failed","attempts":1,` +
		`"started_at":%q,"finished_at":%q,"duration_ms":3,"error":{"code":"user_not_found","message":"no such user","retryable":false}}`
	if _, err := e.js.Publish(ctx, "mfa.results.offboard.failed", []byte(fmt.Sprintf(unresolved, base.Format(time.RFC3339Nano), base.Format(time.RFC3339Nano)))); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 1000; i++ {
		at := base.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano)
		for _, who := range []string{`"user_id":40`, `"user_id":0,"user":{"email":"gone@example.com"}`} {
			body := fmt.Sprintf(`{"job_id":"rej-%d","type":"offboard",%s,"outcome":"rejected","attempts":1,"started_at":%q,"finished_at":%q,"duration_ms":0,`+
				`"error":{"code":"invalid_job","message":"bad params","retryable":false}}`, i, who, at, at)
			if _, err := e.js.PublishAsync("mfa.results.offboard.rejected", []byte(body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing the burst did not complete")
	}
	var es, sel []history.Entry
	testenv.Eventually(t, 60*time.Second, func() bool {
		var err, serr error
		es, err = e.store.Query(ctx, 40, history.DefaultLimit)
		sel, serr = e.store.QuerySelector(ctx, history.Selector{Email: "gone@example.com"}, history.DefaultLimit)
		return err == nil && serr == nil && len(es) > 0 && es[0].JobID == "rej-1000" && len(sel) > 0 && sel[0].JobID == "rej-1000"
	}, func() string { return fmt.Sprintf("user 40 has %d entries, the selector %d", len(es), len(sel)) })
	for name, got := range map[string][]history.Entry{"user id": es, "selector": sel} {
		want := "leaver-off"
		if name == "selector" {
			want = "sel-off"
		}
		if len(got) != history.DefaultLimit || got[len(got)-1].JobID != want || got[len(got)-2].JobID != "rej-952" {
			t.Fatalf("%s: %d entries, last two %v", name, len(got), jobIDs(got[len(got)-2:]))
		}
	}
}
