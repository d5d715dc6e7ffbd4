package ingest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// swSigner signs every request the way the Standard Webhooks reference
// library does, as a sender using it in front of the CloudEvents SDK would.
type swSigner struct {
	wh   *standardwebhooks.Webhook
	next http.RoundTripper
	n    int
}

func (s *swSigner) RoundTrip(r *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	s.n++
	id := "msg_sdk_" + randomID()
	now := time.Now()
	sig, err := s.wh.Sign(id, now, body)
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.Header.Set("webhook-id", id)
	r.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	r.Header.Set("webhook-signature", sig)
	return s.next.RoundTrip(r)
}

// TestCloudEventsSDKBothModes: events sent with the CloudEvents Go SDK, in
// its default binary mode and in structured mode, signed by the Standard
// Webhooks reference library from the secret with and without whsec_,
// become the leaver's offboard.
func TestCloudEventsSDKBothModes(t *testing.T) {
	e := newEnv(t)
	e.runMapper(e.s)
	for i, secret := range []string{string(ceSecret), strings.TrimPrefix(string(ceSecret), "whsec_")} {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		signer := &swSigner{wh: wh, next: http.DefaultTransport}
		c, err := cloudevents.NewClientHTTP(cehttp.WithTarget(e.http.URL+"/events"), cehttp.WithRoundTripper(signer))
		if err != nil {
			t.Fatal(err)
		}
		for _, structured := range []bool{false, true} {
			ev := cloudevents.NewEvent()
			ev.SetID("sdk-" + randomID())
			ev.SetSource("https://hr.example.com/sdk")
			ev.SetType("io.mfaworker.person.left")
			ev.SetTime(time.Now())
			if err := ev.SetData(cloudevents.ApplicationJSON, map[string]any{"external_id": "E-SDK", "effective_at": time.Now().Format("2006-01-02")}); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if structured {
				ctx = cloudevents.WithEncodingStructured(ctx)
			}
			if res := c.Send(ctx, ev); !cloudevents.IsACK(res) {
				t.Fatalf("secret %d structured=%v: %v", i, structured, res)
			}
			want := "hr:cloudevents:" + rules.CloudEventID(ev.Source(), ev.ID()) + ":person-left"
			e.waitFor("job "+want, func() bool {
				for _, j := range e.jobs() {
					if j["id"] == want {
						return true
					}
				}
				return false
			})
		}
	}
	if n := len(e.jobs()); n != 4 {
		t.Fatalf("%d jobs, want 4", n)
	}
}
