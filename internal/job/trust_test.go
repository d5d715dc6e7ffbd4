package job_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// splitResultID inverts job.ResultMsgID: it is the proof, used by the
// property test, that one message id has exactly one reading.
func splitResultID(id string) (jobID string, replay uint64, ok bool) {
	if j, found := strings.CutSuffix(id, ":result"); found {
		return j, 0, true
	}
	i := strings.LastIndex(id, ":result:replay:")
	if i < 0 {
		return "", 0, false
	}
	n, ok := job.ParseReplay(id[i+len(":result:replay:"):])
	return id[:i], n, ok
}

// FuzzResultMsgIDInjective: no two (job id, replay sequence) pairs share a
// result message id, whatever the ids hold (":result:replay:", digits,
// ":result" at the end...).
func FuzzResultMsgIDInjective(f *testing.F) {
	f.Add("X", uint64(9), "X:result:replay:9", uint64(0))
	f.Add("X:result:replay:9", uint64(0), "X", uint64(9))
	f.Add("a:result", uint64(1), "a", uint64(0))
	f.Add("a:result:replay:1:result", uint64(0), "a:result:replay:1", uint64(0))
	f.Add("9", uint64(12), "9:result:replay:1", uint64(2))
	f.Fuzz(func(t *testing.T, id1 string, r1 uint64, id2 string, r2 uint64) {
		m1, m2 := job.ResultMsgID(id1, r1), job.ResultMsgID(id2, r2)
		if (id1 != id2 || r1 != r2) && m1 == m2 {
			t.Fatalf("(%q,%d) and (%q,%d) share %q", id1, r1, id2, r2, m1)
		}
		for _, c := range []struct {
			id string
			r  uint64
			m  string
		}{{id1, r1, m1}, {id2, r2, m2}} {
			gid, gr, ok := splitResultID(c.m)
			if !ok || gid != c.id || gr != c.r {
				t.Fatalf("%q reads back as (%q,%d,%v), want (%q,%d)", c.m, gid, gr, ok, c.id, c.r)
			}
		}
	})
}

// The colliding pair of the trust review: a job named X:result:replay:9 and
// job X with the header "Mfa-Replay: 9:result", which is not a replay at all.
func TestCollidingJobIDsHaveTheirOwnResultIDs(t *testing.T) {
	if _, ok := job.ParseReplay("9:result"); ok {
		t.Fatal(`"9:result" accepted as a replay sequence`)
	}
	a := job.ResultMsgID("X:result:replay:9", 0)
	b := job.ResultMsgID("X", 0)
	c := job.ResultMsgID("X", 9)
	if a == b || a == c || b == c {
		t.Fatalf("ids collide: %s %s %s", a, b, c)
	}
}

func TestParseReplay(t *testing.T) {
	for v, want := range map[string]uint64{"1": 1, "9": 9, "18446744073709551615": 1<<64 - 1} {
		if n, ok := job.ParseReplay(v); !ok || n != want {
			t.Errorf("%q: %d %v", v, n, ok)
		}
	}
	for _, v := range []string{"", "0", "09", "+9", "-1", "9 ", " 9", "9:result", "1e3", "18446744073709551616", "٣"} {
		if n, ok := job.ParseReplay(v); ok {
			t.Errorf("%q accepted as %d", v, n)
		}
	}
}

func TestForDLQBlanksSecretsAtAnyDepth(t *testing.T) {
	secret := "SECRET-4711"
	bodies := []string{
		`{"id":"v","type":"verify","user_id":1,"params":{"device_id":5,"otp_token":"SECRET-4711","state_token":"SECRET-4711"}}`,
		`{"id":"v","otp_token":"SECRET-4711"}`,
		`{"id":"v","params":{"x":[{"deep":{"MFA_TOKEN":"SECRET-4711"}}]}}`,
		`{"id":"v","params":{"otp\u005ftoken":"SECRET-4711"}}`,
		`{"id":"v","state_token":{"nested":"SECRET-4711"}}`,
		`[{"otp_token":"SECRET-4711"}]`,
		`{"otp_token":"a","otp_token":"SECRET-4711"}`,
	}
	for _, b := range bodies {
		d := job.ForDLQ([]byte(b))
		if bytes.Contains(d.Body, []byte(secret)) || d.Redacted || d.Truncated {
			t.Errorf("%s -> %s (%+v)", b, d.Body, d)
		}
		if !json.Valid(d.Body) {
			t.Errorf("%s -> invalid JSON %s", b, d.Body)
		}
	}
	plain := `{"id":"e","type":"enroll","user_id":1,"params":{"display_name":"<b>&"}}`
	if d := job.ForDLQ([]byte(plain)); string(d.Body) != plain {
		t.Errorf("a body without secrets changed: %s", d.Body)
	}
}

func TestForDLQReplacesInvalidBodiesThatNameASecret(t *testing.T) {
	for _, b := range []string{
		`{"id":"v","params":{"otp_token":"SECRET-4711"}} trailing`,
		`{"id":"v","params":{"otp_token":"SECRET-4711"}}{"x":1}`,
		`{"id":"v","params":{"otp_token":"SECRET-4711"`,
		`otp_token=SECRET-4711`,
		`{"id":"v","params":{"otp\u005ftoken":"SECRET-4711"}`,
	} {
		d := job.ForDLQ([]byte(b))
		if bytes.Contains(d.Body, []byte("SECRET-4711")) || !d.Redacted || len(d.SHA256) != 64 {
			t.Errorf("%s -> %s (%+v)", b, d.Body, d)
		}
	}
	if d := job.ForDLQ([]byte(`{not json`)); d.Redacted || string(d.Body) != `{not json` {
		t.Errorf("an invalid body naming no secret: %+v", d)
	}
}

func TestForDLQCutsLongBodies(t *testing.T) {
	body := []byte(`{"id":"big","otp_token":"SECRET-4711","pad":"` + strings.Repeat("é", 600<<10) + `"}`)
	d := job.ForDLQ(body)
	if !d.Truncated || len(d.Body) > job.MaxDLQBody || len(d.SHA256) != 64 || bytes.Contains(d.Body, []byte("SECRET-4711")) {
		t.Fatalf("truncated %v, %d bytes, sha %q", d.Truncated, len(d.Body), d.SHA256)
	}
	h := map[string]string{}
	d.Header(func(k, v string) { h[k] = v })
	if h[job.HeaderBodyTruncated] != "true" || h[job.HeaderBodySHA256] != d.SHA256 {
		t.Errorf("headers %v", h)
	}
}

func TestAbsurdNumbersAreRejectedBeforeValidation(t *testing.T) {
	p, err := job.NewParser(64<<10, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"1e999999", "1E+401", "-1e-999999", strings.Repeat("9", 41), "0." + strings.Repeat("0", 40) + "1", "1e" + strings.Repeat("0", 41) + "1"} {
		body := `{"id":"n1","type":"remove","user_id":1,"params":{"device_id":` + n + `}}`
		_, rej := p.Parse("mfa.jobs.remove", []byte(body))
		if rej == nil || rej.Code != job.CodeUnreasonableNumber || rej.JobID != "n1" || rej.UserID != 1 {
			t.Errorf("%s: %+v", n, rej)
		}
	}
	if _, rej := p.Parse("mfa.jobs.remove", []byte(`{"id":"n2","type":"remove","user_id":1e999999,"params":{"device_id":1}}`)); rej == nil || rej.Code != job.CodeUnreasonableNumber || rej.UserID != 0 {
		t.Errorf("user_id: %+v", rej)
	}
	// Numbers inside strings and reasonable exponents pass the scan.
	for _, body := range []string{
		`{"id":"1e999999","type":"remove","user_id":1,"params":{"device_id":1e2}}`,
		`{"id":"n3","type":"remove","user_id":9007199254740991,"params":{"device_id":1E+002}}`,
	} {
		if _, rej := p.Parse("mfa.jobs.remove", []byte(body)); rej != nil {
			t.Errorf("%s: %v", body, rej)
		}
	}
}

func TestControlAndBidiCharactersAreRejected(t *testing.T) {
	p, err := job.NewParser(64<<10, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a\\u0000b", "\\u001b[31mred", "a\\u007f", "\\u0085", "\\u202eevil", "\\u2066x", "\\u200f", "\\u061c", "tab\\there"} {
		body := `{"id":"c1","type":"enroll","user_id":1,"params":{"factor_name":"OneLogin SMS","display_name":"` + s + `","number":"+15551230000"}}`
		_, rej := p.Parse("mfa.jobs.enroll", []byte(body))
		if rej == nil || rej.Code != job.CodeInvalidCharacters || !strings.Contains(rej.Message, "display_name") {
			t.Errorf("%s: %+v", s, rej)
		}
	}
	body := `{"id":"c2","type":"activate","user_id":1,"params":{"device_id":1,"sms_message":"code \u001b[2J"}}`
	if _, rej := p.Parse("mfa.jobs.activate", []byte(body)); rej == nil || rej.Code != job.CodeInvalidCharacters {
		t.Errorf("sms_message: %+v", rej)
	}
	ok := `{"id":"c3","type":"enroll","user_id":1,"params":{"factor_name":"OneLogin SMS","display_name":"Zoë's phone ☎","number":"+15551230000"}}`
	if _, rej := p.Parse("mfa.jobs.enroll", []byte(ok)); rej != nil {
		t.Errorf("plain unicode: %v", rej)
	}
}

func BenchmarkParseAbsurdNumber(b *testing.B) {
	p, _ := job.NewParser(64<<10, false)
	body := []byte(`{"id":"n1","type":"remove","user_id":1,"params":{"device_id":1e999999}}`)
	for i := 0; i < b.N; i++ {
		if _, rej := p.Parse("mfa.jobs.remove", body); rej == nil {
			b.Fatal("accepted")
		}
	}
}

func TestManyUnknownFieldsMakeAShortMessage(t *testing.T) {
	p, _ := job.NewParser(64<<10, false)
	var b strings.Builder
	b.WriteString(`{"id":"k","type":"remove","user_id":1,"params":{"device_id":1}`)
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&b, `,"field%d":1`, i)
	}
	b.WriteString("}")
	_, rej := p.Parse("mfa.jobs.remove", []byte(b.String()))
	if rej == nil || rej.Code != job.CodeUnknownField || len(rej.Message) > 400 || !strings.Contains(rej.Message, "and 2995 more") {
		t.Fatalf("%+v", rej)
	}
}
