package ingest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/mfa-worker/mfa-worker/internal/rules"
)

// FuzzDecodeAndMap: no stored body, whatever it holds, crashes the decoder
// or the built-in rules; a job they make is always valid JSON with an id.
func FuzzDecodeAndMap(f *testing.F) {
	for _, s := range []string{
		`{"specversion":"1.0","id":"1","source":"s","type":"io.mfaworker.person.left","data":{"user_id":1e300}}`,
		`{"specversion":"1.0","id":"1","source":"s","type":"io.mfaworker.person.left","data":"x"}`,
		`{"specversion":"1.0","id":"1","source":"s","type":"io.mfaworker.person.left","data":{"email":["a"]}}`,
		`{"type":"employee.left","data":{"employeeId":{"a":[1,2,{"b":null}]}}}`,
		`{"type":"user.deleted","time":"2026-11-26T10:00:00Z","data":{"userName":"","externalId":""}}`,
		`[]`, `null`, `{"employees":[{}]}`,
	} {
		for _, src := range Sources {
			f.Add(src, []byte(s))
		}
	}
	set := rules.Builtin()
	f.Fuzz(func(t *testing.T, source string, body []byte) {
		h := nats.Header{}
		h.Set(HeaderSource, source)
		h.Set(HeaderEventID, "0123abcd")
		ev, err := Decode(h, body)
		if err != nil {
			return
		}
		jobs, _ := set.Apply(ev)
		for _, j := range jobs {
			b, err := json.Marshal(j)
			if err != nil || j.ID == "" || len(b) == 0 {
				t.Fatalf("job %+v: %v", j, err)
			}
		}
	})
}

// FuzzBinaryCloudEvent: no set of ce-* headers and body crashes the
// binary-mode conversion; what it makes is a CloudEvent the receiver reads,
// or an error.
func FuzzBinaryCloudEvent(f *testing.F) {
	f.Add("1.0", "id-1", "https://hr.example.com/a%20b", "io.mfaworker.person.left", "application/json", []byte(`{"email":"a@example.com"}`))
	f.Add("1.0", "x", "s", "t", "text/plain", []byte("hello"))
	f.Add("1.0", "%zz", "s", "t", "", []byte(`{`))
	f.Add("", "", "", "", "application/cloudevents-batch+json", []byte(`[]`))
	f.Fuzz(func(t *testing.T, spec, id, source, typ, ct string, body []byte) {
		r, err := http.NewRequest(http.MethodPost, "/events", bytes.NewReader(body))
		if err != nil {
			return
		}
		for k, v := range map[string]string{"Ce-Specversion": spec, "Ce-Id": id, "Ce-Source": source, "Ce-Type": typ, "Content-Type": ct} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		out, err := binaryCloudEvent(r, body)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("not JSON: %q", out)
		}
		if _, err := identifyCloudEvent(out); err == nil {
			if _, err := Decode(nats.Header{HeaderSource: {SourceCloudEvents}, HeaderEventID: {"0123abcd"}}, out); err != nil && !strings.Contains(err.Error(), "CloudEvent") {
				t.Fatalf("decode: %v", err)
			}
		}
	})
}
