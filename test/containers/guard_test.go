//go:build containers

package containers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mfa-worker/mfa-worker/internal/guard"
	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
	"github.com/mfa-worker/mfa-worker/internal/topology"
)

// scrapeHeld sums mfa_jobs_held from a worker's /metrics, waiting up to
// timeout for it to reach want.
func scrapeHeld(addr string, timeout time.Duration, want int) int {
	got := -1
	deadline := time.Now().Add(timeout)
	for {
		got = -1
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got = 0
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "mfa_jobs_held{") {
					f := strings.Fields(l)
					v, _ := strconv.ParseFloat(f[len(f)-1], 64)
					got += int(v)
				}
			}
		}
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// heldJobs lists the jobs the guard holds (state held).
func (w *world) heldJobs() []guard.Held {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	g, err := guard.Open(ctx, w.js, guard.Config{})
	if err != nil {
		return nil
	}
	hs, err := g.List(ctx, guard.Filter{})
	if err != nil {
		return nil
	}
	return hs
}

// holdCmd runs `worker hold ...` against the world's NATS.
func (w *world) holdCmd(args ...string) string {
	w.t.Helper()
	full := append([]string{"hold", args[0], "--nats-url", w.natsURL, "--by", "scenario"}, args[1:]...)
	out, err := exec.Command(workerBin, full...).CombinedOutput()
	if err != nil {
		w.t.Fatalf("worker %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

// scimRules is the rules file of the scenario's `worker ingest`: a SCIM
// deactivation or delete offboards the person, as the scim-deactivated
// rule of internal/rules/testdata/examples.yaml.
const scimRules = `rules:
  - name: scim-deactivated
    when: event.source == "scim" && event.type in ["user.deactivated", "user.deleted"]
    job:
      type: '"offboard"'
      user:
        email: 'event.data.userName.contains("@") ? dyn(event.data.userName) : null'
        username: '!event.data.userName.contains("@") ? dyn(event.data.userName) : null'
        external_id: >-
          has(event.data.externalId) && event.data.externalId != "" ? dyn(event.data.externalId) : null
`

// scimBurst sends, for each person, a SCIM POST /scim/v2/Users (userName
// their email, externalId theirs) and a DELETE of the user it created, as
// a misfiring sync does, from senders connections at once. It returns how
// long the pairs took.
func scimBurst(base, token string, people []simulator.DirectoryUser, senders int) (time.Duration, error) {
	c := &http.Client{Timeout: 30 * time.Second}
	do := func(method, url string, body []byte) (int, []byte, error) {
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/scim+json")
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	pair := func(p simulator.DirectoryUser) error {
		body, _ := json.Marshal(map[string]any{
			"schemas":  []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
			"userName": p.Email, "externalId": p.ExternalID, "active": true,
			"name": map[string]string{"givenName": p.Firstname, "familyName": p.Lastname},
		})
		code, b, err := do(http.MethodPost, base+"/scim/v2/Users", body)
		if err != nil {
			return fmt.Errorf("create %s: %w", p.ExternalID, err)
		}
		var u struct {
			ID string `json:"id"`
		}
		if code != http.StatusCreated || json.Unmarshal(b, &u) != nil || u.ID == "" {
			return fmt.Errorf("create %s: %d %s", p.ExternalID, code, b)
		}
		code, b, err = do(http.MethodDelete, base+"/scim/v2/Users/"+u.ID, nil)
		if err != nil {
			return fmt.Errorf("delete %s: %w", p.ExternalID, err)
		}
		if code != http.StatusNoContent {
			return fmt.Errorf("delete %s: %d %s", p.ExternalID, code, b)
		}
		return nil
	}
	next := make(chan simulator.DirectoryUser)
	errs := make(chan error, senders)
	start := time.Now()
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for p := range next {
				if err := pair(p); err != nil {
					errs <- err
					for range next { // drain: the burst has failed
					}
					return
				}
			}
		})
	}
	for _, p := range people {
		next <- p
	}
	close(next)
	wg.Wait()
	took := time.Since(start)
	select {
	case err := <-errs:
		return took, err
	default:
		return took, nil
	}
}

// jobPublishes records the first publish of each job id on a subject.
type jobPublishes struct {
	mu   sync.Mutex
	byID map[string][]byte
}

// watchPublishes records every job published on subject from now on,
// whoever publishes it.
func (w *world) watchPublishes(subject string) *jobPublishes {
	w.t.Helper()
	jp := &jobPublishes{byID: map[string][]byte{}}
	sub, err := w.nc.Subscribe(subject, func(m *nats.Msg) {
		id := m.Header.Get(jetstream.MsgIDHeader)
		jp.mu.Lock()
		defer jp.mu.Unlock()
		if _, ok := jp.byID[id]; !ok {
			jp.byID[id] = m.Data
		}
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := w.nc.Flush(); err != nil {
		w.t.Fatal(err)
	}
	return jp
}

func (jp *jobPublishes) count() int {
	jp.mu.Lock()
	defer jp.mu.Unlock()
	return len(jp.byID)
}

// jobs returns the recorded jobs, by id order.
func (jp *jobPublishes) jobs(typ string) []testenv.Job {
	jp.mu.Lock()
	defer jp.mu.Unlock()
	out := make([]testenv.Job, 0, len(jp.byID))
	for id, b := range jp.byID {
		out = append(out, testenv.Job{ID: id, Type: typ, Body: b})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// H: a misfiring HR sync through `worker ingest`: 300 SCIM create-then-delete
// pairs within a minute against a guard limit of 20, two replicas. Each
// delete is an HR event that the rules turn into an offboard of source
// hr.scim with the ingest's own job id. At most 20 run, the rest are held
// (no result, no OneLogin call, counted in mfa_jobs_held) through a
// replica's SIGKILL and a NATS restart, and a real Prometheus scraping the
// surviving replica with deploy/prometheus/alerts.yml fires MfaOffboardsHeld
// for hr.scim; `worker hold release --job` runs the chosen ones exactly
// once and `worker hold discard --source` ends the rest cancelled discarded
// without a call, and the alert ends. Every job ends with one result and a
// finished ledger record.
func TestGuardHoldsAMisfiringSync(t *testing.T) {
	const (
		total   = 300
		limit   = 20
		release = 10
		source  = "hr.scim"
		rule    = "scim-deactivated"
		alert   = "MfaOffboardsHeld"
	)
	needPrometheus(t)
	people := make([]simulator.DirectoryUser, total)
	userOf := map[string]int64{} // external id -> OneLogin user id
	for i := range total {
		people[i] = simulator.DirectoryUser{ID: int64(8_000_000 + i), Email: fmt.Sprintf("leaver%03d@example.com", i),
			Username: fmt.Sprintf("leaver%03d", i), ExternalID: fmt.Sprintf("HR-%03d", i),
			Firstname: "Leaver", Lastname: strconv.Itoa(i), Status: 1, State: 1}
		userOf[people[i].ExternalID] = people[i].ID
	}
	w := newWorld(t, simulator.Config{Directory: people})
	w.sim.SetFaults(simulator.Faults{Latency: 20 * time.Millisecond, Jitter: 20 * time.Millisecond})
	for _, p := range people {
		if _, err := w.sim.EnrollDevice(p.ID, "Google Authenticator", "GA", true); err != nil {
			t.Fatal(err)
		}
	}
	n := w.startNATS("nats-h", "")
	w.connect()
	w.provision(1)

	guardEnv := []string{"WORKER_GUARD_LIMIT=" + strconv.Itoa(limit), "WORKER_GUARD_WINDOW=1h"}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	w.startWorker("w1", append(guardEnv, "WORKER_HTTP_ADDR="+httpAddr)...)
	w2 := w.startWorker("w2", guardEnv...)

	// worker ingest with a SCIM bearer token and the rules, once a replica
	// is ready (it provisions the leaver registry, which ingest tells of
	// every HR leaver).
	if err := testenv.WaitHTTP("http://"+httpAddr+"/readyz", 60*time.Second); err != nil {
		t.Fatalf("worker: %v", err)
	}
	dir := t.TempDir()
	token := rand.Text()
	tokenFile, rulesFile := filepath.Join(dir, "scim-token"), filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rulesFile, []byte(scimRules), 0o600); err != nil {
		t.Fatal(err)
	}
	ingestAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	w.startIngest("ingest", "INGEST_HTTP_ADDR="+ingestAddr, "INGEST_SCIM_TOKEN_FILE="+tokenFile, "WORKER_RULES="+rulesFile)
	if err := testenv.WaitHTTP("http://"+ingestAddr+"/readyz", 60*time.Second); err != nil {
		t.Fatalf("worker ingest: %v", err)
	}

	// Prometheus scrapes the replica that survives; its alert is watched
	// from now on, beside the rest of the scenario.
	prom := startPrometheus(t, httpAddr)
	type seen struct {
		a   *promAlert
		err error
		at  time.Time
	}
	firing := make(chan seen, 1)
	actx, stopWatch := context.WithCancel(w.ctx)
	var watch sync.WaitGroup
	t.Cleanup(func() { stopWatch(); watch.Wait() })
	watch.Go(func() {
		a, err := prom.waitAlert(actx, alert, source, "firing", 6*time.Minute)
		firing <- seen{a, err, time.Now()}
	})

	pubs := w.watchPublishes(job.TypeOffboard.Subject())
	type burst struct {
		took time.Duration
		err  error
	}
	sent := make(chan burst, 1)
	watch.Go(func() {
		took, err := scimBurst("http://"+ingestAddr, token, people, 8)
		sent <- burst{took, err}
	})

	// A replica dies while the burst is being held.
	if err := testenv.WaitFor(3*time.Minute, func() bool { return len(w.heldJobs()) >= 100 }, func() string {
		return fmt.Sprintf("%d held, %d offboards published", len(w.heldJobs()), pubs.count())
	}); err != nil {
		t.Fatal(err)
	}
	w2.kill()
	killedAt := len(w.heldJobs())
	b := <-sent
	if b.err != nil {
		t.Fatalf("SCIM burst: %v", b.err)
	}
	t.Logf("%d SCIM create-then-delete pairs sent in %v", total, b.took.Round(10*time.Millisecond))
	if b.took >= time.Minute {
		t.Errorf("%d SCIM pairs took %v, want under a minute", total, b.took)
	}

	// The planned jobs are what ingest published: one offboard per person,
	// with the ingest's job id hr:scim:<event id>:<rule>.
	if err := testenv.WaitFor(2*time.Minute, func() bool { return pubs.count() >= total }, func() string {
		return fmt.Sprintf("%d of %d offboards published", pubs.count(), total)
	}); err != nil {
		t.Fatal(err)
	}
	planned := pubs.jobs(string(job.TypeOffboard))
	victim := map[string]int64{} // job id -> OneLogin user id
	for _, j := range planned {
		var body struct {
			Source string `json:"source"`
			User   struct {
				Email      string `json:"email"`
				ExternalID string `json:"external_id"`
			} `json:"user"`
		}
		if err := json.Unmarshal(j.Body, &body); err != nil {
			t.Fatalf("%s: %v", j.ID, err)
		}
		uid := userOf[body.User.ExternalID]
		if !strings.HasPrefix(j.ID, "hr:scim:") || !strings.HasSuffix(j.ID, ":"+rule) || body.Source != source || uid == 0 {
			t.Errorf("published %s: %s", j.ID, j.Body)
		}
		victim[j.ID] = uid
	}
	jobsOf := map[int64]int{}
	for _, uid := range victim {
		jobsOf[uid]++
	}
	if len(planned) != total || len(jobsOf) != total {
		t.Fatalf("%d offboards published for %d people, want %d for %d", len(planned), len(jobsOf), total, total)
	}

	settled := func() bool {
		return w.count(topology.StreamResults) == limit && len(w.heldJobs()) == total-limit && w.ackPending() == 0
	}
	if err := testenv.WaitFor(3*time.Minute, settled, func() string {
		return fmt.Sprintf("%d results, %d held, %d pending", w.count(topology.StreamResults), len(w.heldJobs()), w.ackPending())
	}); err != nil {
		t.Fatal(err)
	}
	if got := scrapeHeld(httpAddr, 60*time.Second, total-limit); got != total-limit {
		t.Fatalf("mfa_jobs_held %d, want %d", got, total-limit)
	}

	// NATS restarted: the holds, the count and the held gauge survive.
	timeout := 5 * time.Second
	if err := n.c.Stop(w.ctx, &timeout); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second) // NATS is away
	if err := n.c.Start(w.ctx); err != nil {
		t.Fatal(err)
	}
	n.waitServing(t, w.ctx)
	w.startWorker("w3", guardEnv...)
	if err := testenv.WaitFor(2*time.Minute, settled, func() string {
		return fmt.Sprintf("after the restart: %d results, %d held, %d pending", w.count(topology.StreamResults), len(w.heldJobs()), w.ackPending())
	}); err != nil {
		t.Fatal(err)
	}
	if got := scrapeHeld(httpAddr, 90*time.Second, total-limit); got != total-limit {
		t.Fatalf("mfa_jobs_held %d after the NATS restart, want %d", got, total-limit)
	}
	ranFirst := map[string]bool{}
	for id := range w.readResults() {
		ranFirst[id] = true
	}
	effects := map[string]int{}
	for _, e := range w.sim.Effects() {
		effects[e.RequestID]++
	}
	if len(effects) > limit {
		t.Errorf("%d jobs made OneLogin effects before any release, the limit is %d", len(effects), limit)
	}
	held := w.heldJobs()
	firstHeld := time.Time{}
	for _, h := range held {
		if ranFirst[h.JobID] || effects[h.JobID] != 0 {
			t.Errorf("held %s: result %v, %d OneLogin effects", h.JobID, ranFirst[h.JobID], effects[h.JobID])
		}
		if _, ok := victim[h.JobID]; !ok {
			t.Errorf("held %s: not a job ingest published", h.JobID)
		}
		if firstHeld.IsZero() || h.HeldAt.Before(firstHeld) {
			firstHeld = h.HeldAt
		}
	}

	// The page went out while the jobs were held.
	f := <-firing
	if f.err != nil {
		t.Fatalf("%s{source=%q}: %v", alert, source, f.err)
	}
	firedAfter := f.at.Sub(firstHeld)
	t.Logf("%s{source=%q} firing %v after the first hold (active since %v after it, value %s)", alert, source,
		firedAfter.Round(100*time.Millisecond), f.a.ActiveAt.Sub(firstHeld).Round(100*time.Millisecond), f.a.Value)

	// The operator releases some by id, then discards the rest.
	released := map[string]bool{}
	for _, h := range held[:release] {
		released[h.JobID] = true
		w.holdCmd("release", "--job", h.JobID)
	}
	w.waitResults(limit+release, 2*time.Minute)
	discardAt := time.Now()
	w.holdCmd("discard", "--source", source, "--reason", "misfiring sync")
	if _, err := prom.waitAlert(w.ctx, alert, source, "", time.Minute); err != nil {
		t.Errorf("after the discard: %v", err)
	}
	endedAfter := time.Since(discardAt)
	f2 := w.verify("h. guard: 300 SCIM create/delete pairs through worker ingest, limit 20; a replica SIGKILLed, NATS restarted, MfaOffboardsHeld fired, 10 released, the rest discarded",
		planned, fmt.Sprintf("%d pairs sent in %v; replica killed at %d held; %s firing %v after the first hold, gone %v after the discard",
			total, b.took.Round(100*time.Millisecond), killedAt, alert, firedAfter.Round(time.Second), endedAfter.Round(time.Second)))
	results := w.readResults()
	made := map[string]int{}
	for _, e := range w.sim.Effects() {
		made[e.RequestID]++
		if e.UserID != victim[e.RequestID] {
			t.Errorf("job %s made %s on user %d, its person is %d", e.RequestID, e.Kind, e.UserID, victim[e.RequestID])
		}
	}
	for _, j := range planned {
		rs := results[j.ID]
		if len(rs) == 0 {
			continue // counted by verify
		}
		r := rs[0]
		devices := len(w.sim.Devices(victim[j.ID]))
		switch {
		case ranFirst[j.ID] || released[j.ID]:
			// noop: the SIGKILLed replica removed the factor and died
			// before its result; the redelivery found it gone.
			if r.Outcome != job.Succeeded && r.Outcome != job.Noop || made[j.ID] != 1 || devices != 0 {
				t.Errorf("%s ran: %s, %d effects, %d devices left", j.ID, r.Outcome, made[j.ID], devices)
			}
		default:
			if r.Outcome != job.Cancelled || r.Error == nil || r.Error.Code != job.CodeDiscarded || made[j.ID] != 0 || devices != 1 {
				t.Errorf("%s discarded: %+v, %d effects, %d devices left", j.ID, r, made[j.ID], devices)
			}
		}
	}
	if ran := f2.Outcomes["succeeded"] + f2.Outcomes["noop"]; ran != limit+release || f2.Outcomes["cancelled"] != total-limit-release {
		t.Errorf("outcomes %v, want %d succeeded or noop and %d cancelled", f2.Outcomes, limit+release, total-limit-release)
	}
	if got := scrapeHeld(httpAddr, 60*time.Second, 0); got != 0 {
		t.Errorf("mfa_jobs_held %d after the discard, want 0", got)
	}
	if n := len(w.heldJobs()); n != 0 {
		t.Errorf("%d jobs still held", n)
	}
}
