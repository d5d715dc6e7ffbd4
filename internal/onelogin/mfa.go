package onelogin

import (
	"context"
	"fmt"
	"net/http"
	"time"
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

func decodeFailed(endpoint string, err error) error {
	return &DecodeError{Endpoint: endpoint, Err: err}
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
		return nil, resp, decodeFailed(EndpointAvailableFactors, err)
	}
	return factors, resp, nil
}

// EnrolledFactors lists the user's enrolled devices (Get Enrolled Factors).
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
		return nil, resp, decodeFailed(EndpointEnrolledFactors, err)
	}
	return devices, resp, nil
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
		return nil, resp, decodeFailed(EndpointEnroll, err)
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
		return nil, resp, decodeFailed(EndpointActivate, err)
	}
	if a.DeviceID == 0 {
		a.DeviceID = ID(deviceID)
	}
	return a, resp, nil
}

// VerifyFactor checks an OTP (Verify a Factor). deviceID 0 verifies a
// temporary MFA token given as the OTP.
func (c *Client) VerifyFactor(ctx context.Context, userID, deviceID int64, r VerifyRequest) (*Response, error) {
	if err := checkUser(userID); err != nil {
		return nil, err
	}
	if deviceID < 0 {
		return nil, &usageError{msg: fmt.Sprintf("device id %d is negative", deviceID)}
	}
	return c.call(ctx, EndpointVerify, http.MethodPost, userPath(userID, fmt.Sprintf("/otp_devices/%d/verify", deviceID)), r)
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
// The reply has no envelope; an enveloped one is accepted too.
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
		return nil, resp, decodeFailed(EndpointMFAToken, err)
	}
	return t, resp, nil
}

// RateLimitStatus asks for the account's budget (GET /auth/rate_limit).
func (c *Client) RateLimitStatus(ctx context.Context) (RateLimit, *Response, error) {
	sent := time.Now()
	resp, err := c.call(ctx, EndpointRateLimit, http.MethodGet, "auth/rate_limit", nil)
	if err != nil {
		return RateLimit{}, resp, err
	}
	rl, err := parseRateLimit(resp.body, sent)
	if err != nil {
		return RateLimit{}, resp, decodeFailed(EndpointRateLimit, err)
	}
	return rl, resp, nil
}
