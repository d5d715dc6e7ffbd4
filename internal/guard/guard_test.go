package guard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/audit"
	"github.com/mfa-worker/mfa-worker/internal/broker"
	"github.com/mfa-worker/mfa-worker/internal/config"
	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// server is an embedded JetStream server on a fixed port and store, so that
// a test can stop it and start it again on the same data.
type server struct {
	t    testing.TB
	dir  string
	port int
	srv  *broker.Server
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startServer(t testing.TB) *server {
	t.Helper()
	s := &server{t: t, dir: t.TempDir(), port: freePort(t)}
	s.start()
	t.Cleanup(func() {
		if s.srv != nil {
			s.srv.Stop()
		}
	})
	return s
}

func (s *server) start() {
	s.t.Helper()
	srv, err := broker.Start(broker.Options{Port: s.port, StoreDir: s.dir})
	if err != nil {
		s.t.Fatal(err)
	}
	s.srv = srv
}

func (s *server) stop() {
	s.srv.Stop()
	s.srv = nil
}

func (s *server) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// connect connects to the server, reconnecting for ever, until the test
// ends.
func (s *server) connect(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// client connects to the server (reconnecting for ever) and provisions the
// guard's bucket, the audit stream and a stream for the job subjects.
func (s *server) client(t testing.TB) jetstream.JetStream {
	t.Helper()
	js := s.connect(t)
	ctx := context.Background()
	if _, err := guard.Provision(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	if err := audit.Provision(ctx, js, audit.Config{}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "JOBS", Subjects: []string{"mfa.jobs.>"}, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	return js
}

func newGuard(t *testing.T, js jetstream.JetStream, limit int) *guard.Guard {
	t.Helper()
	g, err := guard.Open(context.Background(), js, guard.Config{Limit: limit, Window: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

var t0 = time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)

func offboard(id, source string) guard.Job {
	body := fmt.Sprintf(`{"id":%q,"type":"offboard","user_id":42,"source":%q}`, id, source)
	h := nats.Header{}
	h.Set("Nats-Msg-Id", id)
	h.Set("Mfa-Replay", "7")
	return guard.Job{ID: id, Type: job.TypeOffboard, Source: source, UserID: 42, Body: []byte(body), Header: h, Time: t0.Add(-time.Hour)}
}

func admit(t *testing.T, g *guard.Guard, j guard.Job, at time.Time) guard.Decision {
	t.Helper()
	d, err := g.Admit(context.Background(), j, at)
	if err != nil {
		t.Fatalf("admit %s: %v", j.ID, err)
	}
	return d
}

func want(t *testing.T, g *guard.Guard, j guard.Job, at time.Time, d guard.Decision) {
	t.Helper()
	if got := admit(t, g, j, at); got != d {
		t.Fatalf("admit %s at %s: %s, want %s", j.ID, at.Format(time.TimeOnly), got, d)
	}
}

func TestCountsPerSourceOverASlidingWindow(t *testing.T) {
	js := startServer(t).client(t)
	g := newGuard(t, js, 3)
	for i := range 3 {
		want(t, g, offboard(fmt.Sprintf("a%d", i), "hr.scim"), t0.Add(time.Duration(i)*time.Minute), guard.Run)
	}
	// A redelivery of an admitted job is not counted again.
	want(t, g, offboard("a0", "hr.scim"), t0.Add(5*time.Minute), guard.Run)
	// Another source has its own count.
	want(t, g, offboard("b0", "hris.workday"), t0.Add(5*time.Minute), guard.Run)
	// Other types are not counted.
	enroll := offboard("e0", "hr.scim")
	enroll.Type = job.TypeEnroll
	for range 5 {
		want(t, g, enroll, t0.Add(5*time.Minute), guard.Run)
	}
	// The window slides: an hour after the first three, three more run.
	for i := range 3 {
		want(t, g, offboard(fmt.Sprintf("c%d", i), "hr.scim"), t0.Add(62*time.Minute), guard.Run)
	}
	if n, err := g.Admitted(context.Background(), "hr.scim", t0.Add(62*time.Minute)); err != nil || n != 3 {
		t.Fatalf("admitted in the window: %d, %v; want 3", n, err)
	}
	// A remove counts with the offboards and is held past the limit.
	rm := offboard("r0", "hr.scim")
	rm.Type = job.TypeRemove
	want(t, g, rm, t0.Add(63*time.Minute), guard.Hold)
	// Once tripped, the source's jobs are held even after the window
	// passed, until an operator decides.
	want(t, g, offboard("d0", "hr.scim"), t0.Add(5*time.Hour), guard.Hold)
	if at, err := g.Tripped(context.Background(), "hr.scim"); err != nil || !at.Equal(t0.Add(63*time.Minute)) {
		t.Fatalf("tripped at %v (%v), want %v", at, err, t0.Add(63*time.Minute))
	}
	// A held job delivered again stays held.
	want(t, g, rm, t0.Add(6*time.Hour), guard.Hold)
	if ts, err := g.TrippedSources(context.Background()); err != nil || len(ts) != 1 || !ts["hr.scim"].Equal(t0.Add(63*time.Minute)) {
		t.Fatalf("tripped sources: %v, %v", ts, err)
	}
	hs, err := g.List(context.Background(), guard.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].JobID != "r0" || hs[1].JobID != "d0" || hs[0].Type != job.TypeRemove {
		t.Fatalf("held: %+v, want r0 then d0", hs)
	}
	if _, ok := hs[0].Header["Nats-Msg-Id"]; ok || hs[0].Header["Mfa-Replay"][0] != "7" {
		t.Fatalf("stored headers %v: want Mfa-Replay kept, Nats-Msg-Id dropped", hs[0].Header)
	}
	// The other source is not tripped.
	want(t, g, offboard("b1", "hris.workday"), t0.Add(6*time.Hour), guard.Run)
}

func TestLimitZeroRunsEverythingButKeepsHolds(t *testing.T) {
	js := startServer(t).client(t)
	g := newGuard(t, js, 1)
	want(t, g, offboard("a", "s"), t0, guard.Run)
	want(t, g, offboard("b", "s"), t0, guard.Hold)
	off := newGuard(t, js, 0)
	for i := range 100 {
		want(t, off, offboard(fmt.Sprintf("x%d", i), "s"), t0, guard.Run)
	}
	// A job held before the guard was turned off waits for an operator.
	want(t, off, offboard("b", "s"), t0, guard.Hold)
	// The longest source the schema allows, in four-byte characters,
	// still makes valid keys.
	long := strings.Repeat("\U0001F600", 256)
	want(t, g, offboard("l1", long), t0, guard.Run)
	want(t, g, offboard("l2", long), t0, guard.Hold)
	if hs, err := g.List(context.Background(), guard.Filter{Source: long, BySource: true}); err != nil || len(hs) != 1 || hs[0].Source != long {
		t.Fatalf("held under the long source: %d, %v", len(hs), err)
	}
}

func TestTwoReplicasNeverAdmitMoreThanTheLimit(t *testing.T) {
	s := startServer(t)
	const limit, per = 10, 20
	gs := []*guard.Guard{newGuard(t, s.client(t), limit), newGuard(t, s.client(t), limit)}
	var mu sync.Mutex
	count := map[guard.Decision]int{}
	var wg sync.WaitGroup
	errs := make(chan error, 2*per)
	for r, g := range gs {
		for i := range per {
			wg.Go(func() {
				d, err := g.Admit(context.Background(), offboard(fmt.Sprintf("r%d-%d", r, i), "hr.scim"), t0)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				count[d]++
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if count[guard.Run] != limit || count[guard.Hold] != 2*per-limit {
		t.Fatalf("decisions %v, want %d run and %d held", count, limit, 2*per-limit)
	}
	hs, err := gs[1].List(context.Background(), guard.Filter{Source: "hr.scim", BySource: true})
	if err != nil || len(hs) != 2*per-limit {
		t.Fatalf("held records: %d (%v), want %d", len(hs), err, 2*per-limit)
	}
}

// jobMsgs reads the messages re-published to the job subjects.
func jobMsgs(t *testing.T, js jetstream.JetStream) []jetstream.RawStreamMsg {
	t.Helper()
	return streamMsgs(t, js, "JOBS")
}

// auditRecords reads the audit trail, checking each record's subject.
func auditRecords(t *testing.T, js jetstream.JetStream) []audit.Record {
	t.Helper()
	var out []audit.Record
	for _, m := range streamMsgs(t, js, audit.Stream) {
		var r audit.Record
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		if m.Subject != audit.SubjectPrefix+r.Action {
			t.Fatalf("audit record %s on %s", r.Action, m.Subject)
		}
		out = append(out, r)
	}
	return out
}

// streamMsgs reads every message the stream holds, oldest first.
func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) []jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *m)
	}
	return out
}

func TestReleaseAndDiscard(t *testing.T) {
	js := startServer(t).client(t)
	g := newGuard(t, js, 1)
	ctx := context.Background()
	want(t, g, offboard("ok", "hr.scim"), t0, guard.Run)
	for i := range 4 {
		want(t, g, offboard(fmt.Sprintf("h%d", i), "hr.scim"), t0.Add(time.Minute), guard.Hold)
	}
	op := guard.Operator{By: "ops-anna", Reason: "reviewed with HR"}
	if _, err := g.Release(ctx, guard.Filter{}, op, t0); err == nil {
		t.Fatal("a release without a selector was accepted")
	}

	rep, err := g.Release(ctx, guard.Filter{JobID: "h1"}, op, t0.Add(2*time.Minute))
	if err != nil || len(rep.Done) != 1 || rep.Done[0] != "h1" {
		t.Fatalf("release h1: %+v, %v", rep, err)
	}
	msgs := jobMsgs(t, js)
	if len(msgs) != 1 {
		t.Fatalf("%d messages re-published, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Subject != "mfa.jobs.offboard" || !strings.Contains(string(m.Data), `"id":"h1"`) ||
		!strings.HasPrefix(m.Header.Get("Nats-Msg-Id"), "h1:guard:released:") ||
		m.Header.Get(job.HeaderJobTime) != t0.Add(-time.Hour).Format(time.RFC3339Nano) ||
		m.Header.Get("Mfa-Replay") != "7" || m.Header.Get(guard.HeaderGuard) != "released" {
		t.Fatalf("re-published %s %s %v", m.Subject, m.Data, m.Header)
	}
	// The released job runs whatever the count; the others stay held.
	want(t, g, offboard("h1", "hr.scim"), t0.Add(3*time.Minute), guard.Released)
	want(t, g, offboard("h0", "hr.scim"), t0.Add(3*time.Minute), guard.Hold)
	// Released again: nothing happens.
	rep, err = g.Release(ctx, guard.Filter{JobID: "h1"}, op, t0.Add(4*time.Minute))
	if err != nil || len(rep.Done) != 0 || len(rep.Skipped) != 1 || len(jobMsgs(t, js)) != 1 {
		t.Fatalf("second release of h1: %+v, %v, %d messages", rep, err, len(jobMsgs(t, js)))
	}

	rep, err = g.Discard(ctx, guard.Filter{Source: "hr.scim", BySource: true}, op, t0.Add(5*time.Minute))
	if err != nil || len(rep.Done) != 3 {
		t.Fatalf("discard: %+v, %v", rep, err)
	}
	msgs = jobMsgs(t, js)
	if len(msgs) != 4 {
		t.Fatalf("%d messages, want 4", len(msgs))
	}
	for _, m := range msgs[1:] {
		if m.Header.Get(guard.HeaderGuard) != "discarded" || !strings.Contains(m.Header.Get("Nats-Msg-Id"), ":guard:discarded:") {
			t.Fatalf("discarded job re-published with %v", m.Header)
		}
	}
	for _, id := range []string{"h0", "h2", "h3"} {
		want(t, g, offboard(id, "hr.scim"), t0.Add(6*time.Minute), guard.Discarded)
	}
	// Nothing is held: the trip is cleared and counting resumes (the
	// window still holds "ok" until an hour has passed).
	if at, err := g.Tripped(ctx, "hr.scim"); err != nil || !at.IsZero() {
		t.Fatalf("still tripped since %v (%v)", at, err)
	}
	want(t, g, offboard("late", "hr.scim"), t0.Add(61*time.Minute), guard.Run)
	hs, err := g.List(ctx, guard.Filter{})
	if err != nil || len(hs) != 0 {
		t.Fatalf("held after the decisions: %+v (%v)", hs, err)
	}
	all, err := g.List(ctx, guard.Filter{AllStates: true})
	if err != nil || len(all) != 4 {
		t.Fatalf("records: %d (%v)", len(all), err)
	}
	for _, h := range all {
		if h.DecidedBy != "ops-anna" || h.Reason != "reviewed with HR" || !h.Published {
			t.Fatalf("record %+v lacks who decided", h)
		}
	}
	if h, err := g.Lookup(ctx, "h2"); err != nil || h == nil || h.State != guard.StateDiscarded {
		t.Fatalf("lookup h2: %+v, %v", h, err)
	}
	if h, err := g.Lookup(ctx, "never"); err != nil || h != nil {
		t.Fatalf("lookup of an unknown job: %+v, %v", h, err)
	}
	recs := auditRecords(t, js)
	if len(recs) != 2 || recs[0].Action != audit.ActionHoldRelease || recs[0].Count != 1 || recs[0].JobIDs[0] != "h1" ||
		recs[1].Action != audit.ActionHoldDiscard || recs[1].Count != 3 || recs[1].Source != "hr.scim" || recs[1].By != "ops-anna" {
		t.Fatalf("audit records %+v", recs)
	}
}

func TestAReleaseCutShortIsPublishedByTheNextCommand(t *testing.T) {
	js := startServer(t).client(t)
	g := newGuard(t, js, 1)
	ctx := context.Background()
	want(t, g, offboard("a", "s"), t0, guard.Run)
	want(t, g, offboard("b", "s"), t0, guard.Hold)
	// A command that died after marking the record released but before
	// publishing: the record says released, unpublished.
	kv, err := js.KeyValue(ctx, guard.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, guard.HeldKey("s", "b"))
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		t.Fatal(err)
	}
	h["state"] = "released"
	b, _ := json.Marshal(h)
	if _, err := kv.Update(ctx, guard.HeldKey("s", "b"), b, e.Revision()); err != nil {
		t.Fatal(err)
	}
	if len(jobMsgs(t, js)) != 0 {
		t.Fatal("published already")
	}
	for range 2 {
		if _, err := g.Release(ctx, guard.Filter{Source: "s", BySource: true}, guard.Operator{By: "x"}, t0); err != nil {
			t.Fatal(err)
		}
	}
	msgs := jobMsgs(t, js)
	if len(msgs) != 1 || msgs[0].Header.Get(guard.HeaderGuard) != "released" {
		t.Fatalf("after two releases: %d messages", len(msgs))
	}
}

func TestHoldsSurviveANATSRestart(t *testing.T) {
	s := startServer(t)
	js := s.client(t)
	g := newGuard(t, js, 2)
	want(t, g, offboard("a", "hr.scim"), t0, guard.Run)
	want(t, g, offboard("b", "hr.scim"), t0, guard.Run)
	want(t, g, offboard("c", "hr.scim"), t0, guard.Hold)

	s.stop()
	s.start()

	// A fresh client and guard (a restarted worker) on the same store.
	g2 := newGuard(t, s.client(t), 2)
	want(t, g2, offboard("c", "hr.scim"), t0.Add(time.Minute), guard.Hold)
	want(t, g2, offboard("a", "hr.scim"), t0.Add(time.Minute), guard.Run)
	want(t, g2, offboard("d", "hr.scim"), t0.Add(2*time.Hour), guard.Hold)
	// The first client reconnects and sees the same.
	var hs []guard.Held
	var err error
	testenv.Eventually(t, 10*time.Second, func() bool {
		hs, err = g.List(context.Background(), guard.Filter{})
		return err == nil
	}, func() string { return fmt.Sprintf("list after the restart: %v", err) })
	if len(hs) != 2 || hs[0].JobID != "c" || hs[1].JobID != "d" {
		t.Fatalf("held after the restart: %+v", hs)
	}
	rep, err := g2.Release(context.Background(), guard.Filter{Source: "hr.scim", BySource: true}, guard.Operator{By: "ops"}, t0.Add(3*time.Hour))
	if err != nil || len(rep.Done) != 2 {
		t.Fatalf("release after the restart: %+v, %v", rep, err)
	}
}

func TestEndedByACancel(t *testing.T) {
	js := startServer(t).client(t)
	g := newGuard(t, js, 1)
	ctx := context.Background()
	want(t, g, offboard("a", "s"), t0, guard.Run)
	want(t, g, offboard("b", "s"), t0, guard.Hold)
	if err := g.Ended(ctx, "s", "b", "cancel-1", t0); err != nil {
		t.Fatal(err)
	}
	if at, err := g.Tripped(ctx, "s"); err != nil || !at.IsZero() {
		t.Fatalf("tripped at %v (%v) with nothing held", at, err)
	}
	rep, err := g.Release(ctx, guard.Filter{JobID: "b"}, guard.Operator{By: "x"}, t0)
	if err != nil || len(rep.Done) != 0 || len(rep.Skipped) != 1 || !strings.Contains(rep.Skipped[0], "cancelled") {
		t.Fatalf("release of a cancelled hold: %+v, %v", rep, err)
	}
	// A job the guard does not hold is left alone.
	if err := g.Ended(ctx, "s", "zzz", "cancel-2", t0); err != nil {
		t.Fatal(err)
	}
}

func TestWatchHeldCountsPerSource(t *testing.T) {
	js := startServer(t).client(t)
	g := newGuard(t, js, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	want(t, g, offboard("a", "s1"), t0, guard.Run)
	want(t, g, offboard("b", "s1"), t0, guard.Hold)

	got := make(chan map[string]int, 100)
	done := make(chan error, 1)
	go func() { done <- g.WatchHeld(ctx, func(m map[string]int) { got <- m }) }()
	wait := func(want map[string]int) {
		t.Helper()
		var last map[string]int
		testenv.Eventually(t, 10*time.Second, func() bool {
			for {
				select {
				case last = <-got:
					if fmt.Sprint(last) == fmt.Sprint(want) {
						return true
					}
				default:
					return false
				}
			}
		}, func() string { return fmt.Sprintf("never saw %v; the last count was %v", want, last) })
	}
	wait(map[string]int{"s1": 1})
	want(t, g, offboard("c", "s1"), t0, guard.Hold)
	want(t, g, offboard("x", ""), t0, guard.Run)
	want(t, g, offboard("y", ""), t0, guard.Hold)
	wait(map[string]int{"": 1, "s1": 2})
	if _, err := g.Discard(context.Background(), guard.Filter{BySource: true, Source: "s1"}, guard.Operator{By: "x"}, t0); err != nil {
		t.Fatal(err)
	}
	wait(map[string]int{"": 1})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  guard.Config
		bad  []string
		name string
	}{
		{guard.DefaultConfig(), nil, "defaults"},
		{guard.Config{Limit: 0, Window: time.Hour}, nil, "off"},
		{guard.Config{Limit: 50}, nil, "window defaults to 1h"},
		{guard.Config{Limit: -1, Window: time.Hour}, []string{"WORKER_GUARD_LIMIT"}, "negative"},
		{guard.Config{Limit: guard.MaxLimit + 1, Window: time.Hour}, []string{"WORKER_GUARD_LIMIT"}, "too large"},
		{guard.Config{Limit: 5, Window: time.Second}, []string{"WORKER_GUARD_WINDOW"}, "short window"},
		{guard.Config{Limit: -5, Window: 30 * 24 * time.Hour}, []string{"WORKER_GUARD_LIMIT", "WORKER_GUARD_WINDOW"}, "both"},
	} {
		err := tc.cfg.Validate()
		var settings []string
		var one *config.Error
		var many *config.Errors
		switch {
		case errors.As(err, &many):
			for _, e := range many.Unwrap() {
				var ce *config.Error
				if errors.As(e, &ce) {
					settings = append(settings, ce.Setting)
				}
			}
		case errors.As(err, &one):
			settings = append(settings, one.Setting)
		case err != nil:
			t.Fatalf("%s: %T %v", tc.name, err, err)
		}
		if strings.Join(settings, ",") != strings.Join(tc.bad, ",") {
			t.Errorf("%s: problems with %v, want %v (%v)", tc.name, settings, tc.bad, err)
		}
	}
}

func TestAWorkerKilledBetweenStoreAndTripStillTrips(t *testing.T) {
	js := startServer(t).client(t)
	g := newGuard(t, js, 5)
	ctx := context.Background()
	// The held record exists, the window was never tripped: the worker
	// died in between, and the job's message was not acknowledged.
	kv, err := js.KeyValue(ctx, guard.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(guard.Held{JobID: "z", Type: job.TypeOffboard, Source: "s2", Body: []byte(`{}`), State: guard.StateHeld, HeldAt: t0})
	if _, err := kv.Create(ctx, guard.HeldKey("s2", "z"), rec); err != nil {
		t.Fatal(err)
	}
	// Its redelivery is held again and trips the source, so the next job
	// of the source is held although the window has room.
	want(t, g, offboard("z", "s2"), t0, guard.Hold)
	if at, err := g.Tripped(ctx, "s2"); err != nil || at.IsZero() {
		t.Fatalf("not tripped (%v)", err)
	}
	want(t, g, offboard("y", "s2"), t0, guard.Hold)
}

func TestNoDecisionWithoutNATS(t *testing.T) {
	s := startServer(t)
	g := newGuard(t, s.client(t), 5)
	s.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d, err := g.Admit(ctx, offboard("a", "s"), t0)
	if err == nil || d != guard.Undecided {
		t.Fatalf("admit without NATS: %s, %v; want undecided and an error", d, err)
	}
	// Other types never need the guard.
	e := offboard("e", "s")
	e.Type = job.TypeVerify
	if d, err := g.Admit(ctx, e, t0); err != nil || d != guard.Run {
		t.Fatalf("verify without NATS: %s, %v", d, err)
	}
}

func TestACorruptWindowHoldsAndIsRepaired(t *testing.T) {
	js := startServer(t).client(t)
	g := newGuard(t, js, 5)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, guard.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, guard.WindowKey("s"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	want(t, g, offboard("a", "s"), t0, guard.Hold)
	// The window was rewritten as tripped; a release clears it.
	if at, err := g.Tripped(ctx, "s"); err != nil || at.IsZero() {
		t.Fatalf("tripped at %v (%v)", at, err)
	}
	if _, err := g.Release(ctx, guard.Filter{Source: "s", BySource: true}, guard.Operator{By: "x"}, t0); err != nil {
		t.Fatal(err)
	}
	want(t, g, offboard("b", "s"), t0, guard.Run)
}

func TestHeldGaugeFollowsThroughANATSRestart(t *testing.T) {
	s := startServer(t)
	g := newGuard(t, s.client(t), 1)
	want(t, g, offboard("a", "s"), t0, guard.Run)
	want(t, g, offboard("b", "s"), t0, guard.Hold)
	var mu sync.Mutex
	last := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.RunHeldGauge(ctx, func(m map[string]int) {
			mu.Lock()
			last = m
			mu.Unlock()
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() { cancel(); <-done }()
	gauge := func() int {
		mu.Lock()
		defer mu.Unlock()
		return last["s"]
	}
	waitFor := func(n int) {
		t.Helper()
		// After a restart the watch's ordered consumer notices its missed
		// heartbeats (5 s apart) and resumes: about 20 s.
		testenv.Eventually(t, 60*time.Second, func() bool { return gauge() == n }, func() string {
			return fmt.Sprintf("gauge of s: %d, want %d", gauge(), n)
		})
	}
	waitFor(1)
	s.stop()
	s.start()
	restarted := time.Now()
	// The same client reconnects; holds made after the restart are seen.
	var err error
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, err = g.Admit(context.Background(), offboard("c", "s"), t0)
		return err == nil
	}, func() string { return fmt.Sprintf("admit after the restart: %v", err) })
	t.Logf("admitting again %v after the restart", time.Since(restarted))
	want(t, g, offboard("d", "s"), t0, guard.Hold)
	waitFor(3)
	t.Logf("gauge caught up %v after the restart", time.Since(restarted))
}

// TestAnUnseenJobSkipsTheReadNotTheHold: a job whose delivery created its
// ledger record is admitted without looking for a held record first; a
// held record of the same id is still found when the limit is reached
// (its create fails and the record's decision is answered), so an unseen
// flag never runs a held job past the limit.
func TestAnUnseenJobSkipsTheReadNotTheHold(t *testing.T) {
	js := startServer(t).client(t)
	g := newGuard(t, js, 1)
	unseen := func(id string) guard.Job { j := offboard(id, "s"); j.Unseen = true; return j }
	want(t, g, unseen("a"), t0, guard.Run)
	want(t, g, unseen("b"), t0, guard.Hold)
	// b again as if unseen (its ledger record gone): still held.
	want(t, g, unseen("b"), t0.Add(time.Minute), guard.Hold)
	if _, err := g.Release(context.Background(), guard.Filter{JobID: "b"}, guard.Operator{By: "ops", Reason: "r"}, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Released: a is still counted, so b's create finds the record and
	// answers its decision, seen or not.
	want(t, g, unseen("b"), t0.Add(3*time.Minute), guard.Released)
	want(t, g, offboard("b", "s"), t0.Add(3*time.Minute), guard.Released)
	// Off (limit 0), an unseen job runs without a read; a seen one finds
	// its hold.
	want(t, g, unseen("c"), t0.Add(3*time.Minute), guard.Hold)
	off := newGuard(t, js, 0)
	want(t, off, unseen("d"), t0.Add(3*time.Minute), guard.Run)
	want(t, off, offboard("c", "s"), t0.Add(3*time.Minute), guard.Hold)
}
