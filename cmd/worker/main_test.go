package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mfa-worker/mfa-worker/internal/app"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// clearEnv unsets every variable the worker reads.
func clearEnv(t *testing.T) {
	for _, v := range []string{"NATS_URL", "NATS_CREDS", "NATS_NKEY", "NATS_USER", "NATS_PASSWORD", "NATS_CA", "NATS_CERT", "NATS_KEY",
		"ONELOGIN_SUBDOMAIN", "ONELOGIN_BASE_URL", "ONELOGIN_CLIENT_ID", "ONELOGIN_CLIENT_SECRET", "ONELOGIN_CLIENT_SECRET_FILE",
		"WORKER_HTTP_ADDR", "WORKER_CONCURRENCY", "WORKER_MAX_DELIVER", "WORKER_ALLOW_PLAINTEXT_TOKENS"} {
		t.Setenv(v, "")
	}
}

func TestRunStopsOnBadConfigNamingEverySetting(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "NATS_URL"},
		{map[string]string{"NATS_URL": "nats://127.0.0.1:1", "ONELOGIN_CLIENT_SECRET": "hunter2-secret"}, "ONELOGIN_SUBDOMAIN"},
		{map[string]string{"NATS_URL": "nats://127.0.0.1:1", "ONELOGIN_SUBDOMAIN": "acme", "ONELOGIN_CLIENT_SECRET": "hunter2-secret"}, "ONELOGIN_CLIENT_ID"},
		{map[string]string{"NATS_URL": "nats://127.0.0.1:1", "ONELOGIN_SUBDOMAIN": "acme", "ONELOGIN_CLIENT_ID": "x", "ONELOGIN_CLIENT_SECRET": "hunter2-secret", "WORKER_CONCURRENCY": "many"}, "WORKER_CONCURRENCY"},
		{map[string]string{"NATS_URL": "nats://127.0.0.1:1", "ONELOGIN_SUBDOMAIN": "acme", "ONELOGIN_CLIENT_ID": "x", "ONELOGIN_CLIENT_SECRET": "hunter2-secret", "WORKER_ALLOW_PLAINTEXT_TOKENS": "perhaps"}, "WORKER_ALLOW_PLAINTEXT_TOKENS"},
	} {
		clearEnv(t)
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		var out, errb bytes.Buffer
		code := run([]string{"run"}, &out, &errb)
		// Every bad setting, one line each, the first naming tc.want.
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if code != 2 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("env %v: exit %d, stderr %q; want a first line naming %s", tc.env, code, errb.String(), tc.want)
		}
		for _, l := range lines[1:] {
			if !regexp.MustCompile(`^[A-Z_/]+: `).MatchString(l) {
				t.Errorf("env %v: line %q names no setting", tc.env, l)
			}
		}
		if strings.Contains(errb.String(), "hunter2") {
			t.Errorf("the secret was printed: %q", errb.String())
		}
	}
}

func TestSubmitAndDLQCommands(t *testing.T) {
	clearEnv(t)
	nurl := startWorker(t)
	t.Setenv("NATS_URL", nurl)
	sh := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		return code, out.String() + errb.String()
	}
	code, out := sh("submit", "enroll", "--user", "42", "--id", "cmd-1", "--factor-name", "OneLogin SMS", "--display-name", "Work", "--number", "+15551234567", "--wait", "--timeout", "10s")
	if code != 0 || !strings.Contains(out, `"outcome": "succeeded"`) || !strings.Contains(out, "mfa.results.enroll.succeeded") {
		t.Fatalf("submit enroll: exit %d\n%s", code, out)
	}
	// A job that fails lands in the DLQ; list shows it; replay re-drives it.
	code, out = sh("submit", "remove", "--user", "99999999", "--id", "cmd-2", "--device", "5", "--wait", "--timeout", "10s")
	if code != 1 || !strings.Contains(out, `"code": "user_not_found"`) {
		t.Fatalf("submit failing remove: exit %d\n%s", code, out)
	}
	code, out = sh("dlq", "list")
	if code != 0 || !strings.Contains(out, "cmd-2") || !strings.Contains(out, "user_not_found") || !strings.Contains(out, "1 dead letter(s)") {
		t.Fatalf("dlq list: exit %d\n%s", code, out)
	}
	if code, out = sh("dlq", "replay"); code != 2 {
		t.Fatalf("dlq replay without a selection: exit %d\n%s", code, out)
	}
	code, out = sh("dlq", "replay", "--all")
	if code != 0 || !strings.Contains(out, "replayed 1 dead letter(s)") {
		t.Fatalf("dlq replay: exit %d\n%s", code, out)
	}
	// It runs again (and fails again, into the DLQ again: the user does not exist).
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, out = sh("dlq", "list", "--json")
		return strings.Count(out, `"job_id":"cmd-2"`) == 1 && strings.Contains(out, `"deliveries":1`)
	}, func() string { return "replayed job did not come back to the DLQ:\n" + out })
	// A job for later: scheduled, found by `worker job`, then cancelled.
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if code, out = sh("submit", "offboard", "--user", "43", "--id", "cmd-later", "--not-before", later); code != 0 {
		t.Fatalf("submit scheduled offboard: exit %d\n%s", code, out)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, out = sh("job", "cmd-later")
		return code == 0 && strings.Contains(out, `"state": "scheduled"`) && strings.Contains(out, `"due_at": "`+later+`"`)
	}, func() string { return fmt.Sprintf("job cmd-later: exit %d\n%s", code, out) })
	if code, out = sh("submit", "cancel", "--user", "43", "--job-id", "cmd-later"); code != 2 {
		t.Fatalf("cancel with a user: exit %d\n%s", code, out)
	}
	// A scope is a cancel's authority: another source's scope cannot end
	// the job (its source is cli); a wildcard is no scope.
	if code, out = sh("submit", "cancel", "--job-id", "cmd-later", "--scope", "hr.*"); code != 2 {
		t.Fatalf("cancel with a wildcard scope: exit %d\n%s", code, out)
	}
	if code, out = sh("submit", "offboard", "--user", "43", "--scope", "hr.x"); code != 2 {
		t.Fatalf("offboard with a scope: exit %d\n%s", code, out)
	}
	code, out = sh("submit", "cancel", "--id", "cmd-cancel-other", "--job-id", "cmd-later", "--scope", "hr.other", "--wait", "--timeout", "10s")
	if !strings.Contains(out, `"code": "cancel_not_permitted"`) || !strings.Contains(out, `"outcome": "failed"`) {
		t.Fatalf("submit cancel --scope hr.other: exit %d\n%s", code, out)
	}
	if code, out = sh("job", "cmd-later"); code != 0 || !strings.Contains(out, `"state": "scheduled"`) {
		t.Fatalf("job cmd-later after another scope's cancel: exit %d\n%s", code, out)
	}
	code, out = sh("submit", "cancel", "--id", "cmd-cancel", "--job-id", "cmd-later", "--wait", "--timeout", "10s")
	if code != 0 || !strings.Contains(out, `"target_outcome": "cancelled"`) {
		t.Fatalf("submit cancel: exit %d\n%s", code, out)
	}
	code, out = sh("job", "cmd-later")
	if code != 0 || !strings.Contains(out, `"state": "finished"`) || !strings.Contains(out, `"outcome": "cancelled"`) {
		t.Fatalf("job cmd-later after the cancel: exit %d\n%s", code, out)
	}
	if code, out = sh("job", "never-seen"); code != 0 || !strings.Contains(out, `"state": "unknown"`) {
		t.Fatalf("job never-seen: exit %d\n%s", code, out)
	}
	// A person named by two identifiers: both find user 44; a look-alike's
	// external id with the same email finds two people and changes nothing.
	code, out = sh("submit", "offboard", "--email", "user44@example.com", "--external-id", "ext44", "--id", "cmd-two-ids", "--wait", "--timeout", "10s")
	if code != 0 || !strings.Contains(out, `"user_id": 44`) || !strings.Contains(out, `"external_id": "ext44"`) || !strings.Contains(out, `"email": "user44@example.com"`) {
		t.Fatalf("submit offboard by email and external id: exit %d\n%s", code, out)
	}
	code, out = sh("submit", "offboard", "--email", "user46@example.com", "--external-id", "ext47", "--id", "cmd-look-alike", "--wait", "--timeout", "10s")
	if code != 1 || !strings.Contains(out, `"code": "identity_ambiguous"`) {
		t.Fatalf("submit offboard with a look-alike's external id: exit %d\n%s", code, out)
	}
	if code, out = sh("submit", "offboard", "--user", "44", "--email", "user44@example.com"); code != 2 {
		t.Fatalf("--user with --email: exit %d\n%s", code, out)
	}
	if code, out = sh("submit", "nonsense", "--user", "1"); code != 2 {
		t.Fatalf("unknown type: exit %d %s", code, out)
	}
	if code, out = sh("version"); code != 0 || !strings.Contains(out, "mfa-worker") {
		t.Fatalf("version: %d %s", code, out)
	}
}

func TestRunConfigReadsFlagsAndEnvironment(t *testing.T) {
	clearEnv(t)
	secret := t.TempDir() + "/secret"
	if err := os.WriteFile(secret, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ONELOGIN_CLIENT_ID", "env-id")
	t.Setenv("WORKER_CONCURRENCY", "7")
	// runConfig parses; app.Run validates and loads, once: here by hand.
	cfg, _, err := runConfig([]string{"--nats-url", "nats://a:4222,nats://b:4222", "--nats-user", "svc", "--onelogin-subdomain", "acme", "--onelogin-client-secret-file", secret, "--max-deliver", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil {
		t.Fatal("NATS_USER without NATS_PASSWORD passed validation")
	}
	t.Setenv("NATS_PASSWORD", "pw")
	cfg, _, err = runConfig([]string{"--nats-url", "nats://a:4222,nats://b:4222", "--nats-user", "svc", "--onelogin-subdomain", "acme", "--onelogin-client-secret-file", secret, "--max-deliver", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Load(); err != nil {
		t.Fatal(err)
	}
	if cfg.NATSURL != "nats://a:4222,nats://b:4222" || cfg.NATSUser != "svc" || cfg.NATSPassword != "pw" || cfg.OneLoginClientID != "env-id" ||
		cfg.OneLoginClientSecret != "from-file" || cfg.Jobs.Concurrency != 7 || cfg.Jobs.MaxDeliver != 3 || cfg.OneLoginSubdomain != "acme" {
		t.Fatalf("config = %+v", cfg)
	}
}

// startWorker runs the worker of `worker run` (app.Run) against a test bed
// (embedded JetStream, the OneLogin simulator) until the test ends, and
// returns the bed's NATS URL once the worker is ready.
func startWorker(t *testing.T) string {
	t.Helper()
	b, err := testenv.NewBed(simulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := app.Config{
		NATSURL: b.NATSURL(), OneLoginBaseURL: b.SimURL,
		OneLoginClientID: b.Sim.Config().ClientID, OneLoginClientSecret: b.Sim.Config().ClientSecret,
		HTTPAddr: "127.0.0.1:0", Version: "1.2.3",
	}
	w, err := app.Run(ctx, cfg, testenv.Quiet(), prometheus.NewRegistry())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := w.Wait(); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	if err := testenv.WaitHTTP("http://"+w.HTTPAddr+"/readyz", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return b.NATSURL()
}
