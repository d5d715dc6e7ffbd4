package simulator

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func (h *harness) enrollSMS(userID int64) (deviceID int64, stateToken string) {
	h.t.Helper()
	_, body, _ := h.call("POST", fmt.Sprintf("/api/1/users/%d/otp_devices", userID), `{"factor_id":100001,"display_name":"p","number":"+15555550100"}`)
	var env struct {
		Data []struct {
			ID         int64  `json:"id"`
			StateToken string `json:"state_token"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil || len(env.Data) != 1 {
		h.t.Fatalf("enroll: %s", body)
	}
	return env.Data[0].ID, env.Data[0].StateToken
}

var (
	digitsOnly   = regexp.MustCompile(`^[0-9]{6}$`)
	alphanumeric = regexp.MustCompile(`^[A-Z0-9]{6}$`)
)

// TestOTPCodes: OneLogin's default SMS code is alphanumeric ("instead of the
// standard code which is alphanumeric"); numeric_sms_otp asks for digits.
func TestOTPCodes(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	h := newHarness(t, Config{OnOTP: func(userID, deviceID int64, otp, sentBy string) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, fmt.Sprintf("%d/%d/%s/%s", userID, deviceID, otp, sentBy))
	}})
	dev, _ := h.enrollSMS(4)
	first := h.sim.LastOTP(4, dev)
	if !alphanumeric.MatchString(first) || digitsOnly.MatchString(first) {
		t.Fatalf("enroll code %q is not alphanumeric", first)
	}
	status, body, _ := h.call("POST", fmt.Sprintf("/api/1/users/4/otp_devices/%d/trigger", dev), `{"numeric_sms_otp":true}`)
	if status != 200 || !digitsOnly.MatchString(h.sim.LastOTP(4, dev)) {
		t.Fatalf("numeric_sms_otp: %d %s, code %q", status, body, h.sim.LastOTP(4, dev))
	}
	// Activate keeps state_token_expires_at (onelogin-api.md, endpoint 4).
	var env struct {
		Data []struct {
			ExpiresAt string `json:"state_token_expires_at"`
		} `json:"data"`
	}
	if json.Unmarshal([]byte(body), &env) != nil || len(env.Data) != 1 || env.Data[0].ExpiresAt == "" {
		t.Fatalf("activate without state_token_expires_at: %s", body)
	}
	mu.Lock()
	got := append([]string(nil), seen...)
	mu.Unlock()
	if len(got) != 2 || got[0] != fmt.Sprintf("4/%d/%s/enroll", dev, first) || got[1] != fmt.Sprintf("4/%d/%s/activate", dev, h.sim.LastOTP(4, dev)) {
		t.Fatalf("OnOTP saw %q", got)
	}

	n := newHarness(t, Config{NumericOTPs: true})
	dev, _ = n.enrollSMS(4)
	if !digitsOnly.MatchString(n.sim.LastOTP(4, dev)) {
		t.Fatalf("NumericOTPs: %q", n.sim.LastOTP(4, dev))
	}
}

// TestPendingVerify: a verify without an OTP, or of a push not yet
// approved, answers 200 with type "pending" (onelogin-api.md, endpoint 5).
func TestPendingVerify(t *testing.T) {
	h := newHarness(t, Config{})
	push, err := h.sim.EnrollDevice(8, "OneLogin Protect", "Pixel", false)
	if err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/api/1/users/8/otp_devices/%d/verify", push)
	for i := 0; i < 2; i++ {
		status, body, _ := h.call("POST", path, `{}`)
		if status != 200 || !strings.Contains(body, `"type":"pending"`) || h.sim.Devices(8)[0].Active {
			t.Fatalf("poll %d: %d %s", i, status, body)
		}
	}
	h.sim.ApprovePush(8, push)
	status, body, _ := h.call("POST", path, `{}`)
	if status != 200 || !strings.Contains(body, `"type":"success"`) || !h.sim.Devices(8)[0].Active {
		t.Fatalf("after approval: %d %s", status, body)
	}
	if n := len(h.sim.VerifyAttempts()); n != 3 {
		t.Fatalf("verify attempts = %d, want 3", n)
	}

	at := newHarness(t, Config{PushApprovedAtOnce: true})
	push, _ = at.sim.EnrollDevice(8, "OneLogin Protect", "Pixel", false)
	if status, body, _ := at.call("POST", fmt.Sprintf("/api/1/users/8/otp_devices/%d/verify", push), `{}`); status != 200 || !strings.Contains(body, `"type":"success"`) {
		t.Fatalf("PushApprovedAtOnce: %d %s", status, body)
	}
}

func TestWrongOTPWording(t *testing.T) {
	for _, msg := range []string{"", "Invalid OTP", "Authentication Failure"} {
		h := newHarness(t, Config{WrongOTPMessage: msg})
		dev, st := h.enrollSMS(2)
		status, body, _ := h.call("POST", fmt.Sprintf("/api/1/users/2/otp_devices/%d/verify", dev), `{"otp_token":"nope","state_token":"`+st+`"}`)
		want := msg
		if want == "" {
			want = "Failed authentication with this factor"
		}
		if status != 401 || !strings.Contains(body, want) {
			t.Fatalf("%q: %d %s", msg, status, body)
		}
	}
}

// TestDuplicateDeviceListing: a push-and-pull factor is listed twice
// (onelogin-api.md, Get Enrolled Factors).
func TestDuplicateDeviceListing(t *testing.T) {
	for _, once := range []bool{false, true} {
		h := newHarness(t, Config{ListDevicesOnce: once})
		push, _ := h.sim.EnrollDevice(5, "OneLogin Protect", "Pixel", true)
		h.enrollSMS(5)
		_, body, _ := h.call("GET", "/api/1/users/5/otp_devices", "")
		n := strings.Count(body, fmt.Sprintf(`"id":%d`, push))
		if want := map[bool]int{false: 2, true: 1}[once]; n != want || strings.Count(body, `"id":`) != want+1 {
			t.Fatalf("once=%v: push listed %d times: %s", once, n, body)
		}
	}
}

func TestMFATokenStatusAndTokenFailure(t *testing.T) {
	h := newHarness(t, Config{MFATokenStatus: 200})
	if status, _, _ := h.call("POST", "/api/1/users/1/mfa_token", `{}`); status != 200 {
		t.Fatalf("MFATokenStatus 200: %d", status)
	}
	sim := New(Config{TokenStatus: 500})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	h3 := &harness{t: t, sim: sim, srv: srv}
	if status, _, _ := h3.tokenRequest(basicAuthHeader("sim-client", "sim-secret"), "application/json", `{"grant_type":"client_credentials"}`); status != 500 {
		t.Fatalf("TokenStatus 500: %d", status)
	}
}

func TestRequestIDHeader(t *testing.T) {
	h := newHarness(t, Config{})
	_, _, hdr1 := h.call("GET", "/api/1/users/1/otp_devices", "")
	_, _, hdr2 := h.call("GET", "/api/1/users/1/otp_devices", "")
	if hdr1.Get("X-Request-Id") == "" || hdr1.Get("X-Request-Id") == hdr2.Get("X-Request-Id") {
		t.Fatalf("request ids %q %q", hdr1.Get("X-Request-Id"), hdr2.Get("X-Request-Id"))
	}
}

type userPage struct {
	users  []DirectoryUser
	cursor string
}

func (h *harness) users(query string) userPage {
	h.t.Helper()
	status, body, hdr := h.call("GET", "/api/2/users?"+query, "")
	var out []DirectoryUser
	if status != 200 || json.Unmarshal([]byte(body), &out) != nil {
		h.t.Fatalf("users?%s: %d %s", query, status, body)
	}
	return userPage{out, hdr.Get("After-Cursor")}
}

func TestUsersAPI(t *testing.T) {
	h := newHarness(t, Config{FirstUser: 1, LastUser: 120})
	// Exact lookups of generated users, case-insensitive.
	if p := h.users("email=USER7@example.com"); len(p.users) != 1 || p.users[0].ID != 7 || p.users[0].Username != "user7" || p.users[0].ExternalID != "ext7" || p.cursor != "" {
		t.Fatalf("email: %+v", p)
	}
	if p := h.users("external_id=ext119"); len(p.users) != 1 || p.users[0].ID != 119 {
		t.Fatalf("external_id: %+v", p)
	}
	if p := h.users("username=user121"); len(p.users) != 0 {
		t.Fatalf("outside the range: %+v", p)
	}
	// A wildcard is honoured, with paging at 50 through After-Cursor.
	var ids []int64
	cursor, pages := "", 0
	for {
		q := "email=" + url.QueryEscape("user*@example.com")
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		p := h.users(q)
		pages++
		if len(p.users) > 50 {
			t.Fatalf("page of %d", len(p.users))
		}
		for _, u := range p.users {
			ids = append(ids, u.ID)
		}
		if p.cursor == "" {
			break
		}
		cursor = p.cursor
	}
	if pages != 3 || len(ids) != 120 || ids[0] != 1 || ids[119] != 120 {
		t.Fatalf("paging: %d pages, %d users", pages, len(ids))
	}
	if p := h.users("username=user1*"); len(p.users) != 32 { // 1, 10-19, 100-119
		t.Fatalf("user1*: %d", len(p.users))
	}
	if p := h.users("username=!user1*&limit=10"); len(p.users) != 10 || p.users[0].ID != 2 || p.cursor == "" {
		t.Fatalf("negation: %+v", p)
	}
	h.sim.DeleteUser(7)
	if p := h.users("email=user7@example.com"); len(p.users) != 0 {
		t.Fatalf("deleted user listed: %+v", p)
	}
	if status, _, _ := h.call("GET", "/api/1/users/7/otp_devices", ""); status != 404 {
		t.Fatalf("deleted user's devices: %d", status)
	}
	if status, _, _ := h.call("GET", "/api/2/users?cursor=zzz", ""); status != 400 {
		t.Fatalf("bad cursor: %d", status)
	}
}

func TestDirectoryFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	if err := os.WriteFile(path, []byte(`[
 {"id": 501, "email": "a*b@example.com", "username": "ab", "external_id": "E-1", "firstname": "Ada", "lastname": "B", "status": 1, "state": 1},
 {"id": 502, "email": "axxb@example.com", "username": "axxb", "external_id": "E-2", "status": 1, "state": 1}
]`), 0o600); err != nil {
		t.Fatal(err)
	}
	dir, err := LoadDirectory(path)
	if err != nil || len(dir) != 2 || dir[0].Firstname != "Ada" {
		t.Fatalf("LoadDirectory: %+v, %v", dir, err)
	}
	h := newHarness(t, Config{Directory: dir})
	// OneLogin reads "*" as a wildcard: both match.
	if p := h.users("email=" + url.QueryEscape("a*b@example.com")); len(p.users) != 2 {
		t.Fatalf("wildcard: %+v", p)
	}
	if status, _, _ := h.call("GET", "/api/1/users/501/otp_devices", ""); status != 200 {
		t.Fatalf("a directory user has no devices endpoint: %d", status)
	}
	if status, _, _ := h.call("GET", "/api/1/users/1/otp_devices", ""); status != 404 {
		t.Fatalf("a directory replaces the generated range: %d", status)
	}
	for _, bad := range []string{`[{"id":0}]`, `[{"id":1},{"id":1}]`, `{`} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadDirectory(path); err == nil {
			t.Fatalf("LoadDirectory accepted %s", bad)
		}
	}
}

// Round three: what recorded OneLogin answers show and the simulator did not
// (onelogin-api.md, "Round three").
func TestRoundThreeFidelity(t *testing.T) {
	h := newHarness(t, Config{FirstUser: 1, LastUser: 120, RateLimit: 5, APIHiddenFactor: true})

	// Users API v2: paged by limit (and page) or by the opaque cursor alone.
	p := h.users("email=" + url.QueryEscape("user*@example.com") + "&limit=10")
	if len(p.users) != 10 || p.cursor == "" {
		t.Fatalf("page 1: %+v", p)
	}
	if raw, err := base64.StdEncoding.DecodeString(p.cursor); err != nil || !strings.Contains(string(raw), "page=2") {
		t.Fatalf("cursor %q is not base64 of a page query: %v", p.cursor, err)
	}
	status, body, hdr := h.call("GET", "/api/2/users?cursor="+url.QueryEscape(p.cursor)+"&limit=10", "")
	if status != 400 || body != `{"description":"Requests can only have cursor xor pagination arguments","error":"BadRequestError","status":400}`+"\n" {
		t.Fatalf("cursor with limit: %d %s", status, body)
	}
	if hdr.Get("X-RateLimit-Remaining") != "" {
		t.Fatal("a v2 answer carries rate-limit headers")
	}
	p2 := h.users("email=" + url.QueryEscape("user*@example.com") + "&cursor=" + url.QueryEscape(p.cursor))
	if len(p2.users) != 10 || p2.users[0].ID != 11 {
		t.Fatalf("page 2 by cursor: %+v", p2)
	}
	if p3 := h.users("email=" + url.QueryEscape("user*@example.com") + "&limit=10&page=3"); len(p3.users) != 10 || p3.users[0].ID != 21 {
		t.Fatalf("page 3 by page: %+v", p3)
	}
	if status, body, _ := h.call("GET", "/api/2/users?cursor=dTk5", ""); status != 400 || !strings.Contains(body, "Invalid pagination cursor") {
		t.Fatalf("foreign cursor: %d %s", status, body)
	}

	// v2 calls are not counted in the v1 budget (5 here) and carry no
	// rate-limit headers.
	for range 5 {
		status, _, hdr := h.call("GET", "/api/2/users?email=user1@example.com", "")
		if status != 200 || hdr.Get("X-RateLimit-Limit") != "" {
			t.Fatalf("v2: %d %v", status, hdr)
		}
	}
	if status, _, hdr := h.call("GET", "/api/1/users/1/otp_devices", ""); status != 200 || hdr.Get("X-RateLimit-Remaining") != "4" {
		t.Fatalf("v1 after v2 calls: %d remaining %q", status, hdr.Get("X-RateLimit-Remaining"))
	}
	// 401 answers carry no rate-limit headers.
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/api/1/users/1/otp_devices", nil)
	req.Header.Set("Authorization", "bearer:nope")
	if status, _, hdr := h.do(req); status != 401 || hdr.Get("X-RateLimit-Remaining") != "" || hdr.Get("X-RateLimit-Reset") != "" {
		t.Fatalf("401: %d %v", status, hdr)
	}

	// A push device is listed twice: needs_trigger true (push), then false.
	push, err := h.sim.EnrollDevice(2, "OneLogin Protect", "Pixel", true)
	if err != nil {
		t.Fatal(err)
	}
	hidden, err := h.sim.EnrollDevice(2, HiddenFactorName, "YubiKey", true)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ = h.call("GET", "/api/1/users/2/otp_devices", "")
	var listed struct {
		Data struct {
			Devices []struct {
				ID           int64 `json:"id"`
				NeedsTrigger bool  `json:"needs_trigger"`
			} `json:"otp_devices"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &listed); err != nil {
		t.Fatal(err)
	}
	d := listed.Data.Devices
	if len(d) != 2 || d[0].ID != push || d[1].ID != push || !d[0].NeedsTrigger || d[1].NeedsTrigger {
		t.Fatalf("push pair: %s", body)
	}
	// The API-hidden factor: not listed, not available, not removable by
	// the v1 API; still the user's.
	if _, body, _ := h.call("GET", "/api/1/users/2/auth_factors", ""); strings.Contains(body, HiddenFactorName) {
		t.Fatalf("the hidden factor is available: %s", body)
	}
	if status, body, _ := h.call("DELETE", "/api/1/users/2/otp_devices/"+strconv.FormatInt(hidden, 10), ""); status != 400 || !strings.Contains(body, "Factor could not be found") {
		t.Fatalf("remove hidden: %d %s", status, body)
	}
	if n := len(h.sim.Devices(2)); n != 2 {
		t.Fatalf("user 2 has %d devices, want 2", n)
	}
}

func TestPostEffect502AndPagingLookups(t *testing.T) {
	// A page of one: an exact lookup of a value two people share pages.
	h := newHarness(t, Config{FirstUser: 1, LastUser: 20, UsersPageSize: 1,
		Directory: []DirectoryUser{{ID: 500, Email: "USER3@example.com", Username: "u500", ExternalID: "x500"}}})
	p := h.users("email=user3@example.com")
	if len(p.users) != 1 || p.cursor == "" {
		t.Fatalf("page 1: %+v", p)
	}
	if p2 := h.users("email=user3@example.com&cursor=" + url.QueryEscape(p.cursor)); len(p2.users) != 1 || p2.users[0].ID != 500 || p2.cursor != "" {
		t.Fatalf("page 2: %+v", p2)
	}

	dev, err := h.sim.EnrollDevice(4, "Google Authenticator", "GA", true)
	if err != nil {
		t.Fatal(err)
	}
	h.sim.SetFaults(Faults{PostEffect502Rate: 1})
	status, body, _ := h.call("DELETE", "/api/1/users/4/otp_devices/"+strconv.FormatInt(dev, 10), "")
	if status != 502 || !strings.Contains(body, "502 Bad Gateway") {
		t.Fatalf("remove: %d %s", status, body)
	}
	if n := len(h.sim.Devices(4)); n != 0 {
		t.Fatal("the 502'd remove did not take effect")
	}
	if e := h.sim.Effects(); len(e) != 1 || e[0].Kind != EffectRemove {
		t.Fatalf("effects %+v", e)
	}
	// Reads are answered as usual.
	if status, _, _ := h.call("GET", "/api/1/users/4/otp_devices", ""); status != 200 {
		t.Fatalf("read under PostEffect502Rate: %d", status)
	}
}
