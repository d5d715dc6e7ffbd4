package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/audit"
	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/ledger"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

func provisioned(t *testing.T) (string, jetstream.JetStream, *topology.Objects) {
	t.Helper()
	clearEnv(t)
	srv, _, js := testenv.JetStream(t)
	objs, err := topology.Provision(context.Background(), js, topology.Config{},
		topology.Consumers{AckWait: 30 * time.Second, Lease: 30 * time.Second, MaxDeliver: 8})
	if err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), js, objs
}

func runCmd(t *testing.T, url string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	args = append(args[:2:2], append([]string{"--nats-url", url}, args[2:]...)...)
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func heldJob(id, source string) guard.Job {
	return guard.Job{ID: id, Type: job.TypeOffboard, Source: source, UserID: 42, Time: time.Now().Add(-time.Minute),
		Body: []byte(fmt.Sprintf(`{"id":%q,"type":"offboard","user_id":42,"source":%q}`, id, source))}
}

func jobsOn(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, topology.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var b struct{ ID string }
		if err := json.Unmarshal(m.Data, &b); err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Subject+" "+b.ID+" "+m.Header.Get(guard.HeaderGuard))
	}
	return out
}

func TestHoldCommands(t *testing.T) {
	url, js, objs := provisioned(t)
	ctx := context.Background()
	g := guard.New(objs.Guard, js, guard.Config{Limit: 1, Window: time.Hour})
	now := time.Now()
	for _, j := range []struct {
		id, source string
		want       guard.Decision
	}{
		{"a", "hr.scim", guard.Run}, {"b", "hr.scim", guard.Hold}, {"c", "hr.scim", guard.Hold},
		{"x", "", guard.Run}, {"d", "", guard.Hold},
		{"e", "evil\x1b[2J", guard.Run}, {"f", "evil\x1b[2J", guard.Hold},
	} {
		if d, err := g.Admit(ctx, heldJob(j.id, j.source), now); err != nil || d != j.want {
			t.Fatalf("admit %s: %s, %v", j.id, d, err)
		}
	}

	code, out, errs := runCmd(t, url, "hold", "list")
	if code != 0 || !strings.Contains(out, "4 job(s) held") || strings.Count(out, " offboard ") != 4 || strings.Contains(out, "\x1b") ||
		!strings.Contains(out, `evil\x1b[2J`) || !strings.Contains(out, "hr.scim: 2") || !strings.Contains(out, "source hr.scim is tripped since") {
		t.Fatalf("hold list: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = runCmd(t, url, "hold", "list", "--source", "hr.scim", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var first map[string]any
	if code != 0 || len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &first) != nil || first["job_id"] != "b" || first["state"] != "held" || first["body"] != nil {
		t.Fatalf("hold list --json: exit %d\n%s", code, out)
	}

	if code, _, errs := runCmd(t, url, "hold", "release"); code != 2 || !strings.Contains(errs, "--source S or --job ID") {
		t.Fatalf("release without a selector: exit %d %s", code, errs)
	}
	if code, _, errs := runCmd(t, url, "hold", "release", "--source", "s", "--job", "b"); code != 2 {
		t.Fatalf("release with both selectors: exit %d %s", code, errs)
	}
	code, out, errs = runCmd(t, url, "hold", "release", "--job", "b", "--by", "anna")
	if code != 0 || !strings.Contains(out, "released 1 job(s)") {
		t.Fatalf("release --job b: exit %d\n%s%s", code, out, errs)
	}
	if got := jobsOn(t, js); len(got) != 1 || got[0] != "mfa.jobs.offboard b released" {
		t.Fatalf("MFA_JOBS after the release: %q", got)
	}
	if code, _, errs := runCmd(t, url, "hold", "discard", "--source", "hr.scim"); code != 2 || !strings.Contains(errs, "--reason") {
		t.Fatalf("discard without a reason: exit %d %s", code, errs)
	}
	code, out, errs = runCmd(t, url, "hold", "discard", "--source", "hr.scim", "--reason", "SCIM filter misfire", "--by", "anna")
	if code != 0 || !strings.Contains(out, "discarded 1 job(s)") {
		t.Fatalf("discard --source hr.scim: exit %d\n%s%s", code, out, errs)
	}
	// --source '' selects the jobs without source.
	code, out, errs = runCmd(t, url, "hold", "release", "--source", "", "--by", "anna")
	if code != 0 || !strings.Contains(out, "released 1 job(s)") {
		t.Fatalf("release --source '': exit %d\n%s%s", code, out, errs)
	}
	if got := jobsOn(t, js); strings.Join(got, ",") != "mfa.jobs.offboard b released,mfa.jobs.offboard c discarded,mfa.jobs.offboard d released" {
		t.Fatalf("MFA_JOBS: %q", got)
	}
	if code, out, _ := runCmd(t, url, "hold", "release", "--job", "b"); code != 0 || !strings.Contains(out, "skipped b: already released") {
		t.Fatalf("second release of b: exit %d %s", code, out)
	}
	if code, _, errs := runCmd(t, url, "hold", "release", "--job", "nope"); code != 1 || !strings.Contains(errs, "holds no job nope") {
		t.Fatalf("release of an unknown job: exit %d %s", code, errs)
	}
	code, out, _ = runCmd(t, url, "hold", "list", "--all")
	if code != 0 || !strings.Contains(out, "1 job(s) held") || strings.Count(out, "anna") != 3 || strings.Contains(out, "source hr.scim is tripped") {
		t.Fatalf("hold list --all: exit %d\n%s", code, out)
	}
	// The released and discarded jobs are decided by the guard's record.
	for id, want := range map[string]guard.Decision{"b": guard.Released, "c": guard.Discarded, "d": guard.Released} {
		src := "hr.scim"
		if id == "d" {
			src = ""
		}
		if d, err := g.Admit(ctx, heldJob(id, src), now); err != nil || d != want {
			t.Fatalf("admit %s after the commands: %s, %v", id, d, err)
		}
	}
	// Both commands left an audit record.
	s, err := js.Stream(ctx, audit.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 3 {
		t.Fatalf("audit records: %+v, %v", info.State, err)
	}
}

func TestPeopleCommands(t *testing.T) {
	url, _, objs := provisioned(t)
	ctx := context.Background()
	poison := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := ledger.NewPeople(objs.People).RecordOffboard(ctx, 42, poison, "hr:cloudevents:x:person-left"); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd(t, url, "people", "show", "--user", "42")
	if code != 0 || !strings.Contains(out, "offboarded at 2099-01-01T00:00:00Z by job hr:cloudevents:x:person-left") || !strings.Contains(out, "WARNING") {
		t.Fatalf("people show: exit %d\n%s%s", code, out, errs)
	}
	if code, out, _ := runCmd(t, url, "people", "show", "--user", "7"); code != 0 || !strings.Contains(out, "no offboard recorded") {
		t.Fatalf("people show of nobody: exit %d %s", code, out)
	}
	if code, _, errs := runCmd(t, url, "people", "clear", "--user", "42"); code != 2 || !strings.Contains(errs, "--reason") {
		t.Fatalf("clear without a reason: exit %d %s", code, errs)
	}
	if code, _, errs := runCmd(t, url, "people", "clear", "--user", "42", "--reason", "x", "--revision", "999"); code != 1 || !strings.Contains(errs, "changed since") {
		t.Fatalf("clear at a stale revision: exit %d %s", code, errs)
	}
	code, out, errs = runCmd(t, url, "people", "clear", "--user", "42", "--reason", "publisher clock ran ahead", "--by", "anna")
	if code != 0 || !strings.Contains(out, "cleared the offboard recorded at 2099-01-01T00:00:00Z") {
		t.Fatalf("people clear: exit %d\n%s%s", code, out, errs)
	}
	if at, _, err := ledger.NewPeople(objs.People).Offboarded(ctx, 42); err != nil || !at.IsZero() {
		t.Fatalf("offboarded at %v (%v) after the clear", at, err)
	}
	code, out, _ = runCmd(t, url, "people", "show", "--user", "42", "--json")
	var got struct {
		Recorded bool `json:"recorded"`
		Poisoned bool `json:"poisoned"`
		Cleared  struct {
			By     string `json:"by"`
			Reason string `json:"reason"`
		} `json:"cleared"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || !got.Recorded || got.Poisoned || got.Cleared.By != "anna" || got.Cleared.Reason != "publisher clock ran ahead" {
		t.Fatalf("people show --json after the clear: exit %d %s", code, out)
	}
	if code, _, errs := runCmd(t, url, "people", "clear", "--user", "42", "--reason", "again"); code != 1 || !strings.Contains(errs, "nothing to clear") {
		t.Fatalf("second clear: exit %d %s", code, errs)
	}
}
