package job

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"unicode/utf8"
)

// MaxDLQBody is the largest body a DLQ copy holds (64 KiB): with its
// headers it always fits in a NATS message.
const MaxDLQBody = 64 << 10

// SecretKeys are the JSON keys whose values never reach a DLQ copy, at any
// depth of any body. They match case-insensitively (ASCII).
var SecretKeys = []string{"otp_token", "state_token", "mfa_token"}

// SecretKeySet is SecretKeys as a set, a fresh map on every call.
func SecretKeySet() map[string]bool {
	m := make(map[string]bool, len(SecretKeys))
	for _, k := range SecretKeys {
		m[k] = true
	}
	return m
}

// DLQBody is the body of a DLQ copy and the headers that describe it.
type DLQBody struct {
	Body []byte
	// Truncated: Body is the first MaxDLQBody bytes of the blanked body;
	// SHA256 is the hash of the whole blanked body.
	Truncated bool
	// Redacted: the body was not valid JSON and named a secret (or held an
	// escape that could spell one); Body holds its size and SHA256 only.
	Redacted bool
	SHA256   string
}

// Header sets the DLQ copy's body headers on h.
func (d DLQBody) Header(set func(k, v string)) {
	if d.Truncated {
		set(HeaderBodyTruncated, "true")
	}
	if d.Redacted {
		set(HeaderBodyRedacted, "true")
	}
	if d.SHA256 != "" {
		set(HeaderBodySHA256, d.SHA256)
	}
}

// ForDLQ makes the body of a DLQ copy of a job message, whatever its subject
// or type: a JSON body with every otp_token, state_token and mfa_token
// blanked at any depth; a body that is not valid JSON (trailing bytes
// included) and names one of those keys, or holds a backslash escape that
// could spell one, replaced by its size and SHA-256; the result cut to
// MaxDLQBody bytes.
func ForDLQ(body []byte) DLQBody {
	out, redacted := Scrub(body)
	d := DLQBody{Body: out, Redacted: redacted}
	if redacted {
		sum := sha256.Sum256(body)
		d.SHA256 = hex.EncodeToString(sum[:])
	}
	if len(d.Body) > MaxDLQBody {
		sum := sha256.Sum256(d.Body)
		d.SHA256 = hex.EncodeToString(sum[:])
		cut := MaxDLQBody
		for cut > MaxDLQBody-utf8.UTFMax && !utf8.RuneStart(d.Body[cut]) {
			cut--
		}
		d.Body, d.Truncated = d.Body[:cut:cut], true
	}
	return d
}

// Scrub blanks the secrets of body (see ForDLQ) without cutting it.
// redacted reports that the body was replaced by its size and hash. A body
// that names no secret and holds no escape is returned as it is.
func Scrub(body []byte) (out []byte, redacted bool) {
	if !mayHoldSecret(body) {
		return body, false
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	err := d.Decode(&v)
	if err == nil {
		// Trailing bytes after the value make the body invalid.
		if _, terr := d.Token(); terr == nil || !isEOF(terr) {
			err = errTrailing
		}
	}
	if err != nil {
		sum := sha256.Sum256(body)
		return []byte(`{"redacted":"not valid JSON and names a secret key","size":` + strconv.Itoa(len(body)) +
			`,"sha256":"` + hex.EncodeToString(sum[:]) + `"}`), true
	}
	v = blank(v)
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		// Only decoded values are encoded here; this cannot happen.
		return []byte(`{"redacted":"unencodable"}`), true
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), false
}

type trailingError struct{}

func (trailingError) Error() string { return "data after the top-level value" }

var errTrailing error = trailingError{}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// mayHoldSecret reports whether body names a secret key (ASCII
// case-insensitively) or holds a backslash, which could spell one.
func mayHoldSecret(body []byte) bool {
	if bytes.IndexByte(body, '\\') >= 0 {
		return true
	}
	for _, k := range SecretKeys {
		if indexFoldASCII(body, k) >= 0 {
			return true
		}
	}
	return false
}

// isSecretKey reports whether a decoded key is one of SecretKeys.
func isSecretKey(k string) bool {
	for _, s := range SecretKeys {
		if equalFoldASCII(k, s) {
			return true
		}
	}
	return false
}

func blank(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if isSecretKey(k) {
				x[k] = ""
				continue
			}
			x[k] = blank(e)
		}
	case []any:
		for i, e := range x {
			x[i] = blank(e)
		}
	}
	return v
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

// indexFoldASCII finds lower-case needle in s, ignoring ASCII case.
func indexFoldASCII(s []byte, needle string) int {
	n := len(needle)
	for i := 0; i+n <= len(s); i++ {
		if lowerASCII(s[i]) != needle[0] {
			continue
		}
		j := 1
		for j < n && lowerASCII(s[i+j]) == needle[j] {
			j++
		}
		if j == n {
			return i
		}
	}
	return -1
}
