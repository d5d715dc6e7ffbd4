package job

import (
	"bytes"
	"encoding/json"
)

// Data is the typed data of a result, one struct per type; the JSON names
// are those of schemas/result.v1.json.
type Data interface{ resultData() }

// EnrollData is an enroll job's result data.
type EnrollData struct {
	DeviceID       int64  `json:"device_id"`
	FactorID       int64  `json:"factor_id"`
	AuthFactorName string `json:"auth_factor_name"`
	Active         bool   `json:"active"`
	NeedsTrigger   bool   `json:"needs_trigger"`
	StateToken     string `json:"state_token,omitempty"`
}

// ActivateData is an activate job's result data.
type ActivateData struct {
	DeviceID   int64  `json:"device_id"`
	StateToken string `json:"state_token"`
	// StateTokenExpiresAt is OneLogin's state_token_expires_at (RFC 3339),
	// empty when OneLogin did not say.
	StateTokenExpiresAt string `json:"state_token_expires_at,omitempty"`
}

// VerifyData is a verify job's result data.
type VerifyData struct {
	DeviceID int64 `json:"device_id"`
	Active   bool  `json:"active"`
}

// RemoveData is a remove job's result data.
type RemoveData struct {
	DeviceID int64 `json:"device_id"`
}

// OffboardData is an offboard job's result data: the factors removed, also
// when the job failed part way; when the enrolled factors were listed again
// after removing and none was left, when that was (VerifiedAt, RFC 3339);
// when some were left, their ids (RemainingDeviceIDs, with the code
// factors_remain). The v1 API lists only factors "that are enrolled and can
// be verified via API": a verified offboard cannot promise that no other
// kind of factor remains.
type OffboardData struct {
	RemovedDeviceIDs []int64 `json:"removed_device_ids"`
	// RemovedFactors names the kind of each removed factor (OneLogin's
	// auth_factor_name, never a phone number), in the order of
	// RemovedDeviceIDs.
	RemovedFactors     []RemovedFactor `json:"removed_factors,omitempty"`
	VerifiedAt         string          `json:"verified_at,omitempty"`
	RemainingDeviceIDs []int64         `json:"remaining_device_ids,omitempty"`
}

// RemovedFactor is one factor an offboard removed: its device id and its
// kind (OneLogin's auth_factor_name, e.g. "Google Authenticator").
type RemovedFactor struct {
	DeviceID       int64  `json:"device_id"`
	AuthFactorName string `json:"auth_factor_name,omitempty"`
}

// GenerateTokenData is a generate_token job's result data. The token is
// sealed to the job's recipient_xkey; MFAToken is set only when plain
// tokens are allowed and no recipient was given.
type GenerateTokenData struct {
	ExpiresAt      string `json:"expires_at"`
	Reusable       bool   `json:"reusable"`
	SealedMFAToken string `json:"sealed_mfa_token,omitempty"`
	SenderXKey     string `json:"sender_xkey,omitempty"`
	MFAToken       string `json:"mfa_token,omitempty"`
}

// CancelData is a cancel job's result data: the target and how it ended
// (cancelled, running, unknown, or the outcome it had already finished with).
type CancelData struct {
	JobID         string `json:"job_id"`
	TargetOutcome string `json:"target_outcome"`
	// CancelScope is the cancel's scope (mfa.jobs.cancel.<scope>); empty
	// for the operators' bare mfa.jobs.cancel.
	CancelScope string `json:"cancel_scope,omitempty"`
}

// CancelledData is the data of a job that a cancel job ended: the cancel's
// id and its scope (empty: the operators' bare mfa.jobs.cancel).
type CancelledData struct {
	CancelledBy string `json:"cancelled_by"`
	CancelScope string `json:"cancel_scope,omitempty"`
}

// Target outcomes of a cancel beyond the job outcomes.
const (
	TargetRunning = "running"
	TargetUnknown = "unknown"
)

func (CancelData) resultData()        {}
func (CancelledData) resultData()     {}
func (EnrollData) resultData()        {}
func (ActivateData) resultData()      {}
func (VerifyData) resultData()        {}
func (RemoveData) resultData()        {}
func (OffboardData) resultData()      {}
func (GenerateTokenData) resultData() {}

// dataMap turns typed data into a result's data object.
func dataMap(d Data) map[string]any {
	if d == nil {
		return nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		panic("job: encode result data: " + err.Error()) // plain values only
	}
	// json.Number keeps 64-bit ids exact.
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		panic("job: decode result data: " + err.Error())
	}
	return m
}
