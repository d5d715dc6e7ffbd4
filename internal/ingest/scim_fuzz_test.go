package ingest

import (
	"encoding/json"
	"testing"
)

// FuzzSCIMPatch: any PATCH operation on any resource either applies or is
// a SCIM error; it never panics, and the result still marshals.
func FuzzSCIMPatch(f *testing.F) {
	f.Add(`{"userName":"a","emails":[{"type":"work","value":"x"}]}`, "replace", `emails[type eq "work"].value`, `"y"`)
	f.Add(`{"userName":"a"}`, "add", `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager`, `{"value":"m"}`)
	f.Add(`{"userName":"a","name":"flat"}`, "remove", `name.givenName`, `null`)
	f.Add(`{"userName":"a","emails":"x"}`, "add", `emails[value pr]`, `{"type":"home"}`)
	f.Add(`{}`, "replace", ``, `{"urn:ietf:params:scim:schemas:core:2.0:User":{"active":false},"urn:x":{"a":1}}`)
	f.Add(`{"userName":"a"}`, "replace", `urn:ietf:params:scim:schemas:core:2.0:User:active`, `"False"`)
	f.Fuzz(func(t *testing.T, resource, op, path, value string) {
		var res attrs
		if json.Unmarshal([]byte(resource), &res) != nil || res == nil {
			return
		}
		var v any
		if json.Unmarshal([]byte(value), &v) != nil {
			return
		}
		err := applyOp(res, op, path, v)
		if err != nil {
			if _, ok := err.(*scimErr); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if _, err := json.Marshal(res); err != nil {
			t.Fatalf("the patched resource does not marshal: %v", err)
		}
		_, _, _, _ = userFields(res)
	})
}
