package security

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/dlq"
	"github.com/mfa-worker/mfa-worker/internal/history"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/jobs"
	"github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/onelogin"
	"github.com/mfa-worker/mfa-worker/internal/ops"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"

	"github.com/prometheus/client_golang/prometheus"
)

// The NATS permission blocks of docs/security.md, one per role.
// TestSecNATSPermissions proves that each suffices for its role and that
// a job publisher can neither grant a replay nor forge a dead letter.
var (
	secWorkerPerms = server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.>", "$JS.ACK.MFA_JOBS.>", "$KV.MFA_LEDGER.>", "$KV.MFA_LOCKS.>", "$KV.MFA_PEOPLE.>", "$KV.MFA_GUARD.>",
			"mfa.results.>", "mfa.dlq.>", "mfa.scheduled.>", "$SRV.>", "_INBOX.>",
			"$JS.ACK.MFA_RESULTS.mfa-history.>", "mfa.history.>",
			"$KV.MFA_LEAVERS.>", "$JS.ACK.MFA_RESULTS.mfa-leavers.>", "$JS.ACK.MFA_DLQ.mfa-leavers-dlq.>",
			"mfa.assurance.>", "mfa.jobs.offboard",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", "mfa.query.>", "$SRV.>"}},
	}
	secPublisherPerms = server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"mfa.jobs.*"}, Deny: []string{"mfa.jobs.cancel"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", "mfa.results.>"}},
	}
	// secHRPerms is an HR system that publishes its own jobs (source
	// hr.workday) and may cancel only those.
	secHRPerms = server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"mfa.jobs.*", "mfa.jobs.cancel.hr.workday"}, Deny: []string{"mfa.jobs.cancel"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", "mfa.results.>"}},
	}
	secQueryPerms = server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"mfa.query.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
	secOperatorPerms = server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"mfa.jobs.*",
			"$JS.API.INFO", "$JS.API.STREAM.INFO.MFA_DLQ", "$JS.API.STREAM.MSG.GET.MFA_DLQ", "$JS.API.STREAM.MSG.DELETE.MFA_DLQ",
			"$JS.API.STREAM.INFO.KV_MFA_LEDGER", "$JS.API.DIRECT.GET.KV_MFA_LEDGER.>", "$KV.MFA_LEDGER.grant.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
)

func secPermServer(t *testing.T) *server.Server {
	return secServerOf(t, map[string]server.Permissions{
		"worker": secWorkerPerms, "publisher": secPublisherPerms,
		"query": secQueryPerms, "operator": secOperatorPerms, "hr": secHRPerms,
	})
}

// secServerOf starts a JetStream server whose users are the given names,
// each with its permission block and the password name + "-pw".
func secServerOf(t *testing.T, users map[string]server.Permissions) *server.Server {
	t.Helper()
	var us []*server.User
	for name, p := range users {
		us = append(us, &server.User{Username: name, Password: name + "-pw", Permissions: &p})
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true, MaxPayload: 1 << 20,
		Users: us,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s
}

// secDenials collects the permission violations a connection is told of.
type secDenials struct {
	mu  sync.Mutex
	err []string
}

func (d *secDenials) add(_ *nats.Conn, _ *nats.Subscription, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.err = append(d.err, err.Error())
}

func (d *secDenials) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.err...)
}

func secConnect(t *testing.T, s *server.Server, user string, d *secDenials) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, user+"-pw"), nats.ErrorHandler(d.add))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func TestSecNATSPermissions(t *testing.T) {
	s := secPermServer(t)
	ctx := context.Background()
	sim := simulator.New(simulator.Config{FirstUser: 1, LastUser: 1000})
	hs := httptest.NewServer(sim)
	t.Cleanup(hs.Close)

	// The worker, as the worker user: provisioning, jobs, queries.
	var workerDenied secDenials
	wnc, wjs := secConnect(t, s, "worker", &workerDenied)
	cfg := secConfig()
	objs, err := topology.Provision(ctx, wjs, topology.Config{}, cfg.Consumers())
	if err != nil {
		t.Fatalf("provision as the worker: %v", err)
	}
	m := metrics.New(prometheus.NewRegistry())
	ol, err := onelogin.NewClient(onelogin.Config{BaseURL: hs.URL, ClientID: sim.Config().ClientID, ClientSecret: sim.Config().ClientSecret, Observer: m})
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	r, err := jobs.NewRunner(cfg, log, wjs, objs, ol, m)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	indexed := history.Start(rctx, objs.History, history.New(wjs), log)
	go func() {
		err := r.Run(rctx)
		<-indexed
		done <- err
	}()
	q, err := ops.StartQueryService(rctx, wnc, ol, "1.0.0", log)
	if err != nil {
		t.Fatalf("query service as the worker: %v", err)
	}
	// The leaver registry, as the worker runs it.
	leavers, err := leaver.Start(ctx, wjs, 1, nil, log)
	if err != nil {
		t.Fatalf("leaver registry as the worker: %v", err)
	}
	ldone := make(chan error, 1)
	go func() { ldone <- leavers.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		_ = q.Stop()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
		if err := <-ldone; err != nil {
			t.Errorf("leaver registry: %v", err)
		}
	})

	// A job publisher publishes a job that fails for good, and reads its
	// result.
	var pubDenied secDenials
	pnc, pjs := secConnect(t, s, "publisher", &pubDenied)
	rsub, err := pnc.SubscribeSync("mfa.results.>")
	if err != nil {
		t.Fatal(err)
	}
	pub := func(subject, body string, h map[string]string) error {
		msg := nats.NewMsg(subject)
		msg.Data = []byte(body)
		for k, v := range h {
			msg.Header.Set(k, v)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := pjs.PublishMsg(pctx, msg)
		return err
	}
	if err := pub("mfa.jobs.offboard", failingOffboard("perm-1"), map[string]string{jetstream.MsgIDHeader: "perm-1"}); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	if msg, err := rsub.NextMsg(10 * time.Second); err != nil || !strings.HasPrefix(msg.Subject, "mfa.results.offboard.failed") {
		t.Fatalf("publisher's result: %v %v", msg, err)
	}
	// The registry follows the failed offboard with the worker's rights.
	if err := testenv.WaitFor(10*time.Second, func() bool {
		n := 0
		_ = leaver.Scan(ctx, wjs, func(r leaver.Record) error {
			if r.State == leaver.Open && r.JobID == "perm-1" {
				n++
			}
			return nil
		})
		return n == 1
	}, func() string { return "the failed offboard is not an open leaver" }); err != nil {
		t.Fatal(err)
	}

	// A job for later, parked by the worker as a schedule, and its cancel:
	// the worker's schedules, their removal and MFA_PEOPLE need nothing
	// beyond its block, the publisher's nothing beyond mfa.jobs.*.
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if err := pub("mfa.jobs.offboard", `{"id":"perm-later","type":"offboard","user_id":7,"not_before":"`+later+`"}`, map[string]string{jetstream.MsgIDHeader: "perm-later"}); err != nil {
		t.Fatalf("publisher, scheduled job: %v", err)
	}
	// The cancel goes out once the job waits as a schedule; sent before,
	// it would find the job not arrived yet (a tombstone, and noop).
	wjs, jerr := jetstream.New(wnc)
	if jerr != nil {
		t.Fatal(jerr)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		st, err := wjs.Stream(ctx, topology.StreamJobs)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter("mfa.scheduled.>"))
		return err == nil && len(info.State.Subjects) == 1
	}, func() string { return "the later job parked as a schedule" })
	// A job publisher cannot cancel: the bare subject is the operators'.
	if err := pub("mfa.jobs.cancel", `{"id":"perm-cancel-x","type":"cancel","params":{"job_id":"perm-later"}}`, map[string]string{jetstream.MsgIDHeader: "perm-cancel-x"}); err == nil {
		t.Error("a job publisher published the operators' cancel")
	}
	// An HR system cancels on its own scope only: a job of another
	// source is not its to end.
	var hrDenied secDenials
	_, hjs := secConnect(t, s, "hr", &hrDenied)
	hpub := func(subject, body, id string) error {
		msg := nats.NewMsg(subject)
		msg.Data = []byte(body)
		msg.Header.Set(jetstream.MsgIDHeader, id)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := hjs.PublishMsg(pctx, msg)
		return err
	}
	if err := hpub("mfa.jobs.cancel", `{"id":"perm-hr-bare","type":"cancel","params":{"job_id":"perm-later"}}`, "perm-hr-bare"); err == nil {
		t.Error("an HR system published the operators' cancel")
	}
	if err := hpub("mfa.jobs.cancel.hr.cloudevents", `{"id":"perm-hr-other","type":"cancel","params":{"job_id":"perm-later"}}`, "perm-hr-other"); err == nil {
		t.Error("an HR system published a cancel on another source's scope")
	}
	if err := hpub("mfa.jobs.cancel.hr.workday", `{"id":"perm-hr-own","type":"cancel","params":{"job_id":"perm-later"}}`, "perm-hr-own"); err != nil {
		t.Fatalf("HR system, cancel on its scope: %v", err)
	}
	if msg, err := rsub.NextMsg(10 * time.Second); err != nil || msg.Subject != "mfa.results.cancel.failed" || !strings.Contains(string(msg.Data), job.CodeCancelNotPermitted) {
		t.Fatalf("an HR system's cancel of a job without its source: %v %v", msg, err)
	}
	if len(hrDenied.list()) < 2 {
		t.Errorf("the server did not deny the HR system: %v", hrDenied.list())
	}
	// The operator's bare cancel ends it.
	var opCancelDenied secDenials
	_, ocjs := secConnect(t, s, "operator", &opCancelDenied)
	{
		msg := nats.NewMsg("mfa.jobs.cancel")
		msg.Data = []byte(`{"id":"perm-cancel","type":"cancel","params":{"job_id":"perm-later"}}`)
		msg.Header.Set(jetstream.MsgIDHeader, "perm-cancel")
		if _, err := ocjs.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("operator, cancel: %v", err)
		}
	}
	got := map[string]bool{}
	for len(got) < 2 {
		msg, err := rsub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("results of the scheduled job and its cancel: %v (have %v)", err, got)
		}
		got[msg.Subject] = true
	}
	if !got["mfa.results.offboard.cancelled"] || !got["mfa.results.cancel.succeeded"] {
		t.Fatalf("results of the scheduled job and its cancel: %v", got)
	}
	if err := pub("mfa.scheduled.offboard.x", `{}`, nil); err == nil {
		t.Error("a job publisher published a schedule")
	}

	// What a job publisher cannot do: grant itself a replay, forge a dead
	// letter.
	if err := pub("$KV.MFA_LEDGER."+ledger.GrantKey("perm-1", 1), `{"job_id":"perm-1","dlq_seq":1,"state":"granted"}`, nil); err == nil {
		t.Error("a job publisher wrote a replay grant")
	}
	if err := pub("mfa.dlq.offboard", failingOffboard("perm-2"), map[string]string{job.HeaderJobID: "perm-2"}); err == nil {
		t.Error("a job publisher forged a dead letter")
	}
	if len(pubDenied.list()) < 4 {
		t.Errorf("the server did not deny the publisher: %v", pubDenied.list())
	}

	// A query caller asks, with mfa.query.> only.
	var qDenied secDenials
	qnc, _ := secConnect(t, s, "query", &qDenied)
	if reply, err := qnc.Request("mfa.query.enrolled_factors", []byte(`{"user_id":5}`), 10*time.Second); err != nil || !strings.Contains(string(reply.Data), `"data"`) {
		t.Errorf("query: %v %v", reply, err)
	}

	// A replay operator replays the dead letter: grant, publish, delete.
	var opDenied secDenials
	_, ojs := secConnect(t, s, "operator", &opDenied)
	dls, err := dlq.ListDeadLetters(ctx, ojs, dlq.DeadLetterFilter{Type: "offboard"})
	if err != nil || len(dls) != 1 {
		t.Fatalf("operator's list: %v %v", dls, err)
	}
	if err := dlq.Replay(ctx, ojs, dls[0]); err != nil {
		t.Fatalf("operator's replay: %v", err)
	}
	msg, err := rsub.NextMsg(10 * time.Second)
	if err != nil || msg.Header.Get(jetstream.MsgIDHeader) != "perm-1:result:replay:1" {
		t.Fatalf("replay result: %v %v", msg, err)
	}
	for who, d := range map[string]*secDenials{"worker": &workerDenied, "query caller": &qDenied, "operator": &opDenied, "operator (cancel)": &opCancelDenied} {
		if l := d.list(); len(l) > 0 {
			t.Errorf("%s was denied: %v", who, l)
		}
	}
}

// docs/security.md shows the permission blocks this suite tests.
func TestSecPermissionDocsMatch(t *testing.T) {
	b, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for role, p := range map[string]server.Permissions{"worker": secWorkerPerms, "publisher": secPublisherPerms, "query": secQueryPerms, "operator": secOperatorPerms, "hr": secHRPerms} {
		if !strings.Contains(doc, role+": {") {
			t.Errorf("docs/security.md has no %s block", role)
		}
		for _, subj := range append(append(append([]string(nil), p.Publish.Allow...), p.Publish.Deny...), p.Subscribe.Allow...) {
			if !strings.Contains(doc, `"`+subj+`"`) {
				t.Errorf("docs/security.md does not show %q of the %s block", subj, role)
			}
		}
	}
}
