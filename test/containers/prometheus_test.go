//go:build containers

package containers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// alertRules is the rule file Prometheus loads, as deploy/ has it.
const alertRules = "../../deploy/prometheus/alerts.yml"

// promServer is a Prometheus running as a host process on loopback.
type promServer struct {
	url string
}

// needPrometheus ends the test at once, saying how to install it, when
// Debian's prometheus is missing (before a long scenario, not after).
func needPrometheus(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Fatal("prometheus is not installed: apt-get install prometheus (Debian's package, which also gives promtool; .ci/run installs it)")
	}
}

// startPrometheus runs Debian's prometheus (the package that also gives
// promtool) with a config of its own: target scraped every second, the
// rules of deploy/prometheus/alerts.yml, unchanged, evaluated every second,
// and a storage directory of the test's.
func startPrometheus(t *testing.T, target string) *promServer {
	t.Helper()
	rules, err := filepath.Abs(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: mfa-worker
    static_configs:
      - targets: [%q]
`, rules, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	url, logs := testenv.Prometheus(t, dir, filepath.Join(dir, "prometheus.yml"))
	p := &promServer{url: url}
	// The rule file loaded: its groups are listed (a file Prometheus
	// cannot read leaves none).
	var rs struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name string `json:"name"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := p.get("/api/v1/rules", &rs); err != nil {
		t.Fatalf("prometheus rules: %v\n%s", err, logs.String())
	}
	found := false
	for _, g := range rs.Data.Groups {
		for _, r := range g.Rules {
			found = found || r.Name == "MfaOffboardsHeld"
		}
	}
	if !found {
		t.Fatalf("prometheus did not load MfaOffboardsHeld from %s\n%s", rules, logs.String())
	}
	return p
}

func (p *promServer) get(path string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(p.url + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// promAlert is an active alert as /api/v1/alerts lists it.
type promAlert struct {
	Labels   map[string]string `json:"labels"`
	State    string            `json:"state"` // pending or firing
	ActiveAt time.Time         `json:"activeAt"`
	Value    string            `json:"value"`
}

// alert returns the active alert name with the label source, if any.
func (p *promServer) alert(name, source string) (*promAlert, error) {
	var r struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := p.get("/api/v1/alerts", &r); err != nil {
		return nil, err
	}
	for _, a := range r.Data.Alerts {
		if a.Labels["alertname"] == name && a.Labels["source"] == source {
			return &a, nil
		}
	}
	return nil, nil
}

// waitAlert polls until the alert name with the label source is in state
// (firing), or, with state "", until it is not active at all; it gives up
// after timeout or when ctx ends.
func (p *promServer) waitAlert(ctx context.Context, name, source, state string, timeout time.Duration) (*promAlert, error) {
	var last *promAlert
	var lastErr error
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		last, lastErr = p.alert(name, source)
		switch {
		case lastErr != nil:
		case state == "" && last == nil:
			return nil, nil
		case last != nil && last.State == state:
			return last, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			now := "absent"
			if last != nil {
				now = last.State
			}
			if lastErr != nil {
				now = lastErr.Error()
			}
			want := strings.TrimSpace(state + " (" + name + ", source " + source + ")")
			if state == "" {
				want = name + " (source " + source + ") gone"
			}
			return last, fmt.Errorf("after %v: want %s, have %s", time.Since(start).Round(time.Second), want, now)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
