package app

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// TestHistoryKeepsAnOffboardThroughARejectedFlood runs the whole worker:
// a person is offboarded, then 1,000 jobs for them are rejected at the door
// (zero OneLogin calls); mfa.query.history still lists the offboard, after
// the 49 newest rejected jobs.
func TestHistoryKeepsAnOffboardThroughARejectedFlood(t *testing.T) {
	_, nurl := startWorker(t)
	if _, err := testenv.RoundTrip(nurl, "offboard", `{"id":"leaver-12","type":"offboard","user_id":12}`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(nurl)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 1000; i++ {
		m := nats.NewMsg(job.SubjectPrefix + "enroll")
		m.Data = fmt.Appendf(nil, `{"id":"flood-%04d","type":"enroll","user_id":12,"params":{"no_such_param":true}}`, i)
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("flood-%04d", i))
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing the flood did not complete")
	}
	// Every rejected result is indexed (on the person's routine subject).
	testenv.Eventually(t, 60*time.Second, func() bool { return indexed(t, js, 12) == 1000 },
		func() string { return fmt.Sprintf("%d rejected results indexed", indexed(t, js, 12)) })
	m, err := nc.Request(job.QueryHistory, []byte(`{"user_id":12}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Data []history.Entry `json:"data"`
	}
	if err := json.Unmarshal(m.Data, &rep); err != nil || len(rep.Data) == 0 {
		t.Fatalf("history reply %s: %v", m.Data, err)
	}
	es := rep.Data
	for i, e := range es[:len(es)-1] {
		if e.Outcome != "rejected" || (i > 0 && e.FinishedAt.After(es[i-1].FinishedAt)) {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	last := es[len(es)-1]
	if len(es) != history.DefaultLimit || last.JobID != "leaver-12" || last.Type != "offboard" || es[0].Outcome != "rejected" {
		t.Fatalf("%d entries, the last %+v", len(es), last)
	}
}

// indexed counts the routine entries of user in MFA_HISTORY.
func indexed(t *testing.T, js jetstream.JetStream, user int64) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), history.Stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(history.UserSubject(user)))
	if err != nil {
		return 0
	}
	return info.State.Subjects[history.UserSubject(user)]
}
