package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// Authentication failures; their messages are what a sender is told.
var (
	errNoSignature  = errors.New("signature headers missing")
	errBadSignature = errors.New("signature does not match")
	errTimestamp    = errors.New("timestamp unreadable or more than 5 minutes away from now")
	errNoToken      = errors.New("bearer token missing or wrong")
)

// precheckStandardWebhook checks what the headers alone can tell: the
// signature headers are present and the timestamp is within Tolerance.
func precheckStandardWebhook(h http.Header, now time.Time) error {
	if h.Get("webhook-id") == "" || h.Get("webhook-timestamp") == "" || h.Get("webhook-signature") == "" {
		return errNoSignature
	}
	return checkTimestamp(h.Get("webhook-timestamp"), now)
}

// precheckBambooHR: signature and timestamp present, timestamp in range.
func precheckBambooHR(h http.Header, now time.Time) error {
	if h.Get("X-BambooHR-Signature") == "" || h.Get("X-BambooHR-Timestamp") == "" {
		return errNoSignature
	}
	return checkTimestamp(h.Get("X-BambooHR-Timestamp"), now)
}

// precheckHiBob: the signature is present (HiBob sends no timestamp).
func precheckHiBob(h http.Header, _ time.Time) error {
	if h.Get("Bob-Signature") == "" {
		return errNoSignature
	}
	return nil
}

// verifyStandardWebhook checks a Standard Webhooks signature:
// webhook-signature holds space-separated "v1,<base64 HMAC-SHA256 of
// id.timestamp.body>" entries, any one of which may match (key rotation).
func verifyStandardWebhook(h http.Header, body, key []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errNoSignature
	}
	if err := checkTimestamp(ts, now); err != nil {
		return err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	want := mac.Sum(nil)
	for _, f := range strings.Fields(sigs) {
		v, sig, ok := strings.Cut(f, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errBadSignature
}

// verifyBambooHR checks X-BambooHR-Signature: the hex HMAC-SHA256 of the
// raw body followed by the X-BambooHR-Timestamp value.
func verifyBambooHR(h http.Header, body, key []byte, now time.Time) error {
	sig, ts := h.Get("X-BambooHR-Signature"), h.Get("X-BambooHR-Timestamp")
	if sig == "" || ts == "" {
		return errNoSignature
	}
	if err := checkTimestamp(ts, now); err != nil {
		return err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	mac.Write([]byte(ts))
	got, err := hex.DecodeString(strings.TrimSpace(sig))
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return errBadSignature
	}
	return nil
}

// verifyHiBob checks Bob-Signature: the base64 HMAC-SHA512 of the raw body.
// HiBob sends no timestamp; a replay is caught by deduplication instead.
func verifyHiBob(h http.Header, body, key []byte, _ time.Time) error {
	sig := h.Get("Bob-Signature")
	if sig == "" {
		return errNoSignature
	}
	mac := hmac.New(sha512.New, key)
	mac.Write(body)
	got, err := base64.StdEncoding.DecodeString(strings.TrimSpace(sig))
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return errBadSignature
	}
	return nil
}

// verifyBearer compares a bearer token in constant time. Both sides are
// hashed first, so that not even the token's length leaks through timing.
func verifyBearer(h http.Header, token []byte) error {
	scheme, v, ok := strings.Cut(h.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return errNoToken
	}
	a := sha256.Sum256([]byte(strings.TrimSpace(v)))
	b := sha256.Sum256(token)
	if !hmac.Equal(a[:], b[:]) {
		return errNoToken
	}
	return nil
}

// checkTimestamp accepts Unix seconds or an ISO 8601 date-time with an
// offset (+00:00, +0000 or Z) within Tolerance of now, either way.
func checkTimestamp(ts string, now time.Time) error {
	var t time.Time
	if n, err := strconv.ParseInt(strings.TrimSpace(ts), 10, 64); err == nil {
		t = time.Unix(n, 0)
	} else if p, err := rules.ParseTime(ts); err == nil && hasOffset(ts) {
		t = p
	} else {
		return errTimestamp
	}
	if d := now.Sub(t); d > Tolerance || d < -Tolerance {
		return errTimestamp
	}
	return nil
}

// hasOffset reports whether an ISO 8601 date-time names its offset: a
// signed timestamp without one could be read in any zone.
func hasOffset(ts string) bool {
	ts = strings.TrimSpace(ts)
	if strings.HasSuffix(ts, "Z") || strings.HasSuffix(ts, "z") {
		return true
	}
	if i := strings.LastIndexAny(ts, "+-"); i > len("2006-01-02") {
		return true
	}
	return false
}
