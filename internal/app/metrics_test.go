package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mfa-worker/mfa-worker/internal/metrics"
	"github.com/mfa-worker/mfa-worker/internal/testenv"
)

// contractMetrics are the contract's metrics with their types and labels.
var contractMetrics = map[string]struct {
	typ    dto.MetricType
	labels []string
}{
	"mfa_jobs_total":                        {dto.MetricType_COUNTER, []string{"outcome", "type"}},
	"mfa_job_duration_seconds":              {dto.MetricType_HISTOGRAM, []string{"outcome", "type"}},
	"mfa_jobs_in_flight":                    {dto.MetricType_GAUGE, []string{"type"}},
	"mfa_job_retries_total":                 {dto.MetricType_COUNTER, []string{"type"}},
	"mfa_dead_letters_total":                {dto.MetricType_COUNTER, []string{"reason", "type"}},
	"mfa_duplicate_jobs_total":              {dto.MetricType_COUNTER, []string{"type"}},
	"mfa_onelogin_requests_total":           {dto.MetricType_COUNTER, []string{"code", "endpoint"}},
	"mfa_onelogin_request_duration_seconds": {dto.MetricType_HISTOGRAM, []string{"endpoint"}},
	"mfa_onelogin_rate_limit_remaining":     {dto.MetricType_GAUGE, nil},
	"mfa_consumer_pending_messages":         {dto.MetricType_GAUGE, []string{"consumer"}},
}

func TestMetricsAfterAMixedRun(t *testing.T) {
	w, nurl := startWorker(t)
	_, js, sub := resultsClient(t, nurl)
	ctx := context.Background()
	const user = 424242
	results := map[string]map[string]any{}
	send := func(typ, body string) map[string]any {
		t.Helper()
		var j struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal([]byte(body), &j)
		if _, err := js.Publish(ctx, "mfa.jobs."+typ, []byte(body)); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("no result for %s", j.ID)
			}
			var r map[string]any
			_ = json.Unmarshal(m.Data, &r)
			results[r["job_id"].(string)] = r
			if r["job_id"] == j.ID {
				return r
			}
		}
	}
	r := send("enroll", fmt.Sprintf(`{"id":"m1","type":"enroll","user_id":%d,"params":{"factor_name":"OneLogin SMS","display_name":"p","number":"+15551234567"}}`, user))
	dev := int64(r["data"].(map[string]any)["device_id"].(float64))
	send("activate", fmt.Sprintf(`{"id":"m2","type":"activate","user_id":%d,"params":{"device_id":%d}}`, user, dev))
	send("verify", fmt.Sprintf(`{"id":"m3","type":"verify","user_id":%d,"params":{"device_id":%d,"otp_token":"1","state_token":"x"}}`, user, dev))
	kp, _ := nkeys.CreateCurveKeys()
	xkey, _ := kp.PublicKey()
	send("generate_token", fmt.Sprintf(`{"id":"m4","type":"generate_token","user_id":%d,"params":{"recipient_xkey":"%s"}}`, user, xkey))
	send("remove", fmt.Sprintf(`{"id":"m5","type":"remove","user_id":%d,"params":{"device_id":%d}}`, user, dev+1000))
	send("offboard", fmt.Sprintf(`{"id":"m6","type":"offboard","user_id":%d}`, user))
	send("offboard", fmt.Sprintf(`{"id":"m6","type":"offboard","user_id":%d}`, user)) // duplicate
	send("offboard", fmt.Sprintf(`{"id":"m7","type":"offboard","user_id":0}`))        // rejected

	// Metrics are counted just after a job's result and DLQ copy are
	// published: wait until the last job (the rejection) shows.
	var fams map[string]*dto.MetricFamily
	testenv.Eventually(t, 10*time.Second, func() bool {
		fams = scrape(t, w.HTTPAddr)
		return rejectedOffboards(fams) == 1
	}, func() string { return "the rejected job never reached the metrics" })
	for name, want := range contractMetrics {
		f, ok := fams[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if f.GetType() != want.typ {
			t.Errorf("%s is a %v, want %v", name, f.GetType(), want.typ)
		}
		if len(f.GetMetric()) == 0 {
			t.Errorf("%s has no series", name)
		}
		for _, m := range f.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName())
			}
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(want.labels, ",") {
				t.Errorf("%s labels %v, want %v", name, got, want.labels)
			}
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s missing: Go and process collectors not registered", name)
		}
	}
	// Label values come from small known sets; none is a user or device id.
	allowed := map[string]*regexp.Regexp{
		"type":     regexp.MustCompile(`^(` + strings.Join(metrics.JobTypes, "|") + `)$`),
		"outcome":  regexp.MustCompile(`^(` + strings.Join(metrics.Outcomes, "|") + `)$`),
		"endpoint": regexp.MustCompile(`^(` + strings.Join(metrics.Endpoints, "|") + `)$`),
		"code":     regexp.MustCompile(`^([1-5][0-9][0-9]|error)$`),
		"consumer": regexp.MustCompile(`^(mfa-worker-urgent|mfa-worker)$`),
		"reason":   regexp.MustCompile(`^[a-z][a-z_]*$`),
	}
	ids := map[string]bool{fmt.Sprint(user): true, fmt.Sprint(dev): true, fmt.Sprint(dev + 1000): true}
	for name := range contractMetrics {
		for _, m := range fams[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if ids[l.GetValue()] {
					t.Errorf("%s label %s holds an id: %s", name, l.GetName(), l.GetValue())
				}
				if re := allowed[l.GetName()]; re != nil && !re.MatchString(l.GetValue()) {
					t.Errorf("%s label %s=%q is not from its known set", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	value := func(name string, labels map[string]string) float64 {
		for _, m := range fams[name].GetMetric() {
			match := true
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					match = false
				}
			}
			if match {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
		return -1
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mfa_jobs_total", map[string]string{"type": "enroll", "outcome": "succeeded"}, 1},
		{"mfa_jobs_total", map[string]string{"type": "verify", "outcome": "failed"}, 1},
		{"mfa_jobs_total", map[string]string{"type": "remove", "outcome": "noop"}, 1},
		{"mfa_jobs_total", map[string]string{"type": "offboard", "outcome": "rejected"}, 1},
		{"mfa_duplicate_jobs_total", map[string]string{"type": "offboard"}, 1},
		{"mfa_dead_letters_total", map[string]string{"type": "verify", "reason": "verification_failed"}, 1},
		{"mfa_dead_letters_total", map[string]string{"type": "offboard", "reason": "invalid_user_id"}, 1},
		{"mfa_onelogin_requests_total", map[string]string{"endpoint": "enroll", "code": "200"}, 1},
		{"mfa_onelogin_requests_total", map[string]string{"endpoint": "verify", "code": "401"}, 1},
		{"mfa_onelogin_requests_total", map[string]string{"endpoint": "token", "code": "200"}, 1},
		{"mfa_jobs_in_flight", map[string]string{"type": "enroll"}, 0},
	}
	for _, c := range checks {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if rem := value("mfa_onelogin_rate_limit_remaining", nil); rem <= 0 || rem >= 5000 {
		t.Errorf("rate limit remaining = %v", rem)
	}
}

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// rejectedOffboards reads mfa_jobs_total{type="offboard",outcome="rejected"}.
func rejectedOffboards(fams map[string]*dto.MetricFamily) float64 {
	for _, m := range fams["mfa_jobs_total"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if l["type"] == "offboard" && l["outcome"] == "rejected" {
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
