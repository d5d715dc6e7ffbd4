package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// bucket is a fresh KV bucket on an embedded server.
func bucket(t *testing.T, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	_, _, js := testenv.JetStream(t)
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "T", TTL: ttl, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestLedgerCreateConflictUpdate(t *testing.T) {
	ctx := context.Background()
	l := ledger.New(bucket(t, time.Hour))
	rec := ledger.Record{State: ledger.Running, Hash: "h1", Owner: "a", UpdatedAt: time.Now()}
	rev, err := l.Create(ctx, "job-1", rec)
	if err != nil || rev == 0 {
		t.Fatalf("create: %d %v", rev, err)
	}
	if _, err := l.Create(ctx, "job-1", rec); !errors.Is(err, ledger.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	e, err := l.Get(ctx, "job-1")
	if err != nil || e.Revision != rev || e.Owner != "a" || e.Hash != "h1" {
		t.Fatalf("get: %+v %v", e, err)
	}
	if _, err := l.Get(ctx, "job-2"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("get of an unknown id: %v, want ErrNotFound", err)
	}
	rec.State, rec.Outcome = ledger.Finished, "succeeded"
	rev2, err := l.Update(ctx, "job-1", rec, rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("update: %d %v", rev2, err)
	}
	// A stale revision is a conflict, not an existence error.
	_, err = l.Update(ctx, "job-1", rec, rev)
	if !errors.Is(err, ledger.ErrConflict) || errors.Is(err, ledger.ErrExists) {
		t.Fatalf("update at a stale revision: %v, want ErrConflict", err)
	}
	if e, _ := l.Get(ctx, "job-1"); e.State != ledger.Finished || e.Revision != rev2 {
		t.Fatalf("after update: %+v", e)
	}
	// Updating a record that does not exist at that revision conflicts too.
	if _, err := l.Update(ctx, "job-3", rec, 99); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("update of a missing record: %v", err)
	}
}

func TestLedgerKeysOfOddIDs(t *testing.T) {
	ctx := context.Background()
	l := ledger.New(bucket(t, time.Hour))
	ids := []string{"a b", "a.b", "a*b", "a>b", "a/b", "a=b", "a:b", "~!", "...", "*", ">", "a\\b", `"q"`, "x-y_z", "A", "a"}
	for i, id := range ids {
		if _, err := l.Create(ctx, id, ledger.Record{State: ledger.Running, Hash: fmt.Sprint(i)}); err != nil {
			t.Fatalf("create %q: %v", id, err)
		}
	}
	for i, id := range ids {
		e, err := l.Get(ctx, id)
		if err != nil || e.Hash != fmt.Sprint(i) {
			t.Errorf("%q: %+v %v", id, e, err)
		}
	}
	if ledger.Key("a.b") == ledger.Key("a/b") || ledger.Key("A") == ledger.Key("a") {
		t.Error("keys collide")
	}
}

func TestLedgerRecordsExpire(t *testing.T) {
	ctx := context.Background()
	l := ledger.New(bucket(t, time.Second))
	if _, err := l.Create(ctx, "short", ledger.Record{State: ledger.Running}); err != nil {
		t.Fatal(err)
	}
	var err error
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err = l.Get(ctx, "short")
		return errors.Is(err, ledger.ErrNotFound)
	}, func() string { return fmt.Sprintf("record still there after its TTL: %v", err) })
	// An expired id can be claimed afresh.
	if _, err := l.Create(ctx, "short", ledger.Record{State: ledger.Running}); err != nil {
		t.Fatalf("create after expiry: %v", err)
	}
}

func TestLocks(t *testing.T) {
	ctx := context.Background()
	kv := bucket(t, time.Hour)
	a, b := ledger.NewLocks(kv, "a", time.Hour), ledger.NewLocks(kv, "b", time.Hour)
	rev, ok, _, err := a.TryAcquire(ctx, 7, "j1")
	if err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	if _, ok, h, err := b.TryAcquire(ctx, 7, "j2"); err != nil || ok || h.Job != "j1" || h.Rev != rev {
		t.Fatalf("second holder: ok %v, holder %+v (want j1 at %d), %v", ok, h, rev, err)
	}
	rev2, err := a.Renew(ctx, 7, "j1", rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("renew: %v", err)
	}
	if _, err := a.Renew(ctx, 7, "j1", rev); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("renew at a stale revision: %v", err)
	}
	if err := a.Release(ctx, 7, rev); err != nil {
		t.Fatalf("release at a stale revision is a no-op: %v", err)
	}
	if _, ok, _, _ := b.TryAcquire(ctx, 7, "j2"); ok {
		t.Fatal("a stale release freed the lock")
	}
	if err := a.Release(ctx, 7, rev2); err != nil {
		t.Fatal(err)
	}
	if _, ok, _, err := b.TryAcquire(ctx, 7, "j2"); err != nil || !ok {
		t.Fatalf("acquire after release: %v %v", ok, err)
	}
}

// A kept lock stays, naming its finished job: its replica takes it again
// with one write, another takes it over only at its current revision.
func TestKeptLocks(t *testing.T) {
	ctx := context.Background()
	kv := bucket(t, time.Hour)
	a, b := ledger.NewLocks(kv, "a", time.Hour), ledger.NewLocks(kv, "b", time.Hour)
	rev, ok, _, err := a.TryAcquire(ctx, 8, "j1")
	if err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	a.Keep(8, rev)
	_, ok, h, err := b.TryAcquire(ctx, 8, "j2")
	if err != nil || ok || h.Job != "j1" || h.Rev != rev {
		t.Fatalf("a kept lock: ok %v, holder %+v, %v", ok, h, err)
	}
	again, ok, _, err := a.TryAcquire(ctx, 8, "j3")
	if err != nil || !ok || again != rev+1 {
		t.Fatalf("the keeper takes its lock again: rev %d (want %d), ok %v, %v", again, rev+1, ok, err)
	}
	if _, ok, err := b.TakeOver(ctx, 8, "j2", h.Rev); err != nil || ok {
		t.Fatalf("take-over at a stale revision: ok %v, %v", ok, err)
	}
	a.Keep(8, again)
	_, _, h, _ = b.TryAcquire(ctx, 8, "j2")
	if h.Job != "j3" {
		t.Fatalf("holder %+v, want j3", h)
	}
	took, ok, err := b.TakeOver(ctx, 8, "j2", h.Rev)
	if err != nil || !ok {
		t.Fatalf("take-over: ok %v, %v", ok, err)
	}
	// The keeper's revision is stale now: it finds the lock held by j2.
	if _, ok, h, err := a.TryAcquire(ctx, 8, "j4"); err != nil || ok || h.Job != "j2" || h.Rev != took {
		t.Fatalf("after a take-over: ok %v, holder %+v, %v", ok, h, err)
	}
	if err := b.Release(ctx, 8, took); err != nil {
		t.Fatal(err)
	}
	if _, ok, _, err := a.TryAcquire(ctx, 8, "j4"); err != nil || !ok {
		t.Fatalf("acquire after release: %v %v", ok, err)
	}
}

// An offboard's time is recorded only when later than the one there, also
// when offboards of one user race.
func TestPeopleKeepsTheLatestOffboard(t *testing.T) {
	ctx := context.Background()
	p := ledger.NewPeople(bucket(t, 0))
	if at, by, err := p.Offboarded(ctx, 7); err != nil || !at.IsZero() || by != "" {
		t.Fatalf("nobody offboarded yet: %v %q %v", at, by, err)
	}
	base := time.Date(2026, 11, 27, 17, 0, 0, 0, time.UTC)
	if err := p.RecordOffboard(ctx, 7, base, "off-a"); err != nil {
		t.Fatal(err)
	}
	if err := p.RecordOffboard(ctx, 7, base.Add(-time.Hour), "off-earlier"); err != nil {
		t.Fatal(err)
	}
	if at, by, _ := p.Offboarded(ctx, 7); !at.Equal(base) || by != "off-a" {
		t.Fatalf("an earlier offboard replaced a later one: %v %s", at, by)
	}
	done := make(chan error, 20)
	for i := range 20 {
		go func() {
			done <- p.RecordOffboard(ctx, 7, base.Add(time.Duration(i+1)*time.Minute), fmt.Sprintf("off-%d", i))
		}()
	}
	for range 20 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if at, by, _ := p.Offboarded(ctx, 7); !at.Equal(base.Add(20*time.Minute)) || by != "off-19" {
		t.Fatalf("after racing offboards: %v %s, want the latest", at, by)
	}
	if at, _, _ := p.Offboarded(ctx, 8); !at.IsZero() {
		t.Fatalf("another user: %v", at)
	}
}
