package leaver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/leaver"
)

// seed writes n records straight into MFA_LEAVERS (the bucket's stream),
// shaped as the indexer leaves them after an offboard's result: 80%
// verified, 10% open, the rest spread over the other states.
func seed(tb testing.TB, js jetstream.JetStream, n int) time.Time {
	tb.Helper()
	ctx := context.Background()
	if _, err := leaver.ProvisionBucket(ctx, js, 1); err != nil {
		tb.Fatal(err)
	}
	base := time.Now().UTC().Add(-30 * 24 * time.Hour)
	states := []leaver.State{leaver.Verified, leaver.Verified, leaver.Verified, leaver.Verified, leaver.Verified,
		leaver.Verified, leaver.Verified, leaver.Verified, leaver.Open, leaver.Scheduled}
	for i := range n {
		eff := base.Add(time.Duration(i) * 20 * time.Second)
		st := states[i%len(states)]
		r := leaver.Record{
			Key: leaver.UserKey(int64(i + 1)), State: st, Since: eff.Add(time.Hour), UserID: int64(i + 1),
			Source: "hibob", EventID: fmt.Sprintf("ev-%d", i), ReceivedAt: eff, EffectiveAt: eff,
			JobID: fmt.Sprintf("hr:hibob:ev-%d:offboard", i), FinishedAt: eff.Add(30 * time.Minute),
			CreatedAt: eff, UpdatedAt: eff.Add(time.Hour), ResultSeq: uint64(i + 1),
			Transitions: []leaver.Transition{{State: leaver.Scheduled, At: eff}, {State: st, At: eff.Add(time.Hour)}},
		}
		if st == leaver.Verified {
			r.OffboardedAt, r.VerifiedAt, r.FactorsRemoved, r.FactorTypes = eff.Add(30*time.Minute), eff.Add(30*time.Minute), 2, []string{"OneLogin SMS", "Google Authenticator"}
		}
		if st == leaver.Open {
			r.Reason, r.ErrorCode = leaver.ReasonUserNotFound, "user_not_found"
		}
		b, _ := json.Marshal(r)
		if _, err := js.PublishAsync("$KV."+leaver.Bucket+"."+r.Key, b); err != nil {
			tb.Fatal(err)
		}
		if i%5000 == 4999 {
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		tb.Fatal("seeding did not complete")
	}
	return base
}

// BenchmarkQueryLeavers: mfa.query.leavers over NATS with 100,000 records
// in the registry (target: under 100 ms). Reported per request type.
func BenchmarkQueryLeavers(b *testing.B) {
	e := newEnv(b)
	const n = 100_000
	base := seed(b, e.js, n)
	svc := e.start(b)
	<-svc.View.Ready()
	if svc.View.Len() != n {
		b.Fatalf("the view holds %d records", svc.View.Len())
	}
	srv, err := micro.AddService(e.nc, micro.Config{Name: "mfa", Version: "1.2.0"})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	if err := srv.AddGroup("mfa.query").AddEndpoint("leavers", leaver.NewHandler(svc.View)); err != nil {
		b.Fatal(err)
	}
	for _, q := range []struct{ name, body string }{
		{"open", `{"state":"open"}`},
		{"all", `{"limit":1000}`},
		{"since", `{"state":"verified","since":"` + base.Add(20*24*time.Hour).Format(time.RFC3339) + `"}`},
	} {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				m, err := e.nc.Request("mfa.query.leavers", []byte(q.body), 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				var rep leaver.QueryReply
				if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Data == nil || rep.Data.Total == 0 {
					b.Fatalf("reply %s", m.Data)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
		})
	}
}

// BenchmarkEvidence: `worker evidence` (leaver.Export) over the records of
// 100,000 offboards (target: under 10 s).
func BenchmarkEvidence(b *testing.B) {
	e := newEnv(b)
	const n = 100_000
	base := seed(b, e.js, n)
	for _, format := range []string{"csv", "json"} {
		b.Run(format, func(b *testing.B) {
			for b.Loop() {
				rows, err := leaver.Export(context.Background(), e.js, io.Discard, leaver.EvidenceOptions{
					Since: base.Add(-time.Hour), Until: time.Now().Add(time.Hour), Target: time.Hour, Format: format,
				})
				if err != nil || rows != n {
					b.Fatalf("%d rows, %v", rows, err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/export")
		})
	}
}

// TestSeededRecordsAreReadBack keeps the benchmarks' seeding honest: what
// it writes, Scan and the view read.
func TestSeededRecordsAreReadBack(t *testing.T) {
	e := newEnv(t)
	seed(t, e.js, 50)
	n := 0
	if err := leaver.Scan(context.Background(), e.js, func(leaver.Record) error { n++; return nil }); err != nil || n != 50 {
		t.Fatalf("scanned %d, %v", n, err)
	}
	svc := e.start(t)
	<-svc.View.Ready()
	c, _ := svc.View.Counts()
	if svc.View.Len() != 50 || c[leaver.Verified] != 40 || c[leaver.Open] != 5 {
		t.Fatalf("view: %d records, %v", svc.View.Len(), c)
	}
}
