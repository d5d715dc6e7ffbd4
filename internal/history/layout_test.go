package history_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// publishOld appends e as a version before kept subjects did: on subj,
// whatever its kind.
func publishOld(tb testing.TB, e *env, subj string, en history.Entry) {
	tb.Helper()
	b, err := json.Marshal(en)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := e.js.Publish(context.Background(), subj, b); err != nil {
		tb.Fatal(err)
	}
}

// TestUpgradeLayoutCopiesOldKeptEntries: an offboard (and an unresolved
// one) appended under the earlier layout is copied to a kept subject once,
// so 1,000 later rejected jobs do not push it out, and it is listed once.
func TestUpgradeLayoutCopiesOldKeptEntries(t *testing.T) {
	e := newEnv(t, history.Config{})
	ctx := context.Background()
	off := entry(12, 0)
	publishOld(t, e, history.UserSubject(12), off)
	verify := entry(12, 1)
	verify.JobID, verify.Type = "old-verify", "verify"
	publishOld(t, e, history.UserSubject(12), verify)
	sel := entry(0, 2)
	sel.JobID, sel.UserID, sel.Outcome, sel.ErrorCode = "old-sel-offboard", 0, "failed", "user_not_found"
	sel.User = &history.Selector{Email: "old@example.com"}
	sum := sha256.Sum256([]byte("old@example.com"))
	publishOld(t, e, "mfa.history.unresolved.email."+hex.EncodeToString(sum[:]), sel)

	n, err := e.store.UpgradeLayout(ctx)
	if err != nil || n != 2 {
		t.Fatalf("upgrade copied %d, %v; want 2", n, err)
	}
	if n, err := e.store.UpgradeLayout(ctx); err != nil || n != 0 {
		t.Fatalf("a second upgrade copied %d, %v; want 0", n, err)
	}
	// A replica of the earlier version, during a rolling upgrade, indexes
	// one more offboard on the routine subject: the next start copies it,
	// and only it.
	late := entry(12, 2)
	late.JobID = "late-old-offboard"
	publishOld(t, e, history.UserSubject(12), late)
	if n, err := e.store.UpgradeLayout(ctx); err != nil || n != 1 {
		t.Fatalf("the upgrade after a late old entry copied %d, %v; want 1", n, err)
	}

	for i := 3; i < 1003; i++ {
		for _, en := range []history.Entry{rejected(12, i), func() history.Entry {
			r := rejected(0, i)
			r.User = sel.User
			return r
		}()} {
			if err := e.store.Append(ctx, en, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := e.store.Query(ctx, 12, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"rej-12-1002", "rej-12-1001", "rej-12-1000", "rej-12-999", "rej-12-998", "rej-12-997", "rej-12-996", "rej-12-995", late.JobID, off.JobID}; !slices.Equal(jobIDs(got), want) {
		t.Fatalf("user: got %v, want %v", jobIDs(got), want)
	}
	got, err = e.store.QuerySelector(ctx, *sel.User, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"rej-0-1002", sel.JobID}; !slices.Equal(jobIDs(got), want) {
		t.Fatalf("selector: got %v, want %v", jobIDs(got), want)
	}
	// The old verify, routine, was pushed out as before.
	all, err := e.store.Query(ctx, 12, history.MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(jobIDs(all), "old-verify") {
		t.Fatal("the routine entry of the earlier layout outlived 1,000 newer ones")
	}
}

// TestIndexUpgradesTheLayout: the index copies the earlier layout's kept
// entries at its start, once per stream.
func TestIndexUpgradesTheLayout(t *testing.T) {
	e := newEnv(t, history.Config{})
	ctx := context.Background()
	for i := range 3 {
		publishOld(t, e, history.UserSubject(int64(50+i)), entry(int64(50+i), i))
	}
	startIndexer(t, e)
	stream, err := e.js.Stream(ctx, history.Stream)
	if err != nil {
		t.Fatal(err)
	}
	var kept uint64
	var gerr error
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, gerr = stream.GetLastMsgForSubject(ctx, "mfa.history.layout")
		return gerr == nil
	}, func() string { return fmt.Sprintf("no layout marker: %v", gerr) })
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter("mfa.history.kept.>"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range info.State.Subjects {
		kept += n
	}
	if kept != 3 || len(info.State.Subjects) != 3 {
		t.Fatalf("%d kept entries on %d subjects, want 3 on 3: %v", kept, len(info.State.Subjects), fmt.Sprint(info.State.Subjects))
	}
}
