package onelogin

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary bodies to every response decoder and to the
// error path. None may panic, and an error message must stay one bounded
// line whatever the body says.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"auth_factors":[{"factor_id":16282,"name":"OneLogin SMS"}]}}`,
		`{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":[{"id":"1649045","active":false,"state_token":"x"}]}`,
		`{"status":{"error":false,"code":200,"type":"success","message":"Success"},"data":{"otp_devices":[{"id":525509,"active":true}]}}`,
		`{"mfa_token":"55647655","resuable":true,"expires_at":"2019-01-16T22:16:38Z"}`,
		`{"status":{"error":true,"code":400,"type":"Bad Request","message":{"description":"x","attribute":"y"}}}`,
		`{"data":{"X-RateLimit-Limit":5000,"X-RateLimit-Remaining":4992,"X-RateLimit-Reset":1153}}`,
		`{"status":{"type":"pending","message":"Authentication pending","code":200,"error":false}}`,
		`[{"id":1001,"email":"ada@example.com","username":"ada","external_id":null,"firstname":"Ada","lastname":"Lovelace","status":1,"state":1}]`,
		`{"access_token":"t","created_at":"2015-11-11T03:36:18.714Z","expires_in":36000,"token_type":"bearer","account_id":5}`,
		`{}`, `[]`, `null`, `"x"`, ``,
	} {
		f.Add([]byte(seed))
	}
	sent := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = parseFactors(body)
		_, _ = parseDevices(body)
		_, _ = parseDevice(body)
		_, _ = parseActivation(body)
		if tok, err := parseMFAToken(body); err == nil && tok.Token == "" {
			t.Fatal("parseMFAToken accepted a reply without a token")
		}
		_, _ = parseRateLimit(body, sent)
		if users, err := parseUsers(body); err == nil {
			for _, u := range users {
				if u.ID <= 0 {
					t.Fatalf("parseUsers accepted user id %d", u.ID)
				}
			}
		}
		if tok, err := parseToken(body, sent); err == nil {
			if tok.token == "" {
				t.Fatal("parseToken accepted an answer without a token")
			}
			if !tok.expiry.IsZero() && !tok.expiry.After(sent) {
				t.Fatalf("parseToken computed an expiry %v not after the request", tok.expiry)
			}
		}
		verr := verifyOutcome(&Response{Response: &http.Response{StatusCode: 200}, body: body})
		if st := decodeStatus(body); verr == nil && (st == nil || !strings.EqualFold(strings.TrimSpace(st.Type), "success")) {
			t.Fatal("a verify answer without status type success counted as verified")
		}
		er := &ErrorResponse{Endpoint: "enroll", StatusCode: 400}
		if st := decodeStatus(body); st != nil {
			er.Status = *st
		} else {
			er.Status.Message.Description = bareMessage(body)
		}
		msg := er.Error()
		if strings.ContainsAny(msg, "\n\r") || len(msg) > 400 {
			t.Fatalf("error message not one bounded line: %q", msg)
		}
	})
}
