package onelogin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// envelope is OneLogin's v1 reply wrapper.
type envelope struct {
	Status *Status         `json:"status"`
	Data   json.RawMessage `json:"data"`
}

// decodeStatus returns the status object of an enveloped body, or nil.
func decodeStatus(body []byte) *Status {
	var env envelope
	if json.Unmarshal(body, &env) != nil || env.Status == nil {
		return nil
	}
	return env.Status
}

// bareMessage pulls a message out of a body that is not a v1 envelope (v2
// style errors, OAuth errors, plain text). The Users API v2 answers errors in
// two shapes, {"statusCode":N,"name":"...","message":"..."} and
// {"status":N,"error":"...","description":"..."}: the message or the
// description is what says what went wrong; the name or error only names
// its class.
func bareMessage(body []byte) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) == nil {
		for _, k := range []string{"message", "description", "error_description", "error", "name"} {
			if v, ok := obj[k]; ok {
				var m StatusMessage
				if json.Unmarshal(v, &m) == nil && m.String() != "" {
					return sanitize(m.String())
				}
			}
		}
		return ""
	}
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("<")) {
		return "" // an HTML error page says nothing useful
	}
	return sanitize(string(body))
}

// bareType is the error class a v2 error body names ("BadRequestError"),
// or "".
func bareType(body []byte) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return ""
	}
	for _, k := range []string{"error", "name"} {
		var s string
		if v, ok := obj[k]; ok && json.Unmarshal(v, &s) == nil && s != "" {
			if _, hasDesc := obj["error_description"]; k == "error" && hasDesc {
				continue // an OAuth error: "error" is a code, not a class
			}
			return sanitize(s)
		}
	}
	return ""
}

// dataOf returns the data member of an enveloped body, or the body itself when
// it has no envelope.
func dataOf(body []byte) (json.RawMessage, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, err
	}
	if env.Status == nil && env.Data == nil {
		return body, nil
	}
	return env.Data, nil
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// decodeList reads a list that OneLogin sends either bare or inside an
// object under key.
func decodeList[T any](raw json.RawMessage, key string) ([]T, error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return nil, nil
	}
	if raw[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, err
		}
		inner, ok := obj[key]
		if !ok {
			return nil, fmt.Errorf("no %q member", key)
		}
		return decodeList[T](inner, key)
	}
	var out []T
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// decodeOne reads an object that OneLogin sends either bare or as the only
// element of an array.
func decodeOne[T any](raw json.RawMessage) (*T, error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return nil, errors.New("no data")
	}
	if raw[0] == '[' {
		var list []T
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, err
		}
		if len(list) == 0 {
			return nil, errors.New("empty data array")
		}
		return &list[0], nil
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// The parse functions turn a 2xx body into an endpoint's value. Each one
// accepts every shape OneLogin is known to send for that endpoint.

func parseFactors(body []byte) ([]Factor, error) {
	data, err := dataOf(body)
	if err != nil {
		return nil, err
	}
	return decodeList[Factor](data, "auth_factors")
}

func parseDevices(body []byte) ([]Device, error) {
	data, err := dataOf(body)
	if err != nil {
		return nil, err
	}
	return decodeList[Device](data, "otp_devices")
}

func parseDevice(body []byte) (*Device, error) {
	data, err := dataOf(body)
	if err != nil {
		return nil, err
	}
	return decodeOne[Device](data)
}

func parseActivation(body []byte) (*Activation, error) {
	data, err := dataOf(body)
	if err != nil {
		return nil, err
	}
	return decodeOne[Activation](data)
}

func parseMFAToken(body []byte) (*MFAToken, error) {
	data, err := dataOf(body)
	if err != nil {
		return nil, err
	}
	t, err := decodeOne[MFAToken](data)
	if err != nil {
		return nil, err
	}
	if t.Token == "" {
		return nil, errors.New("no mfa_token in reply")
	}
	return t, nil
}

func parseRateLimit(body []byte, sent time.Time) (RateLimit, error) {
	data, err := dataOf(body)
	if err != nil {
		return RateLimit{}, err
	}
	if isNull(data) {
		return RateLimit{}, errors.New("no data")
	}
	var d struct {
		Limit     int     `json:"X-RateLimit-Limit"`
		Remaining int     `json:"X-RateLimit-Remaining"`
		Reset     float64 `json:"X-RateLimit-Reset"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return RateLimit{}, err
	}
	if d.Reset < 0 || d.Reset > 7*24*3600 {
		return RateLimit{}, fmt.Errorf("reset %v out of range", d.Reset)
	}
	return RateLimit{Limit: d.Limit, Remaining: d.Remaining, Reset: sent.Add(time.Duration(d.Reset * float64(time.Second)))}, nil
}
