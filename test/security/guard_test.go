package security

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/people"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// The permission blocks of docs/operations.md: hold operators (worker hold)
// and people operators (worker people).
var (
	secHoldOperatorPerms = server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"mfa.jobs.offboard", "mfa.jobs.remove", "mfa.audit.hold.>",
			"$JS.API.INFO", "$JS.API.STREAM.INFO.KV_MFA_GUARD", "$JS.API.DIRECT.GET.KV_MFA_GUARD.>",
			"$JS.API.CONSUMER.CREATE.KV_MFA_GUARD.>", "$JS.API.CONSUMER.DELETE.KV_MFA_GUARD.>", "$KV.MFA_GUARD.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
	secPeopleOperatorPerms = server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"mfa.audit.people.>",
			"$JS.API.INFO", "$JS.API.STREAM.INFO.KV_MFA_PEOPLE", "$JS.API.DIRECT.GET.KV_MFA_PEOPLE.>", "$KV.MFA_PEOPLE.user.>",
			"$JS.API.STREAM.INFO.KV_MFA_LEDGER", "$JS.API.DIRECT.GET.KV_MFA_LEDGER.>", "$KV.MFA_LEDGER.grant.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
)

func secGuardServer(t *testing.T) *server.Server {
	return secServerOf(t, map[string]server.Permissions{
		"worker": secWorkerPerms, "publisher": secPublisherPerms,
		"holdop": secHoldOperatorPerms, "peopleop": secPeopleOperatorPerms,
	})
}

// The worker holds with its own block; a hold operator lists, releases and
// discards with the hold block; a people operator clears a record with
// the people block; a job publisher can do none of it.
func TestSecGuardAndPeoplePermissions(t *testing.T) {
	s := secGuardServer(t)
	ctx := context.Background()
	var workerDenied, pubDenied, holdDenied, peopleDenied secDenials
	_, wjs := secConnect(t, s, "worker", &workerDenied)
	objs, err := topology.Provision(ctx, wjs, topology.Config{}, secConfig().Consumers())
	if err != nil {
		t.Fatalf("provision as the worker: %v", err)
	}
	g := guard.New(objs.Guard, wjs, guard.Config{Limit: 1, Window: time.Hour})
	now := time.Now()
	for i, id := range []string{"g-1", "g-2", "g-3"} {
		want := guard.Hold
		if i == 0 {
			want = guard.Run
		}
		j := guard.Job{ID: id, Type: job.TypeOffboard, Source: "hr.scim", UserID: 9, Time: now, Body: []byte(`{"id":"` + id + `","type":"offboard","user_id":9}`)}
		if d, err := g.Admit(ctx, j, now); err != nil || d != want {
			t.Fatalf("worker admits %s: %s, %v", id, d, err)
		}
	}
	if err := ledger.NewPeople(objs.People).RecordOffboard(ctx, 9, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), "g-0"); err != nil {
		t.Fatalf("worker records an offboard: %v", err)
	}

	// A job publisher can neither release a held job nor clear a record.
	pnc, _ := secConnect(t, s, "publisher", &pubDenied)
	for _, subj := range []string{"$KV.MFA_GUARD." + guard.HeldKey("hr.scim", "g-2"), "$KV.MFA_GUARD." + guard.WindowKey("hr.scim"),
		"$KV.MFA_PEOPLE." + ledger.PersonKey(9), "mfa.audit.hold.release"} {
		if _, err := pnc.Request(subj, []byte(`{"state":"released"}`), time.Second); err == nil {
			t.Errorf("a job publisher wrote %s", subj)
		}
	}
	if len(pubDenied.list()) < 4 {
		t.Errorf("the server did not deny the publisher: %v", pubDenied.list())
	}

	_, hjs := secConnect(t, s, "holdop", &holdDenied)
	hg, err := guard.Open(ctx, hjs, guard.DefaultConfig())
	if err != nil {
		t.Fatalf("hold operator opens the bucket: %v", err)
	}
	held, err := hg.List(ctx, guard.Filter{})
	if err != nil || len(held) != 2 {
		t.Fatalf("hold operator lists: %d, %v", len(held), err)
	}
	op := guard.Operator{By: "sec", Reason: "test"}
	if rep, err := hg.Release(ctx, guard.Filter{JobID: "g-2"}, op, now); err != nil || len(rep.Done) != 1 {
		t.Fatalf("hold operator releases: %+v, %v", rep, err)
	}
	if rep, err := hg.Discard(ctx, guard.Filter{Source: "hr.scim", BySource: true}, op, now); err != nil || len(rep.Done) != 1 {
		t.Fatalf("hold operator discards: %+v, %v", rep, err)
	}
	if d, err := g.Admit(ctx, guard.Job{ID: "g-2", Type: job.TypeOffboard, Source: "hr.scim"}, now); err != nil || d != guard.Released {
		t.Fatalf("the worker sees the release: %s, %v", d, err)
	}
	if at, err := g.Tripped(ctx, "hr.scim"); err != nil || !at.IsZero() {
		t.Fatalf("the source is still tripped: %v, %v", at, err)
	}

	_, ejs := secConnect(t, s, "peopleop", &peopleDenied)
	if _, err := people.Clear(ctx, ejs, 9, 0, people.Operator{By: "sec", Reason: "test"}, now); err != nil {
		t.Fatalf("people operator clears: %v", err)
	}
	if at, _, err := ledger.NewPeople(objs.People).Offboarded(ctx, 9); err != nil || !at.IsZero() {
		t.Fatalf("after the clear: %v, %v", at, err)
	}
	// A people operator cannot write job records.
	if err := ejs.Conn().Publish("$KV.MFA_LEDGER."+ledger.Key("g-1"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := ejs.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	const ledgerKeys = "$KV.MFA_LEDGER.job."
	if err := testenv.WaitFor(5*time.Second, func() bool {
		return slices.ContainsFunc(peopleDenied.list(), func(e string) bool { return strings.Contains(e, ledgerKeys) })
	}, func() string {
		return "the server did not deny a publish to " + ledgerKeys + ": " + strings.Join(peopleDenied.list(), "; ")
	}); err != nil {
		t.Error(err)
	}
	for who, d := range map[string]*secDenials{"worker": &workerDenied, "hold operator": &holdDenied} {
		if l := d.list(); len(l) > 0 {
			t.Errorf("%s was denied: %v", who, l)
		}
	}
}

func TestSecGuardPermissionDocsMatch(t *testing.T) {
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for role, p := range map[string]server.Permissions{"hold operator": secHoldOperatorPerms, "people operator": secPeopleOperatorPerms} {
		for _, subj := range append(append([]string(nil), p.Publish.Allow...), p.Subscribe.Allow...) {
			if !strings.Contains(doc, `"`+subj+`"`) {
				t.Errorf("docs/operations.md does not show %q of the %s block", subj, role)
			}
		}
	}
}
