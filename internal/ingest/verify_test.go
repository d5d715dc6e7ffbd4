package ingest

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestVerifyStandardWebhook(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"a":1}`)
	good := signCE(body, "msg_1", now, ceKey)
	only := func(sig string) http.Header {
		h := good.Clone()
		h.Set("Webhook-Signature", sig)
		return h
	}
	valid := good.Get("Webhook-Signature")[len("v1,c3RhbGU= "):]
	cases := []struct {
		name string
		h    http.Header
		body []byte
		now  time.Time
		want error
	}{
		{"valid among several", good, body, now, nil},
		{"valid alone", only(valid), body, now, nil},
		{"valid after an unknown version", only("v1a,abc " + valid), body, now, nil},
		{"4m59s late", good, body, now.Add(299 * time.Second), nil},
		{"5m01s late", good, body, now.Add(301 * time.Second), errTimestamp},
		{"5m01s early", good, body, now.Add(-301 * time.Second), errTimestamp},
		{"other body", good, []byte(`{"a":2}`), now, errBadSignature},
		{"not base64", only("v1,!!!"), body, now, errBadSignature},
		{"wrong version", only("v2" + valid[2:]), body, now, errBadSignature},
		{"no signature", only(""), body, now, errNoSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := verifyStandardWebhook(c.h, c.body, ceKey, c.now); got != c.want {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
	h := good.Clone()
	h.Set("Webhook-Id", "msg_2") // the id is signed too
	if err := verifyStandardWebhook(h, body, ceKey, now); err != errBadSignature {
		t.Errorf("another webhook-id: %v", err)
	}
}

func TestParseWebhookSecret(t *testing.T) {
	k, err := ParseWebhookSecret(ceSecret)
	if err != nil || string(k) != string(ceKey) {
		t.Errorf("whsec_: %q %v", k, err)
	}
	// The reference libraries read the secret without its prefix too.
	bare := bytes.TrimPrefix(ceSecret, []byte("whsec_"))
	if k, err := ParseWebhookSecret(bare); err != nil || string(k) != string(ceKey) {
		t.Errorf("without whsec_: %v", err)
	}
	if _, err := ParseWebhookSecret([]byte("not base64 at all!")); err == nil || strings.Contains(err.Error(), "base64 at all") {
		t.Errorf("a secret that is not base64: %v", err)
	}
	if _, err := ParseWebhookSecret([]byte("whsec_%%%")); err == nil {
		t.Error("bad base64 accepted")
	}
}

func TestVerifyBambooHRAndHiBob(t *testing.T) {
	now := time.Now()
	body := []byte(`{"employees":[]}`)
	if err := verifyBambooHR(signBamboo(body, now, bambooKey), body, bambooKey, now); err != nil {
		t.Errorf("bamboohr: %v", err)
	}
	h := signBamboo(body, now, bambooKey)
	h.Set("X-BambooHR-Timestamp", strconv.FormatInt(now.Unix()+1, 10)) // the timestamp is signed
	if err := verifyBambooHR(h, body, bambooKey, now); err != errBadSignature {
		t.Errorf("bamboohr other timestamp: %v", err)
	}
	if err := verifyHiBob(signHiBob(body, hibobKey), body, hibobKey, now); err != nil {
		t.Errorf("hibob: %v", err)
	}
	if err := verifyHiBob(signHiBob(body, bambooKey), body, hibobKey, now); err != errBadSignature {
		t.Errorf("hibob other key: %v", err)
	}
}

func TestVerifyBearer(t *testing.T) {
	for _, c := range []struct {
		auth string
		ok   bool
	}{
		{"Bearer " + string(scimToken), true},
		{"bearer " + string(scimToken), true},
		{"Bearer " + string(scimToken) + "x", false},
		{"Basic " + string(scimToken), false},
		{string(scimToken), false},
		{"", false},
	} {
		err := verifyBearer(http.Header{"Authorization": {c.auth}}, scimToken)
		if (err == nil) != c.ok {
			t.Errorf("%q: %v", c.auth, err)
		}
	}
}

// TestBambooHRTimestampForms: X-BambooHR-Timestamp in Unix seconds or ISO
// 8601 with either offset form; without an offset it is refused.
func TestBambooHRTimestampForms(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for _, ts := range []string{"1796378400", "2026-12-04T10:00:00+00:00", "2026-12-04T10:00:00+0000", "2026-12-04T11:00:00+01:00", "2026-12-04T10:00:00Z"} {
		if err := checkTimestamp(ts, now); err != nil {
			t.Errorf("%s: %v", ts, err)
		}
	}
	for _, ts := range []string{"2026-12-04T10:00:00", "2026-12-04", "2026-12-04T12:00:00+00:00", "soon"} {
		if err := checkTimestamp(ts, now); err == nil {
			t.Errorf("%s accepted", ts)
		}
	}
}
