package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
)

// maxDLQBody is the contract's cap on a dead letter's body (64 KiB).
const maxDLQBody = 64 << 10

// secretKeys are blanked at any depth of a dead letter's JSON body.
var secretKeys = map[string]bool{"otp_token": true, "state_token": true, "mfa_token": true}

// dlqBody prepares an event body for MFA_DLQ: secrets blanked, at most 64
// KiB. The extra headers say when the body was cut.
func dlqBody(body []byte) ([]byte, map[string]string) {
	extra := map[string]string{}
	var v any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&v); err == nil {
		if blank(v) {
			if b, err := json.Marshal(v); err == nil {
				body = b
			}
		}
	} else {
		for k := range secretKeys {
			if bytes.Contains(body, []byte(k)) {
				sum := sha256.Sum256(body)
				return []byte("unreadable body of " + strconv.Itoa(len(body)) + " bytes, sha256 " + hex.EncodeToString(sum[:])), extra
			}
		}
	}
	if len(body) > maxDLQBody {
		sum := sha256.Sum256(body)
		extra["Mfa-Body-Truncated"] = "true"
		extra["Mfa-Body-Sha256"] = hex.EncodeToString(sum[:])
		body = body[:maxDLQBody]
	}
	return body, extra
}

// blank replaces secret values in place and reports whether it did.
func blank(v any) bool {
	changed := false
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if secretKeys[k] {
				if e != "" {
					x[k] = ""
					changed = true
				}
				continue
			}
			changed = blank(e) || changed
		}
	case []any:
		for _, e := range x {
			changed = blank(e) || changed
		}
	}
	return changed
}
