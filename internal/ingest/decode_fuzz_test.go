package ingest

import (
	"encoding/json"
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
