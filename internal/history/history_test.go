package history_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// env is a real embedded NATS server with MFA_HISTORY provisioned.
type env struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	store *history.Store
}

func newEnv(tb testing.TB, cfg history.Config) *env {
	tb.Helper()
	_, nc, js := testenv.JetStream(tb)
	if err := history.Provision(context.Background(), js, cfg); err != nil {
		tb.Fatal(err)
	}
	return &env{nc: nc, js: js, store: history.New(js)}
}

var base = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

func entry(user int64, i int) history.Entry {
	start := base.Add(time.Duration(i) * time.Second)
	return history.Entry{
		JobID: fmt.Sprintf("job-%d-%d", user, i), Type: "offboard", UserID: user, Outcome: "succeeded",
		StartedAt: start, FinishedAt: start.Add(40 * time.Millisecond), DurationMS: 40, Attempts: 1,
		CorrelationID: fmt.Sprintf("corr-%d", i), Source: "hr.test",
	}
}

// fill stores total entries spread over people 1..people, with the entries
// of target (appended through Store.Append) interleaved evenly among the
// others (published asynchronously, in the encoding Append uses, to keep the
// set-up quick). It returns the target's job ids in append order.
func (e *env) fill(tb testing.TB, total, people int, target int64, targetN int) []string {
	tb.Helper()
	ctx := context.Background()
	var ids []string
	every := total / targetN
	for i := 0; i < total; i++ {
		if i%every == every-1 && len(ids) < targetN {
			en := entry(target, i)
			if err := e.store.Append(ctx, en, en.JobID+":result"); err != nil {
				tb.Fatal(err)
			}
			ids = append(ids, en.JobID)
			continue
		}
		user := int64(1 + i%people)
		if user == target {
			user = int64(people + 1)
		}
		b, err := json.Marshal(entry(user, i))
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := e.js.PublishAsync(history.UserSubject(user), b); err != nil {
			tb.Fatal(err)
		}
		if i%5000 == 0 {
			<-e.js.PublishAsyncComplete()
		}
	}
	<-e.js.PublishAsyncComplete()
	s, err := e.js.Stream(ctx, history.Stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if info.State.Msgs != uint64(total) {
		tb.Fatalf("stream holds %d entries, want %d", info.State.Msgs, total)
	}
	return ids
}

func jobIDs(es []history.Entry) []string {
	var ids []string
	for _, e := range es {
		ids = append(ids, e.JobID)
	}
	return ids
}

func TestQueryOnePersonAmong100000(t *testing.T) {
	e := newEnv(t, history.Config{})
	const target = 4242
	ids := e.fill(t, 100_000, 1000, target, 100)
	if len(ids) != 100 {
		t.Fatalf("appended %d entries for the person, want 100", len(ids))
	}
	newest := slices.Clone(ids)
	slices.Reverse(newest)
	ctx := context.Background()

	cases := []struct {
		limit int
		want  []string
	}{
		{500, newest},
		{100, newest},
		{0, newest[:history.DefaultLimit]},
		{10, newest[:10]},
		{1, newest[:1]},
		{100000, newest},
	}
	for _, c := range cases {
		got, err := e.store.Query(ctx, target, c.limit)
		if err != nil {
			t.Fatalf("limit %d: %v", c.limit, err)
		}
		if !slices.Equal(jobIDs(got), c.want) {
			t.Fatalf("limit %d: got %d entries %v..., want %d %v...", c.limit, len(got), head(jobIDs(got)), len(c.want), head(c.want))
		}
		for i, en := range got {
			if en.UserID != target || en.Type != "offboard" || en.Outcome != "succeeded" || en.Source != "hr.test" {
				t.Fatalf("limit %d: entry %d is %+v", c.limit, i, en)
			}
			if i > 0 && en.FinishedAt.After(got[i-1].FinishedAt) {
				t.Fatalf("limit %d: entry %d is newer than the one before it", c.limit, i)
			}
		}
	}
	none, err := e.store.Query(ctx, 999_999, 50)
	if err != nil || len(none) != 0 {
		t.Fatalf("a person without results: %v, %v", none, err)
	}
	if _, err := e.store.Query(ctx, 0, 50); err == nil {
		t.Fatal("user id 0 was accepted")
	}
}

func head(s []string) []string { return s[:min(3, len(s))] }

func TestPerPersonCapKeepsNewest(t *testing.T) {
	e := newEnv(t, history.Config{MaxPerUser: 500})
	ctx := context.Background()
	for i := 0; i < 520; i++ {
		en := entry(7, i)
		en.Type, en.Outcome, en.ErrorCode = "verify", "failed", "invalid_otp"
		if err := e.store.Append(ctx, en, en.JobID+":result"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.store.Query(ctx, 7, 500)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 500 || got[0].JobID != "job-7-519" || got[499].JobID != "job-7-20" {
		t.Fatalf("got %d entries, first %q last %q", len(got), got[0].JobID, got[len(got)-1].JobID)
	}
}

func TestKept(t *testing.T) {
	for _, c := range []struct {
		typ, outcome string
		want         bool
	}{
		{"offboard", "succeeded", true}, {"offboard", "noop", true}, {"offboard", "failed", true}, {"offboard", "cancelled", true},
		{"offboard", "rejected", false}, {"offboard", "expired", false},
		{"remove", "succeeded", true}, {"remove", "failed", true}, {"remove", "cancelled", true}, {"remove", "rejected", false},
		{"enroll", "succeeded", true}, {"activate", "succeeded", true}, {"enroll", "failed", false}, {"enroll", "rejected", false},
		{"verify", "succeeded", false}, {"generate_token", "succeeded", false}, {"cancel", "succeeded", false}, {"cancel", "noop", false},
	} {
		if got := history.Kept(history.Entry{Type: c.typ, Outcome: c.outcome}); got != c.want {
			t.Errorf("%s %s: kept %v, want %v", c.typ, c.outcome, got, c.want)
		}
	}
}

// rejected is a routine entry of user, the i-th second after base: a job
// refused at the door, which costs its publisher nothing.
func rejected(user int64, i int) history.Entry {
	en := entry(user, i)
	en.JobID = fmt.Sprintf("rej-%d-%d", user, i)
	en.Type, en.Outcome, en.ErrorCode = []string{"offboard", "enroll", "remove", "verify"}[i%4], "rejected", "invalid_job"
	en.DurationMS, en.FinishedAt = 0, en.StartedAt
	return en
}

// TestOffboardOutlivesAThousandRejectedJobs: after a person's offboard,
// 1,000 rejected jobs for them (more than the per-person limit of routine
// entries) push out older routine entries but not the offboard, and the
// query still answers at most limit entries, newest first, with the
// offboard among them.
func TestOffboardOutlivesAThousandRejectedJobs(t *testing.T) {
	e := newEnv(t, history.Config{})
	ctx := context.Background()
	const user = 31
	before := entry(user, 0)
	before.JobID, before.Type, before.Outcome = "verify-before", "verify", "succeeded"
	off := entry(user, 1)
	off.JobID = "the-offboard"
	for _, en := range []history.Entry{before, off} {
		if err := e.store.Append(ctx, en, en.JobID+":result"); err != nil {
			t.Fatal(err)
		}
	}
	var rej []string
	for i := 2; i < 1002; i++ {
		en := rejected(user, i)
		if err := e.store.Append(ctx, en, en.JobID+":result"); err != nil {
			t.Fatal(err)
		}
		rej = append(rej, en.JobID)
	}
	slices.Reverse(rej) // newest first

	// The routine subject holds the newest 1,000: the verify before the
	// offboard is gone, the offboard is on a subject of its own.
	info, err := e.js.Stream(ctx, history.Stream)
	if err != nil {
		t.Fatal(err)
	}
	st, err := info.Info(ctx, jetstream.WithSubjectFilter("mfa.history.>"))
	if err != nil {
		t.Fatal(err)
	}
	if n := st.State.Subjects[history.UserSubject(user)]; n != 1000 || st.State.Msgs != 1001 {
		t.Fatalf("routine subject holds %d, stream %d, subjects %d", n, st.State.Msgs, len(st.State.Subjects))
	}

	for _, c := range []struct {
		limit int
		want  []string
	}{
		{history.MaxLimit, append(slices.Clone(rej[:history.MaxLimit-1]), "the-offboard")},
		{0, append(slices.Clone(rej[:history.DefaultLimit-1]), "the-offboard")},
		{2, []string{rej[0], "the-offboard"}},
		{1, []string{"the-offboard"}},
	} {
		got, err := e.store.Query(ctx, user, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(jobIDs(got), c.want) {
			t.Fatalf("limit %d: got %d entries %v...%v, want %d", c.limit, len(got), head(jobIDs(got)), jobIDs(got)[max(0, len(got)-2):], len(c.want))
		}
		if o := got[len(got)-1]; o.Type != "offboard" || o.Outcome != "succeeded" || !o.FinishedAt.Equal(off.FinishedAt) {
			t.Fatalf("limit %d: the offboard reads %+v", c.limit, o)
		}
	}

	// The same through mfa.query.history.
	h := history.NewHandler(e.store, nil, testenv.Quiet())
	rep := h.Answer(ctx, []byte(`{"user_id":31,"limit":500}`))
	if rep.Error != nil || len(rep.Data) != 500 || rep.Data[499].JobID != "the-offboard" || rep.Data[0].JobID != rej[0] {
		t.Fatalf("query: %+v, %d entries", rep.Error, len(rep.Data))
	}
}

// TestQueryGivesKeptEntriesHalfThePlaces: routine entries newer than every
// kept one take at most half of the places; kept entries newer than the
// routine ones are simply the newest.
func TestQueryGivesKeptEntriesHalfThePlaces(t *testing.T) {
	e := newEnv(t, history.Config{})
	ctx := context.Background()
	var kept, routine []string
	for i := range 30 {
		en := entry(9, i) // offboards, kept
		if i%2 == 1 {
			en.Type = "enroll"
		}
		if err := e.store.Append(ctx, en, en.JobID+":result"); err != nil {
			t.Fatal(err)
		}
		kept = append(kept, en.JobID)
	}
	for i := 30; i < 130; i++ {
		en := rejected(9, i)
		if err := e.store.Append(ctx, en, en.JobID+":result"); err != nil {
			t.Fatal(err)
		}
		routine = append(routine, en.JobID)
	}
	slices.Reverse(kept)
	slices.Reverse(routine)
	for _, c := range []struct {
		limit int
		want  []string
	}{
		{50, append(slices.Clone(routine[:25]), kept[:25]...)},
		{51, append(slices.Clone(routine[:25]), kept[:26]...)},
		{10, append(slices.Clone(routine[:5]), kept[:5]...)},
		{200, append(slices.Clone(routine), kept...)},
	} {
		got, err := e.store.Query(ctx, 9, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(jobIDs(got), c.want) {
			t.Fatalf("limit %d: got %v, want %v", c.limit, jobIDs(got), c.want)
		}
	}
	// A newer offboard leads and counts among the kept half.
	late := entry(9, 500)
	late.JobID = "late-offboard"
	if err := e.store.Append(ctx, late, late.JobID+":result"); err != nil {
		t.Fatal(err)
	}
	got, err := e.store.Query(ctx, 9, 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"late-offboard", routine[0], routine[1], kept[0]}; !slices.Equal(jobIDs(got), want) {
		t.Fatalf("limit 4: got %v, want %v", jobIDs(got), want)
	}
}

// TestEntriesOfTheEarlierLayout: an offboard appended when every entry of a
// person shared one subject is still read, ranked as kept, and appears once
// when the same result was appended again under the new layout.
func TestEntriesOfTheEarlierLayout(t *testing.T) {
	e := newEnv(t, history.Config{})
	ctx := context.Background()
	old := entry(12, 0)
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx, history.UserSubject(12), b); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Append(ctx, old, "again"); err != nil { // a replay
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		en := rejected(12, i)
		if err := e.store.Append(ctx, en, en.JobID+":result"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.store.Query(ctx, 12, 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"rej-12-20", "rej-12-19", "rej-12-18", "job-12-0"}; !slices.Equal(jobIDs(got), want) {
		t.Fatalf("got %v, want %v", jobIDs(got), want)
	}
}

func TestAppendKeepsNoDataAndDeduplicates(t *testing.T) {
	e := newEnv(t, history.Config{})
	ctx := context.Background()
	result := `{"job_id":"j1","type":"activate","user_id":55,"user":{"email":"Ann@Example.com"},"outcome":"succeeded",
		"attempts":2,"started_at":"2026-03-01T09:00:00Z","finished_at":"2026-03-01T09:00:01.5Z","duration_ms":1500,
		"correlation_id":"c1","source":"hr.x","data":{"device_id":9,"state_token":"SECRET-STATE-TOKEN"}}`
	en, err := history.EntryFromResult([]byte(result))
	if err != nil {
		t.Fatal(err)
	}
	want := history.Entry{JobID: "j1", Type: "activate", UserID: 55, User: &history.Selector{Email: "Ann@Example.com"},
		Outcome: "succeeded", StartedAt: base, FinishedAt: base.Add(1500 * time.Millisecond), DurationMS: 1500,
		Attempts: 2, CorrelationID: "c1", Source: "hr.x"}
	if !entriesEqual(en, want) {
		t.Fatalf("entry %+v, want %+v", en, want)
	}
	// The same result three times: twice with its message id (deduplicated
	// by JetStream), once re-published later under another id (as a
	// duplicate job's stored result can be, outside the window).
	for _, id := range []string{"j1:result", "j1:result", ""} {
		if err := e.store.Append(ctx, en, id); err != nil {
			t.Fatal(err)
		}
	}
	failed, err := history.EntryFromResult([]byte(`{"job_id":"j2","type":"verify","user_id":55,"outcome":"failed",
		"started_at":"2026-03-01T10:00:00Z","finished_at":"2026-03-01T10:00:01Z","error":{"code":"verification_failed","message":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Append(ctx, failed, "j2:result"); err != nil {
		t.Fatal(err)
	}
	got, err := e.store.Query(ctx, 55, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].JobID != "j2" || got[0].ErrorCode != "verification_failed" || !entriesEqual(got[1], want) {
		t.Fatalf("history %+v", got)
	}
	s, err := e.js.Stream(ctx, history.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Fatalf("stream holds %d messages, want 3 (one deduplicated by message id)", info.State.Msgs)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(m.Data), "SECRET") || strings.Contains(string(m.Data), "data") {
			t.Fatalf("stored entry holds result data: %s", m.Data)
		}
	}

	// A cancelled job's entry says who cancelled it, and with what scope.
	c, err := history.EntryFromResult([]byte(`{"job_id":"off-9","type":"offboard","user_id":9,"outcome":"cancelled",
		"error":{"code":"cancelled"},"data":{"cancelled_by":"c-9","cancel_scope":"hr.cloudevents"}}`))
	if err != nil || c.CancelledBy != "c-9" || c.CancelScope != "hr.cloudevents" {
		t.Fatalf("cancelled entry %+v, %v", c, err)
	}
	if d, err := history.EntryFromResult([]byte(`{"job_id":"d","type":"offboard","user_id":9,"outcome":"succeeded","data":{"cancelled_by":"x"}}`)); err != nil || d.CancelledBy != "" {
		t.Fatalf("a succeeded entry %+v, %v", d, err)
	}
	// Data is left behind unread unless the job was cancelled, whatever
	// its shape.
	if d, err := history.EntryFromResult([]byte(`{"job_id":"d","type":"offboard","user_id":9,"outcome":"succeeded","data":[1]}`)); err != nil || d.JobID != "d" {
		t.Fatalf("an entry whose data is not an object %+v, %v", d, err)
	}
	if _, err := history.EntryFromResult([]byte(`{"job_id":"x"}`)); err == nil {
		t.Fatal("a result without type and outcome was accepted")
	}
	if _, err := history.EntryFromResult([]byte(`not json`)); err == nil {
		t.Fatal("a body that is not JSON was accepted")
	}
}

func entriesEqual(a, b history.Entry) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestUnresolvedSelectorAndNobody(t *testing.T) {
	e := newEnv(t, history.Config{})
	ctx := context.Background()
	lost := history.Entry{JobID: "u1", Type: "offboard", Outcome: "failed", ErrorCode: "user_not_found",
		User: &history.Selector{Email: "Leaver@Example.com"}, FinishedAt: base}
	nobody := history.Entry{JobID: "u2", Type: "enroll", Outcome: "rejected", ErrorCode: "invalid_json", FinishedAt: base}
	for _, en := range []history.Entry{lost, nobody} {
		if err := e.store.Append(ctx, en, en.JobID+":result"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.store.QuerySelector(ctx, history.Selector{Email: "leaver@example.COM "}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].JobID != "u1" {
		t.Fatalf("by email: %+v", got)
	}
	other, err := e.store.QuerySelector(ctx, history.Selector{Username: "Leaver@Example.com"}, 10)
	if err != nil || len(other) != 0 {
		t.Fatalf("by username: %+v %v", other, err)
	}
	if _, err := e.store.QuerySelector(ctx, history.Selector{}, 10); err == nil {
		t.Fatal("an empty selector was accepted")
	}
	s, err := e.js.Stream(ctx, history.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d entries; the job with no user must not be stored", info.State.Msgs)
	}
	for subj := range info.State.Subjects {
		if strings.Contains(strings.ToLower(subj), "example") {
			t.Fatalf("an email reached a subject: %s", subj)
		}
	}
}

func TestProvisionIsIdempotentAndValidates(t *testing.T) {
	e := newEnv(t, history.Config{})
	ctx := context.Background()
	if err := history.Provision(ctx, e.js, history.Config{}); err != nil {
		t.Fatalf("second provision: %v", err)
	}
	if err := history.Provision(ctx, e.js, history.Config{MaxAge: 800 * 24 * time.Hour}); err != nil {
		t.Fatalf("provision with a longer max age: %v", err)
	}
	s, err := e.js.Stream(ctx, history.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config; got.MaxAge != 800*24*time.Hour || got.MaxMsgsPerSubject != 1000 {
		t.Fatalf("stream config not updated: max age %v, per subject %d", got.MaxAge, got.MaxMsgsPerSubject)
	}
	for _, bad := range []history.Config{{Replicas: 2}, {MaxAge: time.Hour}, {MaxPerUser: 100}, {MaxPerUser: 1e6}} {
		if err := history.Provision(ctx, e.js, bad); err == nil {
			t.Fatalf("config %+v was accepted", bad)
		}
	}
}

func TestHandler(t *testing.T) {
	e := newEnv(t, history.Config{})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		en := entry(10, i)
		if err := e.store.Append(ctx, en, en.JobID+":result"); err != nil {
			t.Fatal(err)
		}
	}
	lost := history.Entry{JobID: "lost", Type: "offboard", Outcome: "failed", ErrorCode: "user_not_found",
		User: &history.Selector{ExternalID: "E-10"}, FinishedAt: base.Add(time.Hour)}
	if err := e.store.Append(ctx, lost, "lost:result"); err != nil {
		t.Fatal(err)
	}
	// A job that named its person by two identifiers and was not resolved
	// is found by the same two (emails without regard to case).
	lost2 := history.Entry{JobID: "lost-2", Type: "offboard", Outcome: "failed", ErrorCode: "identity_ambiguous",
		User: &history.Selector{Email: "Twin@example.com", ExternalID: "E-20"}, FinishedAt: base.Add(2 * time.Hour)}
	if err := e.store.Append(ctx, lost2, "lost-2:result"); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	resolver := resolverFunc(func(_ context.Context, s history.Selector) (int64, error) {
		switch {
		case s.Email == "ten@example.com":
			return 10, nil
		case s.Email == "down@example.com":
			return 0, fmt.Errorf("onelogin unavailable")
		}
		return 0, nil
	})
	h := history.NewHandler(e.store, resolver, log)
	bare := history.NewHandler(e.store, nil, log)

	cases := []struct {
		name    string
		h       *history.Handler
		req     string
		code    string
		wantIDs []string
	}{
		{"by id", h, `{"user_id":10}`, "", []string{"job-10-2", "job-10-1", "job-10-0"}},
		{"limit", h, `{"user_id":10,"limit":2}`, "", []string{"job-10-2", "job-10-1"}},
		{"nobody", h, `{"user_id":11}`, "", nil},
		{"by email", h, `{"user":{"email":"ten@example.com"},"limit":2}`, "", []string{"job-10-2", "job-10-1"}},
		{"unresolved merged", h, `{"user":{"external_id":"E-10"}}`, "", []string{"lost"}},
		{"lookup down", h, `{"user":{"email":"down@example.com"}}`, history.CodeUnavailable, nil},
		{"no resolver, unresolved found", bare, `{"user":{"external_id":"E-10"}}`, "", []string{"lost"}},
		{"two identifiers, unresolved found", bare, `{"user":{"external_id":"E-20","email":"twin@example.com"}}`, "", []string{"lost-2"}},
		{"one of the two identifiers", bare, `{"user":{"external_id":"E-20"}}`, history.CodeLookupUnsupported, nil},
		{"no resolver", bare, `{"user":{"email":"ten@example.com"}}`, history.CodeLookupUnsupported, nil},
		{"not json", h, `{`, history.CodeInvalidRequest, nil},
		{"unknown field", h, `{"user_id":10,"x":1}`, history.CodeInvalidRequest, nil},
		{"string id", h, `{"user_id":"10"}`, history.CodeInvalidRequest, nil},
		{"empty", h, `{}`, history.CodeInvalidUserID, nil},
		{"negative id", h, `{"user_id":-1}`, history.CodeInvalidUserID, nil},
		{"both", h, `{"user_id":10,"user":{"email":"a@b"}}`, history.CodeConflictingFields, nil},
		{"two selector fields", h, `{"user":{"email":"a@b","username":"a"}}`, "", nil},
		{"empty selector", h, `{"user":{}}`, history.CodeInvalidRequest, nil},
		{"limit too big", h, `{"user_id":10,"limit":501}`, history.CodeOutOfRange, nil},
		{"negative limit", h, `{"user_id":10,"limit":-5}`, history.CodeOutOfRange, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := c.h.Answer(ctx, []byte(c.req))
			if c.code != "" {
				if rep.Error == nil || rep.Error.Code != c.code || rep.Error.Message == "" {
					t.Fatalf("reply %+v, want error %s", rep, c.code)
				}
				return
			}
			if rep.Error != nil {
				t.Fatalf("error %+v", rep.Error)
			}
			if !slices.Equal(jobIDs(rep.Data), c.wantIDs) {
				t.Fatalf("got %v, want %v", jobIDs(rep.Data), c.wantIDs)
			}
		})
	}
}

type resolverFunc func(context.Context, history.Selector) (int64, error)

func (f resolverFunc) ResolveUser(ctx context.Context, s history.Selector) (int64, error) {
	return f(ctx, s)
}

func TestHandleOverNATS(t *testing.T) {
	e := newEnv(t, history.Config{})
	ctx := context.Background()
	en := entry(21, 1)
	if err := e.store.Append(ctx, en, en.JobID+":result"); err != nil {
		t.Fatal(err)
	}
	svc, err := micro.AddService(e.nc, micro.Config{Name: "mfa", Version: "1.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	h := history.NewHandler(e.store, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := svc.AddGroup("mfa.query").AddEndpoint("history", h); err != nil {
		t.Fatal(err)
	}
	m, err := e.nc.Request("mfa.query.history", []byte(`{"user_id":21}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Data  []history.Entry `json:"data"`
		Error *history.ErrorInfo
	}
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error != nil || len(rep.Data) != 1 || rep.Data[0].JobID != en.JobID {
		t.Fatalf("reply %s (%v)", m.Data, err)
	}
	if m.Header.Get(micro.ErrorHeader) != "" {
		t.Fatalf("a success carries an error header: %v", m.Header)
	}
	m, err = e.nc.Request("mfa.query.history", []byte(`{"user_id":-3}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(micro.ErrorCodeHeader) != "400" || m.Header.Get(micro.ErrorHeader) != history.CodeInvalidUserID {
		t.Fatalf("error headers %v", m.Header)
	}
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error == nil || rep.Error.Code != history.CodeInvalidUserID || strings.Contains(string(m.Data), `"data"`) {
		t.Fatalf("error reply %s (%v)", m.Data, err)
	}
	m, err = e.nc.Request("mfa.query.history", []byte(`{"user_id":22}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != `{"data":[]}` {
		t.Fatalf("empty history reply %s", m.Data)
	}
}

// BenchmarkHistoryQuery answers one person's history (50 newest of about
// 100) with 100,000 entries over 1,000 people in the stream; the target is
// under 100 ms per query.
func BenchmarkHistoryQuery(b *testing.B) {
	e := newEnv(b, history.Config{})
	e.fill(b, 100_000, 1000, 4242, 100)
	ctx := context.Background()
	users := []int64{4242, 17, 500, 999}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		es, err := e.store.Query(ctx, users[i%len(users)], 50)
		if err != nil {
			b.Fatal(err)
		}
		if len(es) != 50 {
			b.Fatalf("got %d entries", len(es))
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/query")
}

// BenchmarkHistoryQueryAfterBurst answers the history of a person with an
// offboard and then 1,000 rejected jobs (a full routine subject), among
// 100,000 entries of 1,000 people: 50 entries, the offboard among them.
func BenchmarkHistoryQueryAfterBurst(b *testing.B) {
	e := newEnv(b, history.Config{})
	e.fill(b, 100_000, 1000, 4242, 100)
	ctx := context.Background()
	const user = 77777
	off := entry(user, 0)
	if err := e.store.Append(ctx, off, ""); err != nil {
		b.Fatal(err)
	}
	for i := 1; i <= 1000; i++ {
		if err := e.store.Append(ctx, rejected(user, i), ""); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		es, err := e.store.Query(ctx, user, 50)
		if err != nil {
			b.Fatal(err)
		}
		if len(es) != 50 || es[49].JobID != off.JobID {
			b.Fatalf("got %d entries", len(es))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/query")
}
