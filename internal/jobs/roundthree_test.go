package jobs_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mfa-worker/mfa-worker/internal/job"
	"github.com/mfa-worker/mfa-worker/internal/simulator"
)

// A lookup that pages (a page of one user): the simulator matches external
// ids without regard to case, the worker exactly, so "HR-7" is found on
// whichever page it is and "hr-7" is never offboarded; emails two people
// share are found ambiguous only by reading the second page.
func TestLookupThatPages(t *testing.T) {
	dir := []simulator.DirectoryUser{
		{ID: 301, Email: "ann@example.com", Username: "ann", ExternalID: "hr-7", Status: 1, State: 1},
		{ID: 302, Email: "anna@example.com", Username: "anna", ExternalID: "HR-7", Status: 1, State: 1},
		{ID: 303, Email: "Sam@example.com", Username: "sam", ExternalID: "HR-8", Status: 1, State: 1},
		{ID: 304, Email: "sam@example.com", Username: "sam.k", ExternalID: "HR-9", Status: 1, State: 1},
	}
	e := newEnv(t, simulator.Config{Directory: dir, UsersPageSize: 1})
	for _, u := range []int64{301, 302, 303, 304} {
		if _, err := e.sim.EnrollDevice(u, "Google Authenticator", "GA", true); err != nil {
			t.Fatal(err)
		}
	}
	e.start(testConfig())
	e.publish("offboard", personBody(t, "paged-right", "offboard", map[string]string{"external_id": "HR-7", "email": "anna@example.com"}, nil), "")
	e.publish("offboard", personBody(t, "paged-twins", "offboard", map[string]string{"email": "sam@example.com"}, nil), "")
	rs := e.waitResults(2, 30*time.Second)
	if r := expectResult(t, rs, "paged-right", "offboard", job.Succeeded, ""); r.UserID != 302 {
		t.Errorf("paged-right resolved to %d, want 302", r.UserID)
	}
	expectResult(t, rs, "paged-twins", "offboard", job.Failed, job.CodeIdentityAmbiguous)
	if len(e.sim.Devices(302)) != 0 {
		t.Error("user 302 kept a factor")
	}
	for _, u := range []int64{301, 303, 304} {
		if len(e.sim.Devices(u)) != 1 {
			t.Errorf("user %d lost its factor", u)
		}
	}
	if n := e.sim.Stats().Requests["users"]; n < 4 {
		t.Errorf("%d Users API calls: the lookups did not page", n)
	}
}

// OneLogin's edge answers 502 for calls it applied: an activate so answered
// is not sent again (one SMS) and ends ambiguous_effect; a verify so
// answered is read back and succeeds, the OTP sent once.
func TestPostEffect502(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	sms, err := e.sim.EnrollDevice(401, "OneLogin SMS", "phone", false)
	if err != nil {
		t.Fatal(err)
	}
	ga, err := e.sim.EnrollDevice(402, "Google Authenticator", "ga", false)
	if err != nil {
		t.Fatal(err)
	}
	otp := e.sim.LastOTP(402, ga)
	e.provision()
	e.sim.SetFaults(simulator.Faults{PostEffect502Rate: 1})
	e.publish("activate", jobBody("act-502", "activate", 401, map[string]any{"device_id": sms}), "act-502")
	e.publish("verify", jobBody("ver-502", "verify", 402, map[string]any{"device_id": ga, "otp_token": otp}), "ver-502")
	e.start(testConfig())
	rs := e.waitResults(2, 30*time.Second)
	r := expectResult(t, rs, "act-502", "activate", job.Failed, job.CodeAmbiguousEffect)
	if r.Error.HTTPStatus != 502 || r.Error.Retryable {
		t.Errorf("activate's error %+v", r.Error)
	}
	r = expectResult(t, rs, "ver-502", "verify", job.Succeeded, "")
	if r.Data["active"] != true {
		t.Errorf("verify data %v", r.Data)
	}
	activates, verifies := 0, 0
	for _, ef := range e.sim.Effects() {
		switch {
		case ef.Kind == simulator.EffectActivate && ef.DeviceID == sms:
			activates++
		case ef.Kind == simulator.EffectVerify && ef.DeviceID == ga:
			verifies++
		}
	}
	sent := 0
	for _, a := range e.sim.VerifyAttempts() {
		if a.DeviceID == ga {
			sent++
		}
	}
	if activates != 1 || verifies != 1 || sent != 1 {
		t.Errorf("activates %d, verifies %d, OTP sent %d times; want 1 each", activates, verifies, sent)
	}
}

// An offboard lists the factors again after removing them: verified_at when
// none is listed. A factor the v1 API does not list (the simulator's
// API-hidden factor) is neither removed nor seen: the offboard is verified
// and the factor is still the user's, which is what the docs warn of.
func TestOffboardVerifiesItself(t *testing.T) {
	e := newEnv(t, simulator.Config{APIHiddenFactor: true})
	ga, err := e.sim.EnrollDevice(501, "Google Authenticator", "GA", true)
	if err != nil {
		t.Fatal(err)
	}
	protect, err := e.sim.EnrollDevice(501, "OneLogin Protect", "Pixel", true)
	if err != nil {
		t.Fatal(err)
	}
	key, err := e.sim.EnrollDevice(501, simulator.HiddenFactorName, "YubiKey", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.EnrollDevice(502, "Google Authenticator", "GA", true); err != nil {
		t.Fatal(err)
	}
	e.provision()
	start := time.Now().Add(-time.Second)
	e.publish("offboard", jobBody("off-verified", "offboard", 501, nil), "off-verified")
	e.publish("offboard", jobBody("off-nothing", "offboard", 503, nil), "off-nothing")
	e.start(testConfig())
	rs := e.waitResults(2, 30*time.Second)

	r := expectResult(t, rs, "off-verified", "offboard", job.Succeeded, "")
	at, err := time.Parse(time.RFC3339, stringOf(r.Data["verified_at"]))
	if err != nil || at.Before(start.Truncate(time.Second)) {
		t.Errorf("verified_at %v (%v)", r.Data["verified_at"], err)
	}
	removed, _ := r.Data["removed_device_ids"].([]any)
	if len(removed) != 2 || !containsID(removed, ga) || !containsID(removed, protect) {
		t.Errorf("removed %v; want the authenticator and the push device, each once", removed)
	}
	left := e.sim.Devices(501)
	if len(left) != 1 || left[0].ID != key {
		t.Errorf("user 501 has %+v; want only the API-hidden factor", left)
	}
	validResult(t, rs["off-verified"].Data)
	r = expectResult(t, rs, "off-nothing", "offboard", job.Noop, "")
	validResult(t, rs["off-nothing"].Data)
	if _, err := time.Parse(time.RFC3339, stringOf(r.Data["verified_at"])); err != nil {
		t.Errorf("noop offboard: verified_at %v", r.Data["verified_at"])
	}

	// A removal answered but not made: the factor is still listed, and the
	// offboard fails factors_remain naming it.
	e.sim.SetFaults(simulator.Faults{RemovesWithoutEffect: true})
	e.publish("offboard", jobBody("off-remains", "offboard", 502, nil), "off-remains")
	rs = e.waitResults(3, 30*time.Second)
	r = expectResult(t, rs, "off-remains", "offboard", job.Failed, job.CodeFactorsRemain)
	validResult(t, rs["off-remains"].Data)
	dev := e.sim.Devices(502)
	if len(dev) != 1 {
		t.Fatalf("user 502 has %d devices", len(dev))
	}
	remaining, _ := r.Data["remaining_device_ids"].([]any)
	if len(remaining) != 1 || !containsID(remaining, dev[0].ID) || r.Data["verified_at"] != nil {
		t.Errorf("data %v", r.Data)
	}
	if !strings.Contains(r.Error.Message, stringOfID(dev[0].ID)) || r.Error.Retryable {
		t.Errorf("error %+v", r.Error)
	}
}

func stringOf(v any) string {
	s, _ := v.(string)
	return s
}

func stringOfID(id int64) string { return strconv.FormatInt(id, 10) }

// containsID reports whether ids (JSON numbers) holds id.
func containsID(ids []any, id int64) bool {
	for _, v := range ids {
		if f, ok := v.(float64); ok && int64(f) == id {
			return true
		}
	}
	return false
}
