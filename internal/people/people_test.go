package people_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/audit"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/people"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

func buckets(t *testing.T, js jetstream.JetStream) (peopleKV, ledgerKV jetstream.KeyValue) {
	t.Helper()
	ctx := context.Background()
	var err error
	if peopleKV, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: people.Bucket}); err != nil {
		t.Fatal(err)
	}
	if ledgerKV, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: people.LedgerBucket}); err != nil {
		t.Fatal(err)
	}
	if err := audit.Provision(ctx, js, audit.Config{}); err != nil {
		t.Fatal(err)
	}
	return peopleKV, ledgerKV
}

func TestClearAPoisonedRecord(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	pkv, lkv := buckets(t, js)
	ctx := context.Background()
	now := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)
	store := ledger.NewPeople(pkv)
	poison := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := store.RecordOffboard(ctx, 42, poison, "hr:x:offboard"); err != nil {
		t.Fatal(err)
	}

	r, err := people.Show(ctx, pkv, 42)
	if err != nil || r == nil || !r.OffboardedAt.Equal(poison) || r.JobID != "hr:x:offboard" || !r.Poisoned(now) {
		t.Fatalf("show: %+v, %v", r, err)
	}
	if r, err := people.Show(ctx, pkv, 43); err != nil || r != nil {
		t.Fatalf("show of nobody: %+v, %v", r, err)
	}
	if _, err := people.Clear(ctx, js, 42, r.Revision, people.Operator{By: "anna"}, now); err == nil {
		t.Fatal("a clear without a reason was accepted")
	}
	if _, err := people.Clear(ctx, js, 42, r.Revision+7, people.Operator{By: "anna", Reason: "clock ran ahead"}, now); !errors.Is(err, people.ErrChanged) {
		t.Fatalf("clear at another revision: %v", err)
	}
	was, err := people.Clear(ctx, js, 42, r.Revision, people.Operator{By: "anna", Reason: "clock ran ahead"}, now)
	if err != nil || !was.OffboardedAt.Equal(poison) {
		t.Fatalf("clear: %+v, %v", was, err)
	}
	// The worker's resurrection guard sees no offboard any more.
	if at, _, err := store.Offboarded(ctx, 42); err != nil || !at.IsZero() {
		t.Fatalf("offboarded at %v (%v) after the clear", at, err)
	}
	after, err := people.Show(ctx, pkv, 42)
	if err != nil || after.Cleared == nil || after.Cleared.By != "anna" || !after.Cleared.WasOffboardedAt.Equal(poison) || after.Poisoned(now) {
		t.Fatalf("after the clear: %+v, %v", after, err)
	}
	if _, err := people.Clear(ctx, js, 42, 0, people.Operator{By: "anna", Reason: "again"}, now); !errors.Is(err, people.ErrNothing) {
		t.Fatalf("second clear: %v", err)
	}
	// The grant is spent.
	e, err := lkv.Get(ctx, people.GrantKey(42, r.Revision))
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ State, By string }
	if err := json.Unmarshal(e.Value(), &g); err != nil || g.State != ledger.GrantUsed || g.By != "anna" {
		t.Fatalf("grant %s (%v)", e.Value(), err)
	}
	// The audit trail.
	s, err := js.Stream(ctx, audit.Stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "mfa.audit.people.clear")
	if err != nil {
		t.Fatal(err)
	}
	var rec audit.Record
	if err := json.Unmarshal(m.Data, &rec); err != nil || rec.UserID != 42 || rec.Reason != "clock ran ahead" || rec.Details["was_offboarded_at"] != "2099-01-01T00:00:00Z" {
		t.Fatalf("audit record %s (%v)", m.Data, err)
	}
	// A later offboard is recorded over the cleared record.
	if err := store.RecordOffboard(ctx, 42, now, "hr:y:offboard"); err != nil {
		t.Fatal(err)
	}
	if at, by, err := store.Offboarded(ctx, 42); err != nil || !at.Equal(now) || by != "hr:y:offboard" {
		t.Fatalf("offboard after the clear: %v %s %v", at, by, err)
	}
}

func TestClearNeedsTheAuditStream(t *testing.T) {
	_, _, js := testenv.JetStream(t)
	ctx := context.Background()
	pkv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: people.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: people.LedgerBucket}); err != nil {
		t.Fatal(err)
	}
	if err := ledger.NewPeople(pkv).RecordOffboard(ctx, 7, time.Now(), "j"); err != nil {
		t.Fatal(err)
	}
	if _, err := people.Clear(ctx, js, 7, 0, people.Operator{By: "a", Reason: "b"}, time.Now()); err == nil {
		t.Fatal("cleared without an audit record")
	}
	if at, _, err := ledger.NewPeople(pkv).Offboarded(ctx, 7); err != nil || at.IsZero() {
		t.Fatalf("the record was cleared although the audit record failed: %v %v", at, err)
	}
}
