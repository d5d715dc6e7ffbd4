package onelogin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ID is a OneLogin numeric identifier. The OpenAPI document types device ids
// as strings while the live API sends numbers, so ID decodes either form and
// always encodes as a JSON number.
type ID int64

// UnmarshalJSON accepts a JSON number or a string holding a base-10 integer.
func (id *ID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*id = 0
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		b = []byte(strings.TrimSpace(s))
		if len(b) == 0 {
			*id = 0
			return nil
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("onelogin: id %.32q is not an integer", b)
	}
	*id = ID(n)
	return nil
}

// Status is OneLogin's v1 status object, present in every enveloped reply.
type Status struct {
	Error   bool          `json:"error"`
	Code    int           `json:"code"`
	Type    string        `json:"type"`
	Message StatusMessage `json:"message"`
}

// StatusMessage is the status object's message. OneLogin usually sends a
// string and occasionally an object with a description and the attribute it
// concerns; both decode into this type.
type StatusMessage struct {
	Description string `json:"description,omitempty"`
	Attribute   string `json:"attribute,omitempty"`
}

// String returns the message as one line.
func (m StatusMessage) String() string {
	if m.Attribute == "" {
		return m.Description
	}
	return m.Description + " (" + m.Attribute + ")"
}

// UnmarshalJSON accepts a string, an object or null.
func (m *StatusMessage) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		*m = StatusMessage{}
		return nil
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*m = StatusMessage{Description: s}
		return nil
	case b[0] == '{':
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		*m = StatusMessage{Description: looseString(raw["description"]), Attribute: looseString(raw["attribute"])}
		return nil
	default:
		*m = StatusMessage{Description: string(b)}
		return nil
	}
}

// MarshalJSON writes the string form unless an attribute is present.
func (m StatusMessage) MarshalJSON() ([]byte, error) {
	if m.Attribute == "" {
		return json.Marshal(m.Description)
	}
	type object StatusMessage
	return json.Marshal(object(m))
}

// looseString renders any JSON scalar as text, for fields whose type varies.
func looseString(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

// Factor is an authentication factor the account offers, as listed by Get
// Available Factors.
type Factor struct {
	ID   ID     `json:"factor_id"`
	Name string `json:"name"`
}

// Device is an enrolled factor (an "OTP device") of a user.
type Device struct {
	ID              ID     `json:"id"`
	Active          bool   `json:"active"`
	Default         bool   `json:"default"`
	StateToken      string `json:"state_token,omitempty"`
	AuthFactorName  string `json:"auth_factor_name,omitempty"`
	PhoneNumber     string `json:"phone_number,omitempty"`
	TypeDisplayName string `json:"type_display_name,omitempty"`
	UserDisplayName string `json:"user_display_name,omitempty"`
	NeedsTrigger    bool   `json:"needs_trigger"`
}

// EnrollRequest is the body of Enroll a Factor. FactorID is always sent: the
// generated SDKs drop it because the spec marks it read-only, and OneLogin
// then refuses the call.
type EnrollRequest struct {
	FactorID    ID     `json:"factor_id"`
	DisplayName string `json:"display_name"`
	Number      string `json:"number,omitempty"`
	Verified    bool   `json:"verified"`
}

// ActivateRequest is the optional body of Activate a Factor.
type ActivateRequest struct {
	StateTokenExpiresIn int    `json:"state_token_expires_in,omitempty"`
	NumericSMSOTP       *bool  `json:"numeric_sms_otp,omitempty"`
	SMSMessage          string `json:"sms_message,omitempty"`
}

// Activation is what Activate a Factor returns: the state token that Verify
// needs next.
type Activation struct {
	DeviceID        ID     `json:"device_id"`
	StateToken      string `json:"state_token"`
	UserID          ID     `json:"id"`
	AuthFactorName  string `json:"auth_factor_name,omitempty"`
	TypeDisplayName string `json:"type_display_name,omitempty"`
	UserDisplayName string `json:"user_display_name,omitempty"`
	// StateTokenExpiresAt is when the state token stops working (zero when
	// OneLogin did not say).
	StateTokenExpiresAt time.Time `json:"state_token_expires_at,omitzero"`
}

// UnmarshalJSON reads an activation, with state_token_expires_at as a
// timestamp string in any form OneLogin uses. An expiry that cannot be read
// is left zero rather than failing the activation: the SMS is already sent.
func (a *Activation) UnmarshalJSON(b []byte) error {
	type plain Activation
	var raw struct {
		plain
		ExpiresAt json.RawMessage `json:"state_token_expires_at"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*a = Activation(raw.plain)
	a.StateTokenExpiresAt = time.Time{}
	if s := looseString(raw.ExpiresAt); s != "" && s != "null" {
		if at, err := parseTime(s); err == nil {
			a.StateTokenExpiresAt = at
		}
	}
	return nil
}

// VerifyRequest is the body of Verify a Factor. Leave OTPToken empty to poll
// a push factor.
type VerifyRequest struct {
	OTPToken   string `json:"otp_token,omitempty"`
	StateToken string `json:"state_token,omitempty"`
}

// MFATokenRequest is the body of Generate Temp MFA Token.
type MFATokenRequest struct {
	ExpiresIn int  `json:"expires_in,omitempty"`
	Reusable  bool `json:"reusable"`
}

// MFAToken is a temporary MFA token. Its value is a secret: never log it.
type MFAToken struct {
	Token     string    `json:"mfa_token"`
	Reusable  bool      `json:"reusable"`
	ExpiresAt time.Time `json:"expires_at"`
}

// UnmarshalJSON accepts both "reusable" and the spec's "resuable".
func (t *MFAToken) UnmarshalJSON(b []byte) error {
	var raw struct {
		Token     json.RawMessage `json:"mfa_token"`
		Reusable  *bool           `json:"reusable"`
		Resuable  *bool           `json:"resuable"`
		ExpiresAt string          `json:"expires_at"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*t = MFAToken{Token: looseString(raw.Token)}
	switch {
	case raw.Reusable != nil:
		t.Reusable = *raw.Reusable
	case raw.Resuable != nil:
		t.Reusable = *raw.Resuable
	}
	if raw.ExpiresAt != "" {
		at, err := parseTime(raw.ExpiresAt)
		if err != nil {
			return fmt.Errorf("onelogin: expires_at: %w", err)
		}
		t.ExpiresAt = at
	}
	return nil
}

// String hides the token so that a stray %v never prints it.
func (t MFAToken) String() string {
	return fmt.Sprintf("MFAToken{reusable:%t expires_at:%s}", t.Reusable, t.ExpiresAt.Format(time.RFC3339))
}

// parseTime reads the timestamp forms OneLogin uses.
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999Z0700", "2006-01-02 15:04:05 MST", "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unrecognised time %.40q", s)
}

// RateLimit is the account's API budget as OneLogin reports it.
type RateLimit struct {
	Limit     int
	Remaining int
	// Reset is when the current window ends, computed from the
	// seconds-until-reset that OneLogin sends.
	Reset time.Time
}

func (r RateLimit) known() bool { return r.Limit > 0 }
