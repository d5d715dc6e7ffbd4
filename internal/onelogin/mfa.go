package onelogin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

func userPath(userID int64, rest string) string {
	return fmt.Sprintf("api/1/users/%d%s", userID, rest)
}

func checkUser(userID int64) error {
	if userID <= 0 {
		return &usageError{msg: fmt.Sprintf("user id %d is not positive", userID)}
	}
	return nil
}

func checkDevice(deviceID int64) error {
	if deviceID <= 0 {
		return &usageError{msg: fmt.Sprintf("device id %d is not positive", deviceID)}
	}
	return nil
}

// call builds, sends and decodes one request.
func (c *Client) call(ctx context.Context, endpoint, method, path string, body any) (*Response, error) {
	req, err := c.NewRequest(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	return c.Do(req, endpoint)
}

func decodeFailed(endpoint string, resp *Response, err error) error {
	de := &DecodeError{Endpoint: endpoint, Err: err}
	if resp != nil {
		de.RequestID = resp.RequestID
	}
	return de
}

// AvailableFactors lists the factors the user can still enroll (Get
// Available Factors). Factors the user already has are not listed.
func (c *Client) AvailableFactors(ctx context.Context, userID int64) ([]Factor, *Response, error) {
	if err := checkUser(userID); err != nil {
		return nil, nil, err
	}
	resp, err := c.call(ctx, EndpointAvailableFactors, http.MethodGet, userPath(userID, "/auth_factors"), nil)
	if err != nil {
		return nil, resp, err
	}
	factors, err := parseFactors(resp.body)
	if err != nil {
		return nil, resp, decodeFailed(EndpointAvailableFactors, resp, err)
	}
	return factors, resp, nil
}

// EnrolledFactors lists the user's enrolled devices (Get Enrolled Factors),
// each device once: OneLogin can list a device twice (a push-and-pull factor
// "should appear twice", per its spec), and acting on both listings would
// remove or count one device twice. A device listed active in either listing
// is active.
//
// It is also how a verify whose reply was lost is read back: the first
// successful verify makes the device active, so the device's Active flag
// says whether the lost verify took effect (a temporary MFA token, device 0,
// cannot be read back this way).
func (c *Client) EnrolledFactors(ctx context.Context, userID int64) ([]Device, *Response, error) {
	if err := checkUser(userID); err != nil {
		return nil, nil, err
	}
	resp, err := c.call(ctx, EndpointEnrolledFactors, http.MethodGet, userPath(userID, "/otp_devices"), nil)
	if err != nil {
		return nil, resp, err
	}
	devices, err := parseDevices(resp.body)
	if err != nil {
		return nil, resp, decodeFailed(EndpointEnrolledFactors, resp, err)
	}
	return dedupeDevices(devices), resp, nil
}

func dedupeDevices(devices []Device) []Device {
	out := devices[:0:0]
	at := make(map[ID]int, len(devices))
	for _, d := range devices {
		if i, ok := at[d.ID]; ok {
			out[i].Active = out[i].Active || d.Active
			out[i].NeedsTrigger = out[i].NeedsTrigger || d.NeedsTrigger
			continue
		}
		at[d.ID] = len(out)
		out = append(out, d)
	}
	return out
}

// EnrollFactor enrolls a device for the user (Enroll a Factor).
func (c *Client) EnrollFactor(ctx context.Context, userID int64, r EnrollRequest) (*Device, *Response, error) {
	if err := checkUser(userID); err != nil {
		return nil, nil, err
	}
	if r.FactorID <= 0 {
		return nil, nil, &usageError{msg: "enroll: factor id is required"}
	}
	resp, err := c.call(ctx, EndpointEnroll, http.MethodPost, userPath(userID, "/otp_devices"), r)
	if err != nil {
		return nil, resp, err
	}
	d, err := parseDevice(resp.body)
	if err != nil {
		return nil, resp, decodeFailed(EndpointEnroll, resp, err)
	}
	return d, resp, nil
}

// ActivateFactor triggers an OTP for the device (Activate a Factor) and
// returns the state token that VerifyFactor needs. r may be nil.
func (c *Client) ActivateFactor(ctx context.Context, userID, deviceID int64, r *ActivateRequest) (*Activation, *Response, error) {
	if err := checkUser(userID); err != nil {
		return nil, nil, err
	}
	if err := checkDevice(deviceID); err != nil {
		return nil, nil, err
	}
	var body any
	if r != nil {
		body = r
	}
	resp, err := c.call(ctx, EndpointActivate, http.MethodPost, userPath(userID, fmt.Sprintf("/otp_devices/%d/trigger", deviceID)), body)
	if err != nil {
		return nil, resp, err
	}
	a, err := parseActivation(resp.body)
	if err != nil {
		return nil, resp, decodeFailed(EndpointActivate, resp, err)
	}
	if a.DeviceID == 0 {
		a.DeviceID = ID(deviceID)
	}
	return a, resp, nil
}

// VerifyFactor checks an OTP (Verify a Factor). deviceID 0 verifies a
// temporary MFA token given as the OTP.
//
// Only an answer with status type "success" is success. A 200 of type
// "pending" (a push not yet approved, or no OTP sent) is a *VerifyError with
// CodeVerificationPending (errors.Is ErrVerificationPending, Transient).
// A 400 while a state token was sent (and neither the user nor the device
// is missing) is CodeStateTokenExpired, permanent.
//
// The OTP is sent at most once with a given access token, and a 401 is never
// judged by its wording. After a 401, a read call (Get Enrolled Factors)
// with the same token tells the two causes apart: if the read succeeds the
// token is good and the OTP was refused (CodeVerificationFailed, status 401,
// permanent); if the read is refused too the token was stale, so a new
// token is fetched and the verify is sent once more with it. A caller that
// retries a verify should do so in a later delivery, since each call may
// send the OTP once per token.
func (c *Client) VerifyFactor(ctx context.Context, userID, deviceID int64, r VerifyRequest) (*Response, error) {
	if err := checkUser(userID); err != nil {
		return nil, err
	}
	if deviceID < 0 {
		return nil, &usageError{msg: fmt.Sprintf("device id %d is negative", deviceID)}
	}
	path := userPath(userID, fmt.Sprintf("/otp_devices/%d/verify", deviceID))
	sendCtx := ctx
	for resent := false; ; resent = true {
		req, err := c.NewRequest(sendCtx, http.MethodPost, path, r)
		if err != nil {
			return nil, err
		}
		resp, err := c.do(req, EndpointVerify, false)
		if err == nil {
			return resp, verifyOutcome(resp)
		}
		var er *ErrorResponse
		if !errors.As(err, &er) {
			return resp, err
		}
		switch {
		case er.StatusCode == http.StatusBadRequest && r.StateToken != "" && !IsUserNotFound(err) && !IsFactorNotFound(err):
			return resp, &VerifyError{Code: CodeStateTokenExpired, StatusCode: er.StatusCode, Message: er.Message(), RequestID: er.RequestID, Err: err}
		case er.StatusCode != http.StatusUnauthorized:
			return resp, err
		}
		used := sentToken(resp)
		probe := c.checkToken(ctx, userID, used)
		switch {
		case probe == nil:
			return resp, &VerifyError{Code: CodeVerificationFailed, StatusCode: er.StatusCode, Message: er.Message(), RequestID: er.RequestID, Err: err}
		case StatusCode(probe) != http.StatusUnauthorized || resent || used == "":
			// The read failed otherwise (nothing known), or a fresh token
			// is refused too (scope or credentials): a permanent 401.
			return resp, err
		}
		c.tokens.invalidate(used)
		fresh, terr := c.tokens.token(ctx)
		if terr != nil {
			return resp, terr
		}
		if fresh == used {
			return resp, err // OneLogin hands out the refused token again
		}
		sendCtx = withToken(ctx, fresh)
	}
}

// checkToken makes a read call with tok to learn whether OneLogin accepts
// it: nil when it does (any answer but a 401 means the token was accepted).
func (c *Client) checkToken(ctx context.Context, userID int64, tok string) error {
	if tok != "" {
		ctx = withToken(ctx, tok)
	}
	req, err := c.NewRequest(ctx, http.MethodGet, userPath(userID, "/otp_devices"), nil)
	if err != nil {
		return err
	}
	_, err = c.do(req, EndpointEnrolledFactors, false)
	var er *ErrorResponse
	if err == nil || (errors.As(err, &er) && er.StatusCode != http.StatusUnauthorized) {
		return nil
	}
	return err
}

// verifyOutcome reads a 2xx verify answer: only status type "success" is
// success.
func verifyOutcome(resp *Response) error {
	st := decodeStatus(resp.body)
	switch {
	case st == nil:
		return decodeFailed(EndpointVerify, resp, errors.New("answer has no status object"))
	case strings.EqualFold(strings.TrimSpace(st.Type), "success"):
		return nil
	case strings.Contains(strings.ToLower(st.Type), "pending"):
		return &VerifyError{Code: CodeVerificationPending, StatusCode: resp.StatusCode, Message: sanitize(st.Message.String()), RequestID: resp.RequestID}
	default:
		return decodeFailed(EndpointVerify, resp, fmt.Errorf("status type %q is not success", sanitize(st.Type)))
	}
}

// RemoveFactor deletes an enrolled device (Remove an Enrolled Factor). A
// device that is already gone is an error for which IsFactorNotFound holds.
func (c *Client) RemoveFactor(ctx context.Context, userID, deviceID int64) (*Response, error) {
	if err := checkUser(userID); err != nil {
		return nil, err
	}
	if err := checkDevice(deviceID); err != nil {
		return nil, err
	}
	return c.call(ctx, EndpointRemove, http.MethodDelete, userPath(userID, fmt.Sprintf("/otp_devices/%d", deviceID)), nil)
}

// GenerateMFAToken creates a temporary MFA token (Generate Temp MFA Token).
// OneLogin answers 201 (the official Ruby SDK) or 200 (other sources): both
// are success. The reply has no envelope; an enveloped one is accepted too.
// A call whose reply was lost may be retried: nobody saw the lost token, and
// it expires.
func (c *Client) GenerateMFAToken(ctx context.Context, userID int64, r MFATokenRequest) (*MFAToken, *Response, error) {
	if err := checkUser(userID); err != nil {
		return nil, nil, err
	}
	resp, err := c.call(ctx, EndpointMFAToken, http.MethodPost, userPath(userID, "/mfa_token"), r)
	if err != nil {
		return nil, resp, err
	}
	t, err := parseMFAToken(resp.body)
	if err != nil {
		return nil, resp, decodeFailed(EndpointMFAToken, resp, err)
	}
	return t, resp, nil
}

// RateLimitStatus asks for the account's budget (GET /auth/rate_limit).
func (c *Client) RateLimitStatus(ctx context.Context) (RateLimit, *Response, error) {
	sent := c.pacer.now()
	resp, err := c.call(ctx, EndpointRateLimit, http.MethodGet, "auth/rate_limit", nil)
	if err != nil {
		return RateLimit{}, resp, err
	}
	rl, err := parseRateLimit(resp.body, sent)
	if err != nil {
		return RateLimit{}, resp, decodeFailed(EndpointRateLimit, resp, err)
	}
	return rl, resp, nil
}
