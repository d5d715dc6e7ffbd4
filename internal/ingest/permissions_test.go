package ingest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	registry "github.com/mfa-worker/mfa-worker/internal/leaver"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// The NATS permissions an ingest replica needs, as docs/hr-sources.md shows
// them; TestNATSPermissions proves they suffice.
var (
	ingestPublish = []string{
		"hr.events.*", // store accepted events
		"mfa.jobs.*",  // publish jobs (but the operators' cancel: ingestDeny)
		// Cancels on the HR sources' own scope, mfa.jobs.cancel.hr.<source>:
		// they end only jobs of that source.
		"mfa.jobs.cancel.hr.>",
		"mfa.dlq.ingest", // dead letters of rule errors
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO.HR_EVENTS", "$JS.API.STREAM.CREATE.HR_EVENTS", "$JS.API.STREAM.UPDATE.HR_EVENTS",
		"$JS.API.CONSUMER.CREATE.HR_EVENTS.mfa-ingest.>", "$JS.API.CONSUMER.INFO.HR_EVENTS.mfa-ingest",
		"$JS.API.CONSUMER.MSG.NEXT.HR_EVENTS.mfa-ingest", "$JS.ACK.HR_EVENTS.mfa-ingest.>",
		"$JS.API.STREAM.INFO.KV_MFA_SCIM_USERS", "$JS.API.STREAM.CREATE.KV_MFA_SCIM_USERS", "$JS.API.STREAM.UPDATE.KV_MFA_SCIM_USERS",
		"$KV.MFA_SCIM_USERS.>", "$JS.API.DIRECT.GET.KV_MFA_SCIM_USERS.>",
		"$JS.API.CONSUMER.CREATE.KV_MFA_SCIM_USERS.>", "$JS.API.CONSUMER.DELETE.KV_MFA_SCIM_USERS.>",
		"$JS.API.STREAM.INFO.KV_MFA_INGEST_ATTEMPTS", "$JS.API.STREAM.CREATE.KV_MFA_INGEST_ATTEMPTS", "$JS.API.STREAM.UPDATE.KV_MFA_INGEST_ATTEMPTS",
		"$KV.MFA_INGEST_ATTEMPTS.>", "$JS.API.DIRECT.GET.KV_MFA_INGEST_ATTEMPTS.>",
		// SCIM list pages (an ephemeral consumer) and deletes (a purge).
		"$JS.API.CONSUMER.MSG.NEXT.KV_MFA_SCIM_USERS.*", "$JS.API.STREAM.PURGE.KV_MFA_SCIM_USERS",
		// The leaver registry (created by the worker): an HR leaver is
		// recorded from the door.
		"$JS.API.STREAM.INFO.KV_MFA_LEAVERS", "$KV.MFA_LEAVERS.>", "$JS.API.DIRECT.GET.KV_MFA_LEAVERS.>",
	}
	ingestSubscribe = []string{"_INBOX.>"}
	// ingestDeny keeps the operators' bare cancel, which may end any job,
	// from an ingest replica.
	ingestDeny = []string{"mfa.jobs.cancel"}
)

// TestNATSPermissions runs the receiver and the mapper as a NATS user that
// holds only the documented permissions.
func TestNATSPermissions(t *testing.T) {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "admin", Password: "admin-pw"},
			{Username: "ingest", Password: "ingest-pw", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: ingestPublish, Deny: ingestDeny},
				Subscribe: &server.SubjectPermission{Allow: ingestSubscribe},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	ctx := context.Background()
	admin, err := nats.Connect(s.ClientURL(), nats.UserInfo("admin", "admin-pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	ajs, _ := jetstream.New(admin)
	for name, subj := range testStreams {
		if _, err := ajs.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := registry.ProvisionBucket(ctx, ajs, 1); err != nil {
		t.Fatal(err)
	}
	var denied []string
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("ingest", "ingest-pw"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied = append(denied, err.Error()) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	logs := &testenv.SyncBuffer{}
	ijs, _ := jetstream.New(nc)
	lkv, err := ijs.KeyValue(ctx, registry.Bucket)
	if err != nil {
		t.Fatalf("open the leaver registry as the ingest user: %v", err)
	}
	srv, err := New(ctx, Config{
		Secrets: Secrets{CloudEvents: ceKey, SCIMToken: scimToken}, Rules: testRules(t),
	}, Deps{Conn: nc, Log: slog.New(slog.NewTextHandler(logs, nil)), Leavers: registry.NewStore(lkv)})
	if err != nil {
		t.Fatalf("provision as the ingest user: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.RunMapper(mctx) }()
	t.Cleanup(func() { cancel(); <-done })

	e := &env{t: t, nc: admin, js: ajs, s: srv, http: hs, logs: logs}
	l := leavers(t)[0]
	if code, body := e.post(l.path, l.header(l.body), l.body); code != 200 {
		t.Fatalf("CloudEvent: %d %s", code, body)
	}
	id := e.scimCreate("ada@example.com", "E-1")
	if code, list := e.scim("GET", "/scim/v2/Users?filter="+url.QueryEscape(`userName eq "ada@example.com"`), ""); code != 200 || list["totalResults"] != float64(1) {
		t.Fatalf("filter: %d %v", code, list)
	}
	if code, list := e.scim("GET", "/scim/v2/Users", ""); code != 200 || list["totalResults"] != float64(1) {
		t.Fatalf("list: %d %v", code, list)
	}
	if code, _ := e.scim("PATCH", "/scim/v2/Users/"+id, patchPrefix+`[{"op":"replace","path":"active","value":false}]}`); code != 200 {
		t.Fatalf("PATCH: %d", code)
	}
	// Groups are kept (without effect) and listed; a deleted user is
	// purged from the bucket.
	if code, g := e.scim("POST", "/scim/v2/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Staff"}`); code != http.StatusCreated || g["id"] == nil {
		t.Fatalf("group: %d %v", code, g)
	}
	if code, list := e.scim("GET", "/scim/v2/Groups", ""); code != 200 || list["totalResults"] != float64(1) {
		t.Fatalf("groups: %d %v", code, list)
	}
	if code, _ := e.scim("DELETE", "/scim/v2/Users/"+id, ""); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d", code)
	}
	e.waitFor("three jobs", func() bool { return len(e.jobs()) == 3 })
	if code, _ := e.do("GET", "/readyz", nil, nil); code != http.StatusOK {
		t.Errorf("readyz %d", code)
	}
	var users []string
	for _, j := range e.jobs() {
		b, _ := json.Marshal(j["user"])
		users = append(users, string(b))
	}
	// The mapper handles events concurrently: the jobs' order is not fixed.
	sort.Strings(users)
	if strings.Join(users, " ") != `{"email":"ada@example.com","external_id":"E-1"} {"email":"ada@example.com","external_id":"E-1"} {"external_id":"E-1001"}` {
		t.Errorf("jobs for %v", users)
	}
	// Each leaver is in the registry from the door, with its HR event.
	akv, err := ajs.KeyValue(ctx, registry.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	st := registry.NewStore(akv)
	e.waitFor("two leavers recorded from the door", func() bool {
		keys, err := akv.ListKeys(ctx)
		if err != nil {
			return false
		}
		n := 0
		for k := range keys.Keys() {
			if !strings.HasPrefix(k, "sel.") {
				continue
			}
			if r, _, err := st.Get(ctx, k); err == nil && r.State == registry.Scheduled && r.EventID != "" && r.Source != "" && !r.ReceivedAt.IsZero() {
				n++
			}
		}
		return n == 2
	})
	if len(denied) > 0 {
		t.Errorf("permission errors: %v", denied)
	}
	if strings.Contains(logs.String(), "leaver registry") {
		t.Errorf("the registry hook failed:\n%s", logs.String())
	}
	// A cancel on the HR scope is stored; the operators' bare one is not.
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if _, err := ijs.Publish(pctx, "mfa.jobs.cancel.hr.cloudevents", []byte(`{"id":"c-hr","type":"cancel","params":{"job_id":"x"}}`)); err != nil {
		t.Errorf("cancel on the HR scope: %v", err)
	}
	if _, err := ijs.Publish(pctx, "mfa.jobs.cancel", []byte(`{"id":"c-op","type":"cancel","params":{"job_id":"x"}}`)); err == nil {
		t.Error("an ingest replica published the operators' bare cancel")
	}
}
