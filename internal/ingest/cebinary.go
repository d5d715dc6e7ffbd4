package ingest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// errNotCloudEvent: neither structured nor binary content mode.
var errNotCloudEvent = errors.New("Content-Type must be application/cloudevents+json (structured mode), " +
	"or the attributes must be ce-* headers (binary mode); batches are not accepted")

// binaryCloudEvent turns a CloudEvent sent in binary content mode (its
// attributes in ce-* headers, its data the body) into the structured JSON
// form the receiver stores. JSON data (a Content-Type of application/json
// or +json, or none) is kept as data; any other is data_base64.
func binaryCloudEvent(r *http.Request, body []byte) ([]byte, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	if strings.HasPrefix(strings.ToLower(mt), "application/cloudevents") || r.Header.Get("Ce-Specversion") == "" {
		return nil, errNotCloudEvent
	}
	ev := map[string]any{}
	for k, v := range r.Header {
		name, ok := strings.CutPrefix(strings.ToLower(k), "ce-")
		if !ok || len(v) == 0 || name == "" || name == "data" || name == "data_base64" {
			continue
		}
		if !validAttrName(name) {
			return nil, errors.New("a ce-* header names an attribute that is not lower-case letters and digits")
		}
		val, err := url.PathUnescape(v[0])
		if err != nil {
			return nil, errors.New("the ce-" + name + " header is not percent-encoded correctly")
		}
		ev[name] = val
	}
	if ct != "" {
		ev["datacontenttype"] = ct
	}
	if len(body) > 0 {
		jsonData := mt == "" || strings.EqualFold(mt, "application/json") || strings.HasSuffix(strings.ToLower(mt), "+json")
		switch {
		case jsonData && json.Valid(body):
			ev["data"] = json.RawMessage(body)
		case jsonData:
			return nil, errors.New("the body of a binary-mode CloudEvent with JSON data is not JSON")
		default:
			ev["data_base64"] = base64.StdEncoding.EncodeToString(body)
		}
	}
	return json.Marshal(ev)
}

// validAttrName: CloudEvents attribute names are lower-case ASCII letters
// and digits, at most 20 characters.
func validAttrName(s string) bool {
	if len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
