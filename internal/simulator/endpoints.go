package simulator

import (
	"net/http"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
)

func deviceJSON(d *Device, withState bool) map[string]any {
	m := map[string]any{
		"id":                d.ID,
		"active":            d.Active,
		"default":           d.Default,
		"auth_factor_name":  d.AuthFactorName,
		"type_display_name": d.AuthFactorName,
		"user_display_name": d.UserDisplayName,
		"needs_trigger":     d.NeedsTrigger,
	}
	if d.PhoneNumber != "" {
		m["phone_number"] = d.PhoneNumber
	}
	if withState && d.stateToken != "" {
		m["state_token"] = d.stateToken
	}
	return m
}

func (s *Server) availableFactors(userID int64) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userLocked(userID)
	if u == nil {
		return userNotFound(userID)
	}
	have := map[int64]bool{}
	for _, d := range u.devices {
		have[d.FactorID] = true
	}
	list := []map[string]any{}
	for _, f := range s.cfg.Factors {
		if !have[f.ID] && !f.APIHidden {
			list = append(list, map[string]any{"factor_id": f.ID, "name": f.Name})
		}
	}
	return okReply("Success", map[string]any{"auth_factors": list})
}

func (s *Server) enrolledFactors(userID int64) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userLocked(userID)
	if u == nil {
		return userNotFound(userID)
	}
	list := []map[string]any{}
	for _, d := range sortedDevices(u) {
		f, _ := s.factorByID(d.FactorID)
		if f.APIHidden {
			continue // enrolled, but not a factor the v1 API returns
		}
		if f.Push && !s.cfg.ListDevicesOnce {
			// A push-and-pull factor "should appear twice" (OneLogin's
			// spec): once for the push, which needs a trigger, and once
			// for its codes, which do not.
			push := deviceJSON(d, false)
			push["needs_trigger"] = true
			list = append(list, push)
		}
		list = append(list, deviceJSON(d, false))
	}
	return okReply("Success", map[string]any{"otp_devices": list})
}

func sortedDevices(u *user) []*Device {
	out := make([]*Device, 0, len(u.devices))
	for _, d := range u.devices {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *Server) enroll(r *http.Request, userID int64) reply {
	var req struct {
		FactorID    *int64 `json:"factor_id"`
		DisplayName string `json:"display_name"`
		Number      string `json:"number"`
		Verified    bool   `json:"verified"`
	}
	if err := decodeBody(r, &req); err != nil {
		return badRequest("Invalid JSON")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userLocked(userID)
	if u == nil {
		return userNotFound(userID)
	}
	if req.FactorID == nil {
		return badRequest("factor_id is required")
	}
	f, ok := s.factorByID(*req.FactorID)
	if !ok {
		return badRequest("Invalid factor_id")
	}
	if !f.Enrollable {
		return badRequest("Factor cannot be enrolled through the API")
	}
	if req.DisplayName == "" {
		return badRequest("display_name is required")
	}
	if !reE164.MatchString(req.Number) {
		return badRequest("Invalid phone number")
	}
	for _, d := range u.devices {
		if d.FactorID == f.ID {
			return badRequest("Factor is already enrolled")
		}
	}
	d := s.addDeviceLocked(u, f, req.DisplayName, req.Number, req.Verified)
	if !req.Verified {
		// OneLogin sends the first OTP at enrollment and returns the state
		// token that Verify needs.
		s.sentOTPLocked(userID, d, false, OTPByEnroll)
		d.stateToken = randomHex(20)
		d.stateUntil = s.now().Add(s.cfg.StateTokenTTL)
	}
	s.recordLocked(EffectEnroll, userID, d.ID, r)
	return okReply("Success", []map[string]any{deviceJSON(d, true)})
}

func (s *Server) activate(r *http.Request, userID, deviceID int64) reply {
	var req struct {
		ExpiresIn  *int   `json:"state_token_expires_in"`
		NumericOTP *bool  `json:"numeric_sms_otp"`
		SMSMessage string `json:"sms_message"`
	}
	if err := decodeBody(r, &req); err != nil {
		return badRequest("Invalid JSON")
	}
	ttl := s.cfg.StateTokenTTL
	if req.ExpiresIn != nil {
		if *req.ExpiresIn < 1 || *req.ExpiresIn > 900 {
			return badRequest("state_token_expires_in must be between 1 and 900")
		}
		ttl = time.Duration(*req.ExpiresIn) * time.Second
	}
	if utf8.RuneCountInString(req.SMSMessage) > 160 {
		return badRequest("sms_message must be at most 160 characters")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userLocked(userID)
	if u == nil {
		return userNotFound(userID)
	}
	d := u.devices[deviceID]
	if d == nil {
		return factorNotFound()
	}
	s.sentOTPLocked(userID, d, req.NumericOTP != nil && *req.NumericOTP, OTPByActivate)
	d.stateToken = randomHex(20)
	d.stateUntil = s.now().Add(ttl)
	s.recordLocked(EffectActivate, userID, d.ID, r)
	msg := "SMS token sent to your mobile device. Authentication pending."
	if d.AuthFactorName == "OneLogin Voice" {
		msg = "Call placed to your phone. Authentication pending."
	}
	return okReply(msg, []map[string]any{{
		"device_id":              d.ID,
		"state_token":            d.stateToken,
		"id":                     userID,
		"auth_factor_name":       d.AuthFactorName,
		"type_display_name":      d.AuthFactorName,
		"user_display_name":      d.UserDisplayName,
		"state_token_expires_at": d.stateUntil.UTC().Format("2006-01-02T15:04:05.000Z"),
	}})
}

func (s *Server) verify(r *http.Request, userID, deviceID int64) reply {
	var req struct {
		OTPToken   string `json:"otp_token"`
		StateToken string `json:"state_token"`
	}
	if err := decodeBody(r, &req); err != nil {
		return badRequest("Invalid JSON")
	}
	failed := errorReply(http.StatusUnauthorized, "Unauthorized", s.cfg.WrongOTPMessage)
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userLocked(userID)
	if u == nil {
		return badRequest("User does not exist")
	}
	now := s.now()
	s.stats.Verifies++
	s.attempts = append(s.attempts, Effect{Seq: int64(len(s.attempts) + 1), Kind: EffectVerifyAttempt, UserID: userID, DeviceID: deviceID, RequestID: r.Header.Get("X-Request-Id"), At: now})
	if deviceID == 0 {
		t := s.mfaTokens[req.OTPToken]
		if req.OTPToken == "" || t == nil || t.userID != userID || !now.Before(t.expiresAt) || t.used {
			return failed
		}
		if !t.reusable {
			t.used = true
		}
		s.recordLocked(EffectVerify, userID, 0, r)
		return okReply("Success", nil)
	}
	d := u.devices[deviceID]
	if d == nil {
		return factorNotFound()
	}
	if d.stateToken != "" && req.StateToken != "" && req.StateToken == d.stateToken && !now.Before(d.stateUntil) {
		// Documented as a 400 ("an example of an expired token message").
		return errorReply(s.cfg.StateTokenExpiredStatus, "bad request", "The state token has expired")
	}
	if req.OTPToken == "" {
		f, _ := s.factorByID(d.FactorID)
		if f.Push && (s.approved[d.ID] || s.cfg.PushApprovedAtOnce) {
			delete(s.approved, d.ID)
			d.Active = true
			s.recordLocked(EffectVerify, userID, d.ID, r)
			return okReply("Success", nil)
		}
		// A push waiting for the phone, or an SMS not yet typed in: 200
		// with type "pending", which is not verified.
		return reply{status: http.StatusOK, body: map[string]any{"status": statusObject(http.StatusOK, "pending", "Authentication pending")}}
	}
	if d.stateToken != "" {
		if req.StateToken != d.stateToken {
			return failed
		}
	} else if d.NeedsTrigger {
		return badRequest("state_token is required; activate the factor first")
	}
	if d.otp == "" || req.OTPToken != d.otp {
		return failed
	}
	d.Active = true
	d.stateToken, d.stateUntil = "", time.Time{}
	if d.NeedsTrigger {
		d.otp = "" // a sent OTP is good once
	}
	s.recordLocked(EffectVerify, userID, d.ID, r)
	return okReply("Success", nil)
}

func (s *Server) remove(r *http.Request, userID, deviceID int64) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userLocked(userID)
	if u == nil {
		return userNotFound(userID)
	}
	if d := u.devices[deviceID]; d == nil || s.hiddenLocked(d) {
		return factorNotFound()
	}
	if s.faults.RemovesWithoutEffect {
		return reply{status: http.StatusOK, body: map[string]any{}}
	}
	delete(u.devices, deviceID)
	s.recordLocked(EffectRemove, userID, deviceID, r)
	return reply{status: http.StatusOK, body: map[string]any{}}
}

func (s *Server) mfaToken(r *http.Request, userID int64) reply {
	var req struct {
		ExpiresIn *int  `json:"expires_in"`
		Reusable  *bool `json:"reusable"`
	}
	if err := decodeBody(r, &req); err != nil {
		return badRequest("Invalid JSON")
	}
	expiresIn := 259200
	if req.ExpiresIn != nil {
		expiresIn = *req.ExpiresIn
	}
	if expiresIn < 120 || expiresIn > 259200 {
		return badRequest("expires_in must be between 120 and 259200")
	}
	reusable := req.Reusable != nil && *req.Reusable
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.userLocked(userID) == nil {
		return userNotFound(userID)
	}
	var tok string
	for tok == "" || s.mfaTokens[tok] != nil {
		tok = strconv.Itoa(10_000_000 + s.rng.IntN(90_000_000))
	}
	exp := s.now().Add(time.Duration(expiresIn) * time.Second).UTC().Truncate(time.Second)
	s.mfaTokens[tok] = &mfaToken{userID: userID, expiresAt: exp, reusable: reusable}
	s.recordLocked(EffectMFAToken, userID, 0, r)
	key := "reusable"
	if s.cfg.MisspellReusable {
		key = "resuable"
	}
	return reply{status: s.cfg.MFATokenStatus, body: map[string]any{
		"mfa_token":  tok,
		key:          reusable,
		"expires_at": exp.Format(time.RFC3339),
	}}
}

// MFATokenValid reports whether token is a live temporary MFA token of the
// user, for tests that check what a recipient received.
func (s *Server) MFATokenValid(userID int64, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.mfaTokens[token]
	return t != nil && t.userID == userID && s.now().Before(t.expiresAt) && !t.used
}

// hiddenLocked reports whether d is of a factor the v1 API does not show.
func (s *Server) hiddenLocked(d *Device) bool {
	f, _ := s.factorByID(d.FactorID)
	return f.APIHidden
}
