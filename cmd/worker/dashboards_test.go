//go:build prometheus && dev

package main

// The dashboard and the alert rules against a real Prometheus (Debian's
// prometheus package: make test-dashboards; .ci/run installs it). The dev
// tag is that of the build holding `worker dev`.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// dashboardExprs returns every target expression of the Grafana dashboard,
// keyed by "panel title / refId".
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/grafana/dashboards/mfa-worker.json")
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
		Panels []panel `json:"panels"` // inside collapsed rows
	}
	var d struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	out := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q target %s has no expression", p.Title, tg.RefID)
					continue
				}
				out[p.Title+" / "+tg.RefID] = tg.Expr
			}
		}
	}
	walk(d.Panels)
	if len(out) < 20 {
		t.Fatalf("the dashboard has only %d expressions", len(out))
	}
	return out
}

// unwired lists the dashboard expressions whose metrics the worker
// declares (at 0) but no code path counts yet, with the reason. The test
// fails when one of them returns data.
var unwired = map[string]string{}

// grafanaVars replaces Grafana's range variables by what Grafana would
// put there for the test's short window and 1 s scrapes.
func grafanaVars(expr string) string {
	return strings.NewReplacer("$__rate_interval", "20s", "$__interval", "5s", "$__range", "15m", "${datasource}", "prometheus").Replace(expr)
}

// startPrometheus runs Debian's prometheus with deploy/prometheus's local
// config and alert rules, scraping target every second, and returns its
// URL. The config is the file as committed, with only the target and the
// intervals changed.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	cfg, err := os.ReadFile("../../deploy/prometheus/prometheus.local.yml")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(cfg)
	for old, repl := range map[string]string{
		`targets: ["127.0.0.1:9464"]`: `targets: ["` + target + `"]`,
		"scrape_interval: 15s":        "scrape_interval: 1s",
		"evaluation_interval: 15s":    "evaluation_interval: 1s",
	} {
		if !strings.Contains(s, old) {
			t.Fatalf("prometheus.local.yml has no %q", old)
		}
		s = strings.Replace(s, old, repl, 1)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o600); err != nil {
		t.Fatal(err)
	}
	u, _ := testenv.Prometheus(t, dir, filepath.Join(dir, "prometheus.yml"))
	return u
}

type promResult struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	} `json:"data"`
}

// queryRange evaluates expr over [from, now] at 1 s steps and returns the
// number of series with at least one sample, or the query's error.
func queryRange(promURL, expr string, from time.Time) (int, error) {
	q := url.Values{"query": {expr}, "start": {strconv.FormatInt(from.Unix(), 10)},
		"end": {strconv.FormatInt(time.Now().Unix(), 10)}, "step": {"1"}}
	resp, err := http.Get(promURL + "/api/v1/query_range?" + q.Encode())
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r promResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("%s", r.Error)
	}
	n := 0
	for _, s := range r.Data.Result {
		if len(s.Values) > 0 {
			n++
		}
	}
	return n, nil
}

// signedCloudEvent posts a CloudEvent signed with the secret dev wrote.
func signedCloudEvent(t *testing.T, ingestURL, dataDir, body string) (int, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "secrets", "cloudevents-secret"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(string(b)), "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	return signedCloudEventWith(t, ingestURL, key, body)
}

// signedCloudEventWith posts a CloudEvent signed with key.
func signedCloudEventWith(t *testing.T, ingestURL string, key []byte, body string) (int, string) {
	t.Helper()
	id, ts := fmt.Sprintf("msg_%d", time.Now().UnixNano()), strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.%s", id, ts, body)
	req, _ := http.NewRequest("POST", ingestURL+"/events", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(rb)
}

// TestDashboardAgainstPrometheus runs `worker dev` (its HR receiver too)
// and a real Prometheus scraping it with the project's local config and
// rules, makes the jobs and HR events every panel shows (successes, a
// scheduled job, a cancelled one, a mistyped OTP and an unknown person
// dead-lettered, retries through a OneLogin outage, a duplicate, signed
// CloudEvents) and checks that every dashboard expression returns data and every alert
// rule evaluates without error.
func TestDashboardAgainstPrometheus(t *testing.T) {
	clearEnv(t)
	exprs, exprsAll := dashboardExprs(t), dashboardExprs(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	simc := make(chan *simulator.Server, 1)
	banner := &testenv.SyncBuffer{}
	httpAddr := runDev(t, devConfig{DataDir: dataDir, NATSPort: -1, SimAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0",
		Version: "test", Out: banner, simulator: func(s *simulator.Server) { simc <- s }})
	sim := <-simc
	nurl := regexp.MustCompile(`NATS JetStream\s+(\S+)`).FindStringSubmatch(banner.String())
	ingestURL := regexp.MustCompile(`HR events in\s+(http://\S+)`).FindStringSubmatch(banner.String())
	if nurl == nil || ingestURL == nil {
		t.Fatalf("banner:\n%s", banner.String())
	}
	t.Setenv("NATS_URL", nurl[1])
	promURL := startPrometheus(t, httpAddr)
	from := time.Now()
	// Prometheus sees every counter at 0 before the workload, so that rate
	// and increase see the first increments.
	const scraped = `count_over_time(up{job="mfa-worker"}[1m]) >= 2 and up{job="mfa-worker"} == 1`
	testenv.Eventually(t, 60*time.Second, func() bool {
		n, err := queryRange(promURL, scraped, from)
		if err != nil {
			t.Fatalf("%s: %v", scraped, err)
		}
		return n > 0
	}, func() string { return scraped + ": no data" })

	submit := func(want int, args ...string) []byte {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(append([]string{"submit"}, args...), &out, &errb); code != want {
			t.Fatalf("submit %v: exit %d, want %d\n%s%s", args, code, want, out.String(), errb.String())
		}
		return out.Bytes()
	}
	var res struct {
		Data struct {
			DeviceID   int64  `json:"device_id"`
			StateToken string `json:"state_token"`
		} `json:"data"`
	}
	// Successes, and the state token of an activate for a mistyped OTP.
	if err := json.Unmarshal(submit(0, "enroll", "--user", "300", "--factor-name", "OneLogin SMS", "--display-name", "Phone", "--number", "+15550000300", "--id", "dash-enroll", "--wait"), &res); err != nil || res.Data.DeviceID == 0 {
		t.Fatalf("enroll result: %v", err)
	}
	device := strconv.FormatInt(res.Data.DeviceID, 10)
	if err := json.Unmarshal(submit(0, "activate", "--user", "300", "--device", device, "--id", "dash-activate", "--wait"), &res); err != nil || res.Data.StateToken == "" {
		t.Fatalf("activate result: %v", err)
	}
	// A person's own mistakes: a mistyped OTP and an unknown email.
	submit(1, "verify", "--user", "300", "--device", device, "--state-token", res.Data.StateToken, "--otp", "WRONG1", "--id", "dash-verify", "--wait")
	submit(1, "enroll", "--email", "nobody@example.invalid", "--factor-name", "OneLogin SMS", "--display-name", "Phone", "--number", "+15550000301", "--id", "dash-nobody", "--wait")
	// A scheduled offboard.
	submit(0, "offboard", "--user", "302", "--not-before", time.Now().Add(2*time.Hour).UTC().Format(time.RFC3339), "--id", "dash-scheduled")
	// A rescinded termination: a scheduled offboard cancelled.
	submit(0, "offboard", "--user", "305", "--not-before", time.Now().Add(2*time.Hour).UTC().Format(time.RFC3339), "--id", "dash-rescinded")
	submit(0, "cancel", "--job-id", "dash-rescinded", "--id", "dash-cancel", "--wait")
	// Retries: OneLogin answers 503 for a few seconds.
	sim.SetFaults(simulator.Faults{OutageUntil: time.Now().Add(3 * time.Second)})
	submit(0, "offboard", "--user", "300", "--id", "dash-offboard", "--wait", "--timeout", "60s")
	// A duplicate: the finished job's id again, in another stream message.
	nc, err := nats.Connect(nurl[1])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	body := `{"id":"dash-dup","type":"offboard","user_id":304,"params":{}}`
	if err := testenv.PublishOne(ctx, js, "offboard", body, "dash-dup"); err != nil {
		t.Fatal(err)
	}
	var jo bytes.Buffer
	testenv.Eventually(t, 30*time.Second, func() bool {
		jo.Reset()
		return run([]string{"job", "dash-dup"}, &jo, io.Discard) == 0 && strings.Contains(jo.String(), `"outcome"`)
	}, func() string { return "job dash-dup: " + jo.String() })
	if err := testenv.PublishOne(ctx, js, "offboard", body, "dash-dup-again"); err != nil {
		t.Fatal(err)
	}
	// HR events: a leaver mapped to an offboard, and an event the rules
	// ignore.
	for i, typ := range []string{"io.mfaworker.person.left", "io.mfaworker.person.hired"} {
		body := fmt.Sprintf(`{"specversion":"1.0","id":"dash-evt-%d","source":"https://hr.example.com","type":%q,"time":"2026-11-26T10:00:00Z","data":{"user_id":303}}`, i, typ)
		if code, answer := signedCloudEvent(t, ingestURL[1], dataDir, body); code/100 != 2 {
			t.Fatalf("CloudEvent %s: %d %s", typ, code, answer)
		}
	}

	// A sender with a wrong secret: a failed authentication.
	if code, answer := signedCloudEventWith(t, ingestURL[1], []byte("not the secret"), `{"specversion":"1.0","id":"dash-evt-bad","source":"https://hr.example.com","type":"io.mfaworker.person.left","data":{"user_id":303}}`); code != http.StatusUnauthorized {
		t.Fatalf("CloudEvent with a wrong secret: %d %s", code, answer)
	}

	// Every expression returns data once Prometheus has scraped the lot,
	// but those of unwired: these must return none, so that the list
	// shrinks as soon as the counting is in.
	for name := range unwired {
		if _, ok := exprs[name]; !ok {
			t.Errorf("unwired names %q, which the dashboard does not have", name)
		}
		delete(exprs, name)
	}
	missing := map[string]string{}
	noData := func() string {
		var names []string
		for n, e := range missing {
			names = append(names, n+": "+e)
		}
		sort.Strings(names)
		return fmt.Sprintf("%d dashboard expressions return no data:\n  %s", len(names), strings.Join(names, "\n  "))
	}
	var asked time.Time
	// The other checks below still run when this one fails.
	if err := testenv.WaitFor(90*time.Second, func() bool {
		// Prometheus scrapes every second: asking more often shows nothing new.
		if time.Since(asked) < time.Second {
			return false
		}
		asked = time.Now()
		clear(missing)
		for name, e := range exprs {
			n, err := queryRange(promURL, grafanaVars(e), from)
			if err != nil {
				t.Fatalf("%s: %s: %v", name, e, err)
			}
			if n == 0 {
				missing[name] = e
			}
		}
		return len(missing) == 0
	}, noData); err != nil {
		t.Error(err)
	}

	for name, why := range unwired {
		if n, err := queryRange(promURL, grafanaVars(exprsAll[name]), from); err != nil || n > 0 {
			t.Errorf("%s returns data (%d series, %v): remove it from unwired (%s)", name, n, err, why)
		}
	}

	// Zero series are hidden: the dead-letter panel shows the two pairs
	// that had dead letters, not every type and reason.
	n, err := queryRange(promURL, grafanaVars(exprs["Dead letters by type and reason / A"]), from)
	if err != nil || n != 2 {
		t.Errorf("the dead-letter panel draws %d series (%v), want 2 (verify verification_failed, enroll user_not_found)", n, err)
	}

	// Every alert rule evaluates without error, and the person's mistakes
	// raise none.
	resp, err := http.Get(promURL + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rr struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
					Alerts    []struct {
						Labels map[string]string `json:"labels"`
					} `json:"alerts"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rr); err != nil {
		t.Fatal(err)
	}
	rulesSeen := 0
	for _, g := range rr.Data.Groups {
		for _, r := range g.Rules {
			rulesSeen++
			if r.Health != "ok" {
				t.Errorf("rule %s/%s: health %q %s", g.Name, r.Name, r.Health, r.LastError)
			}
			if r.Name == "MfaDeadLetters" && len(r.Alerts) > 0 {
				t.Errorf("MfaDeadLetters fired for a person's own mistakes: %v", r.Alerts)
			}
		}
	}
	if rulesSeen < 10 {
		t.Errorf("Prometheus loaded %d rules from alerts.yml", rulesSeen)
	}
}
